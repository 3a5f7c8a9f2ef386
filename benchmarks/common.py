"""Shared plumbing for the scenarios: processes, /proc readings, statistics, results.

Every process the harness starts is registered in a ``Processes`` group and killed at the
end (even on error); children also get PR_SET_PDEATHSIG so a killed harness leaves nothing
behind. Everything runs on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class HarnessError(RuntimeError):
    """Something in the harness itself failed (not a slow figure)."""


# --- the machine -----------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_mib": mem_kib // 1024,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "kernel": platform.release(),
        "haproxy": haproxy_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (f"machine: {info['cores']} cores ({info['cpu'] or 'unknown cpu'}), "
            f"{info['memory_mib']} MiB, Linux {info['kernel']}, "
            f"{info['implementation']} {info['python']}, uvloop {'on' if info['uvloop'] else 'off'}, "
            f"haproxy {info['haproxy'] or 'not installed'}")


def haproxy_version() -> str | None:
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists()
                                      else None)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"


def haproxy_exe() -> str | None:
    exe = shutil.which("haproxy")
    if exe is None and Path("/usr/sbin/haproxy").exists():
        exe = "/usr/sbin/haproxy"
    return exe


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard:
        # root may raise the hard limit up to fs.nr_open
        with contextlib.suppress(OSError, ValueError):
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
            target = min(want, nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
    target = min(max(want, soft), hard)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- /proc readings ----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- statistics --------------------------------------------------------------------------------

def quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def summarize_ns(values_ns: Iterable[int]) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max in milliseconds (3 decimals) of nanosecond samples."""
    data = sorted(values_ns)
    if not data:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None,
                "mean": None}

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v / 1e6, 3)

    return {
        "count": len(data),
        "p50": ms(quantile(data, 0.5)),
        "p90": ms(quantile(data, 0.9)),
        "p99": ms(quantile(data, 0.99)),
        "p999": ms(quantile(data, 0.999)),
        "max": ms(data[-1]),
        "mean": ms(sum(data) / len(data)),
    }


