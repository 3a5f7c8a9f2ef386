"""A real 3-member etcd cluster on loopback (Debian's ``etcd-server``), for the farm tests.

Free ports, a temporary data directory per member, fast elections (heartbeat 50 ms,
election timeout 500 ms), every member killed at the end.  Tests kill and restart members
(``kill(i)``, ``restart(i)``); ``ensure_running()`` brings every member back between tests.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str:
    exe = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    assert exe, "etcd is not installed: make test / .ci/run install the Debian package 'etcd-server'"
    return exe


class EtcdCluster:
    def __init__(self, base: Path, members: int = 3) -> None:
        self.base = base
        self.exe = etcd_binary()
        self.names = [f"m{i}" for i in range(members)]
        self.client = [free_port() for _ in self.names]
        self.peer = [free_port() for _ in self.names]
        self.token = f"stratum-proxy-test-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen | None] = [None] * members

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.client]

    def _args(self, i: int) -> list[str]:
        cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer))
        return [self.exe, "--name", self.names[i], "--data-dir", str(self.base / self.names[i]),
                "--listen-client-urls", self.endpoints[i], "--advertise-client-urls", self.endpoints[i],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-cluster", cluster, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"]

    def _spawn(self, i: int) -> None:
        log = open(self.base / f"{self.names[i]}.log", "ab")  # noqa: SIM115 - the process owns it
        self.procs[i] = subprocess.Popen(self._args(i), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def start(self) -> None:
        for i in range(len(self.names)):
            self._spawn(i)
        self.wait_healthy()

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoints[i]}/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for i, proc in enumerate(self.procs):
                log = (self.base / f"{self.names[i]}.log")
                assert proc is not None and proc.poll() is None, (
                    f"etcd {self.names[i]} exited: " + log.read_text()[-2000:])
            if all(self.healthy(i) for i in range(len(self.names))):
                return
            time.sleep(0.1)
        raise AssertionError("etcd cluster not healthy within "
                             f"{START_TIMEOUT_S}s: see {self.base}/*.log")

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[i] = None

    def restart(self, i: int) -> None:
        if self.procs[i] is None:
            self._spawn(i)

    def ensure_running(self) -> None:
        for i in range(len(self.names)):
            self.restart(i)
        self.wait_healthy()

    def close(self) -> None:
        for i in range(len(self.names)):
            with contextlib.suppress(Exception):
                self.kill(i)


class TlsEtcd:
    """One etcd member serving https only, requiring a client certificate signed by
    ``client_ca`` (``--client-cert-auth``): what a production etcd's client port looks like."""

    def __init__(self, base: Path, cert: Path, key: Path, client_ca: Path) -> None:
        self.base = base
        self.port, self.peer = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.args = [etcd_binary(), "--name", "tls", "--data-dir", str(base / "tls"),
                     "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                     "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
                     "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
                     "--initial-cluster", f"tls=http://127.0.0.1:{self.peer}",
                     "--cert-file", str(cert), "--key-file", str(key), "--client-cert-auth",
                     "--trusted-ca-file", str(client_ca), "--logger", "zap", "--log-level", "warn"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.base / "tls.log", "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            log = self.base / "tls.log"
            assert self.proc.poll() is None, "etcd (TLS) exited: " + log.read_text()[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError(f"etcd (TLS) not listening within {START_TIMEOUT_S}s")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
