"""A real NUT server for the tests: Debian's upsd with the dummy-ups driver, in the
foreground, on a free loopback port, with its own temporary config and state directories
(never the system service).  The UPS's state is changed by rewriting the driver's ``.dev``
file, which dummy-ups re-reads when it changes (checked every ``pollinterval``, 1 s)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from proxy.power.nut import read_ups
from proxy.power.nutproto import Power, parse_target
from proxy.sim import wait_until

NUT_LIB = Path("/lib/nut")
UPSD = NUT_LIB / "upsd"  # /usr/sbin/upsd is a wrapper that refuses to run without /etc/nut MODE
DRIVER = NUT_LIB / "dummy-ups"
UPSC = "/usr/bin/upsc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealUpsd:
    """``upsd`` + one ``dummy-ups`` driver per UPS name, started and stopped by the test."""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("ups1",)) -> None:
        for binary, package in ((UPSD, "nut-server"), (DRIVER, "nut-server"), (Path(UPSC), "nut-client")):
            if not binary.exists():
                raise RuntimeError(f"{binary} is missing: install the Debian package {package} "
                                   "(make test and .ci/run install it)")
        self.dir = directory
        self.names = names
        self.port = free_port()
        self.state = directory / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.drivers: list[subprocess.Popen[bytes]] = []
        self.upsd: subprocess.Popen[bytes] | None = None
        self._mtimes: dict[str, int] = {}
        self.env = {**os.environ, "NUT_CONFPATH": str(directory), "NUT_STATEPATH": str(self.state)}
        (directory / "ups.conf").write_text("".join(
            f'[{n}]\n  driver = dummy-ups\n  port = {directory / n}.dev\n  desc = "test"\n'
            "  pollinterval = 1\n" for n in names))
        (directory / "upsd.users").write_text("[monuser]\n  password = secret\n  upsmon secondary\n")
        (directory / "upsd.users").chmod(0o600)
        (directory / "nut.conf").write_text("MODE=standalone\n")
        self.write_listen()
        for n in names:
            self.set(n, "OL")

    def write_listen(self) -> None:
        (self.dir / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\nMAXAGE 5\n")

    def target(self, name: str = "ups1") -> str:
        return f"{name}@127.0.0.1:{self.port}"

    def set(self, name: str, status: str, charge: float = 100, runtime: float = 1800) -> None:
        """Rewrite the driver's file in one step (a reader never sees half of it).  dummy-ups
        re-reads it when its modification time, in whole seconds, changes: two writes within
        one second would leave the second unseen, so each write gets a later second."""
        dev = self.dir / f"{name}.dev"
        tmp = dev.with_suffix(".tmp")
        tmp.write_text(f"ups.status: {status}\nbattery.charge: {charge:g}\nbattery.runtime: {runtime:g}\n"
                       "device.mfr: test\n")
        stamp = max(int(time.time()), self._mtimes.get(name, 0) + 1)
        self._mtimes[name] = stamp
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, dev)

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{Path(args[0]).name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(list(args), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 20.0) -> None:
        """Drivers, then upsd, then every UPS served as on mains (dummy-ups shows WAIT for its
        first ~3 s, so one server is shared by a module's tests, each with its own UPS)."""
        for n in self.names:
            self.drivers.append(self._spawn(str(DRIVER), "-a", n, "-F", "-u", self.user))
        deadline = time.monotonic() + timeout
        # upsd retries a driver it could not reach only every few seconds: start it after
        # every driver's socket exists
        self._poll(lambda: all((self.state / f"dummy-ups-{n}").exists() for n in self.names), deadline,
                   "the dummy-ups sockets")
        self.upsd = self._spawn(str(UPSD), "-F", "-u", self.user)
        self._poll(self._listening, deadline, "upsd listening")
        for n in self.names:
            self._poll(lambda n=n: self.upsc(n, "ups.status") == "OL", deadline, f"upsd serving {n} as OL")

    def upsc(self, name: str, variable: str) -> str:
        """Debian's own client (nut-client) reading one variable."""
        out = subprocess.run([UPSC, self.target(name), variable], capture_output=True, text=True, timeout=5,
                             env=self.env)
        return out.stdout.strip()

    def _poll(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; see the logs in {self.dir}")
            time.sleep(0.05)

    async def start_upsd(self) -> None:
        self.upsd = self._spawn(str(UPSD), "-F", "-u", self.user)
        await wait_until(self._listening, 10, what="upsd listening")

    def _listening(self) -> bool:
        if self.upsd is not None and self.upsd.poll() is not None:
            log = (self.dir / "upsd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"upsd exited with {self.upsd.returncode}: {log}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    async def wait_power(self, name: str, power: Power, timeout: float = 5.0) -> None:
        """Until upsd itself serves that state (the driver re-read its file)."""
        target = parse_target(self.target(name))
        reading: list[Power] = []

        async def check() -> bool:
            reading.append((await read_ups(target, timeout_s=1.0)).power)
            return reading[-1] is power

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await check():
            if loop.time() > deadline:
                raise TimeoutError(f"upsd never served {name} as {power.value} (last {reading[-1:]})")
            await asyncio.sleep(0.05)

    def kill_upsd(self) -> None:
        if self.upsd is not None:
            self.upsd.kill()
            self.upsd.wait(5)
            self.upsd = None

    def stop(self) -> None:
        self.kill_upsd()
        for proc in self.drivers:
            with contextlib.suppress(Exception):
                proc.terminate()
                proc.wait(5)
        self.drivers.clear()