def sub_or_none(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def ratio_or_none(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


# --- results -----------------------------------------------------------------------------------

def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


# --- processes ---------------------------------------------------------------------------------

def set_pdeathsig() -> None:
    """Die with the parent (Linux): a harness killed hard leaves no orphans."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(config: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in ("proxy", "api"):
        if section in config:
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in config[section].items()]
            lines.append("")
    for pool in config.get("pools", []):
        lines.append("[[pools]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in pool.items()]
        lines.append("")
    return "\n".join(lines)


class Child:
    """A multiprocessing child (spawned) with an async request/response control pipe."""

    def __init__(self, proc: mp.process.BaseProcess, conn: Any) -> None:
        self.proc = proc
        self.conn = conn

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    async def call(self, cmd: str, timeout: float = 30.0, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        fd = self.conn.fileno()

        def ready() -> None:
            loop.remove_reader(fd)
            if fut.done():
                return
            try:
                os.set_blocking(fd, True)  # the loop made it non-blocking; recv whole messages
                fut.set_result(self.conn.recv())
            except (EOFError, OSError) as exc:
                fut.set_exception(HarnessError(f"child {self.pid} died: {exc!r}"))

        loop.add_reader(fd, ready)
        try:
            os.set_blocking(fd, True)
            self.conn.send((cmd, kwargs))
            async with asyncio.timeout(timeout):
                status, value = await fut
        except TimeoutError:
            raise HarnessError(f"child {self.pid}: {cmd!r} timed out after {timeout}s") from None
        finally:
            loop.remove_reader(fd)
        if status != "ok":
            raise HarnessError(f"child {self.pid}: {cmd!r} failed: {value}")
        return value


class Processes:
    """Every process the harness starts; ``close()`` terminates then kills all of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.popens: list[subprocess.Popen] = []
        self.children: list[Child] = []
        self.logs: list[Path] = []
        self._ctx = mp.get_context("spawn")

    async def start_child(self, target: Callable[..., None], *args: Any,
                          timeout: float = 20.0) -> tuple[Child, Any]:
        """Spawn ``target(conn, *args)``; it sends ("ok", info) once ready. Returns (child, info)."""
        parent, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(target=target, args=(child_end, *args), daemon=True)
        proc.start()
        child_end.close()
        child = Child(proc, parent)
        self.children.append(child)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def ready() -> None:
            loop.remove_reader(parent.fileno())
            if not fut.done():
                try:
                    os.set_blocking(parent.fileno(), True)
                    fut.set_result(parent.recv())
                except (EOFError, OSError) as exc:
                    fut.set_exception(HarnessError(f"child died while starting: {exc!r}"))

        loop.add_reader(parent.fileno(), ready)
        try:
            async with asyncio.timeout(timeout):
                status, info = await fut
        except TimeoutError:
            raise HarnessError(f"child {target.__name__} did not start in {timeout}s") from None
        finally:
            loop.remove_reader(parent.fileno())
        if status != "ok":
            raise HarnessError(f"child {target.__name__} failed to start: {info}")
        return child, info

    async def start_proxy(self, config: dict[str, Any], name: str = "proxy",
                          timeout: float = 20.0, stalls: Path | None = None,
                          ) -> tuple[subprocess.Popen, int, int | None]:
        """``python -m proxy run -c <generated toml>``; returns (popen, rig port, api port).
        With ``stalls``, the same proxy under ``benchmarks.loopwatch``, whose watchdog in the
        proxy's event loop writes every stall of the loop to that file."""
        path = self.workdir / f"{name}.toml"
        path.write_text(to_toml(config))
        log_path = self.workdir / f"{name}.log"
        self.logs.append(log_path)
        log = open(log_path, "wb")  # noqa: SIM115 - closed when the process is reaped
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        command = (["-m", "proxy", "--log-level", "INFO", "run"] if stalls is None
                   else ["-m", "benchmarks.loopwatch", "--stalls", str(stalls)])
        popen = subprocess.Popen([sys.executable, *command, "-c", str(path)], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=set_pdeathsig)
        log.close()
        self.popens.append(popen)
        pattern = re.compile(r"rigs on port (\d+), api on port (\S+)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            text = log_path.read_text(errors="replace")
            m = pattern.search(text)
            if m:
                api = int(m.group(2)) if m.group(2).isdigit() else None
                return popen, int(m.group(1)), api
            if popen.poll() is not None:
                raise HarnessError(f"proxy exited with {popen.returncode}:\n{text[-3000:]}")
            if loop.time() > deadline:
                raise HarnessError(f"proxy did not report its port in {timeout}s:\n{text[-3000:]}")
            await asyncio.sleep(0.05)

    async def start_proxies(self, config: dict[str, Any],
                            instances: int = 1) -> tuple[list[subprocess.Popen], int]:
        """One proxy, or ``instances`` proxies sharing one rig port with SO_REUSEPORT (one per
        core, as configs/reuseport-1.toml deploys them); returns (processes, rig port)."""
        if instances <= 1:
            popen, port, _ = await self.start_proxy(config)
            return [popen], port
        port = free_port()
        popens = []
        for i in range(1, instances + 1):
            cfg = {**config, "proxy": {**config["proxy"], "listen": f"127.0.0.1:{port}",
                                       "reuse_port": True, "instance": f"proxy-{i}"}}
            popen, bound, _ = await self.start_proxy(cfg, name=f"proxy-{i}")
            if bound != port:
                raise HarnessError(f"proxy-{i} bound {bound}, expected the shared port {port}")
            popens.append(popen)
        return popens, port

    async def start_haproxy(self, listen_port: int, backend_port: int,
                            timeout: float = 10.0) -> subprocess.Popen:
        exe = haproxy_exe()
        if exe is None:
            raise HarnessError("haproxy is not installed")
        cfg = self.workdir / "haproxy.cfg"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cfg.write_text(
            "global\n"
            f"    maxconn {max(256, (nofile - 64) // 2)}\n"
            "    nbthread 1\n"  # one thread, like the one-process proxy it is compared with
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "frontend rigs\n"
            f"    bind 127.0.0.1:{listen_port}\n"
            "    default_backend pool\n"
            "backend pool\n"
            f"    server pool1 127.0.0.1:{backend_port}\n")
        log_path = self.workdir / "haproxy.log"
        self.logs.append(log_path)
        log = open(log_path, "wb")  # noqa: SIM115
        popen = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
        log.close()
        self.popens.append(popen)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if popen.poll() is not None:
                raise HarnessError(f"haproxy exited with {popen.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", listen_port)
                writer.close()
                return popen
            except OSError:
                if loop.time() > deadline:
                    raise HarnessError("haproxy did not start listening") from None
                await asyncio.sleep(0.05)

    def stop_popen(self, popen: subprocess.Popen, grace: float = 5.0) -> None:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)

    def close(self) -> None:
        for popen in self.popens:
            with contextlib.suppress(Exception):
                self.stop_popen(popen)
        for child in self.children:
            with contextlib.suppress(Exception):
                child.conn.close()
            with contextlib.suppress(Exception):
                child.proc.terminate()
                child.proc.join(3)
                if child.proc.is_alive():
                    child.proc.kill()
                    child.proc.join(3)
        self.popens.clear()
        self.children.clear()


def proxy_config(pools: list[dict[str, Any]], api: bool = False, **proxy: Any) -> dict[str, Any]:
    # each benchmark connection carries the shares of hundreds of rigs: lift the per-rig
    # request limit (a real rig sends a few requests per second)
    base = {"listen": "127.0.0.1:0", "extranonce2_size": 4, "extranonce_prefix_size": 2,
            "max_requests_per_s": 1_000_000.0}
    base.update(proxy)
    return {"proxy": base, "api": {"enabled": api, "listen": "127.0.0.1:0", "token": "bench"},
            "pools": pools}


class ProxyApi:
    """Reads from the proxy's REST API on loopback over one HTTP session (``async with``)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session: Any = None

    async def __aenter__(self) -> ProxyApi:
        import aiohttp

        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def get(self, path: str, **query: Any) -> Any:
        async with self.session.get(self.base + path, params=query or None) as r:
            if r.status != 200:
                raise HarnessError(f"{path} answered {r.status}: {(await r.text())[:300]}")
            return await r.json()

    async def all_rigs(self, page: int = 5000) -> list[dict[str, Any]]:
        """Every rig of ``/api/v1/rigs``, a page at a time."""
        rigs: list[dict[str, Any]] = []
        while True:
            data = await self.get("/api/v1/rigs", offset=len(rigs), limit=page)
            rigs += data["rigs"]
            if not data["rigs"] or len(rigs) >= data["total"]:
                return rigs


def log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def take_lines(pending: bytes, data: bytes) -> tuple[bytes, bytes]:
    """Split ``pending + data`` into (complete lines ending in a newline, unterminated rest)."""
    buf = pending + data if pending else data
    end = buf.rfind(b"\n")
    if end < 0:
        return b"", buf
    return buf[:end + 1], buf[end + 1:]
