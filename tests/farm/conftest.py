"""Several proxy instances, the shipped HAProxy config in front of them, the farm control plane."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_dict
from proxy.farm.config import load_farm_dict
from proxy.farm.service import FarmService
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.rigs import RigFleet
from tests.etcd_fixture import EtcdCluster
from tests.farm_fixture import Farm, stop_all

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "instance-test-token"
FARM_TOKEN = "farm-test-token"


def render_haproxy(listen_port: int, servers: list[tuple[str, int, int]]) -> str:
    """configs/haproxy.cfg as shipped, with this test's ports: the file we test is the file we ship."""
    text = (ROOT / "configs" / "haproxy.cfg").read_text()
    text = re.sub(r"(?m)^(\s*)bind :3333$", rf"\g<1>bind 127.0.0.1:{listen_port}", text)
    text = re.sub(r"(?m)^\s*server proxy-\d+ .*\n", "", text)
    # this machine's open-files limit is far below a production HAProxy's
    text = re.sub(r"maxconn \d+", "maxconn 4000", text)
    lines = "".join(f"    server {name} 127.0.0.1:{rig} check port {api}\n" for name, rig, api in servers)
    text = text.rstrip("\n") + "\n" + lines
    assert f"bind 127.0.0.1:{listen_port}" in text
    return text


class Cluster(Farm):
    """Sim pools (``pool()`` as in the e2e farm), several instances, HAProxy, the control plane;
    rig fleets with ``start_fleet(count, port=...)``."""

    def __init__(self, tmp: Path) -> None:
        super().__init__()
        self.tmp = tmp
        self.instances: dict[str, ProxyService] = {}
        self.haproxy: subprocess.Popen | None = None
        self.haproxy_port = 0
        self.farm: FarmService | None = None

    def instance_config(self, name: str, api_port: int = 0, extra: dict[str, Any] | None = None,
                        **proxy: Any) -> dict[str, Any]:
        pools = [{"name": n, "url": f"stratum+tcp://127.0.0.1:{p.port}", "user": "farm", "priority": i}
                 for i, (n, p) in enumerate(self.pools.items())]
        proxy.setdefault("listen", "127.0.0.1:0")
        proxy.setdefault("failback_hold_s", 60)
        return {"proxy": {"instance": name, **proxy},
                "api": {"listen": f"127.0.0.1:{api_port}", "token": TOKEN}, "pools": pools,
                **(extra or {})}

    async def instance(self, name: str, api_port: int = 0, prefix_start: int = 0,
                       extra: dict[str, Any] | None = None, **proxy: Any) -> ProxyService:
        """One in-process instance; ``extra``: more top-level sections ([cluster], [rental])."""
        svc = ProxyService(load_dict(self.instance_config(name, api_port, extra, **proxy)),
                           prefix_start=prefix_start, with_api=True)
        await svc.start()
        self.instances[name] = svc
        return svc

    async def start_haproxy(self) -> int:
        exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        assert exe, "haproxy is not installed: .ci/run installs the Debian package 'haproxy'"
        with socket_port() as port:
            self.haproxy_port = port
        servers = [(n, s.port, s.api_port) for n, s in self.instances.items()]
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(render_haproxy(self.haproxy_port, servers))
        check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.haproxy = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        await wait_until(self._haproxy_listening, 10, what="HAProxy listening")
        return self.haproxy_port

    def _haproxy_listening(self) -> bool:
        assert self.haproxy is not None
        assert self.haproxy.poll() is None, self.haproxy.stderr.read().decode()  # type: ignore[union-attr]
        try:  # loopback: refused or accepted at once
            socket.create_connection(("127.0.0.1", self.haproxy_port), timeout=1).close()
        except OSError:
            return False
        return True

    async def start_fleet(self, count: int, *, port: int | None = None,
                          authorized_within: float = 30.0, **kwargs: Any) -> RigFleet:
        """``count`` sim rigs on an instance's port or HAProxy's (there is no one proxy here)."""
        assert port is not None, "a cluster's fleet names the port it mines on"
        return await super().start_fleet(count, port=port, authorized_within=authorized_within,
                                         **kwargs)

    async def start_farm(self, **farm: Any) -> FarmService:
        farm.setdefault("listen", "127.0.0.1:0")
        farm.setdefault("token", FARM_TOKEN)
        farm.setdefault("poll_s", 0.2)
        farm.setdefault("retry_s", 0.3)
        farm.setdefault("timeout_s", 1.0)
        config = load_farm_dict({"farm": farm, "instances": [
            {"name": n, "api": f"http://127.0.0.1:{s.api_port}", "token": TOKEN}
            for n, s in self.instances.items()]})
        self.farm = FarmService(config)
        await self.farm.start()
        return self.farm

    async def close(self) -> None:
        await stop_all([self.farm] if self.farm else [], self.fleets)
        if self.haproxy is not None:
            self.haproxy.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.haproxy.wait(5)
            if self.haproxy.poll() is None:
                self.haproxy.kill()
        await stop_all(self.instances.values(), self.pools.values())


@contextlib.contextmanager
def socket_port():
    """A free loopback port (closed before use: HAProxy binds it a moment later)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        await asyncio.wait_for(c.close(), 20)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory):
    """Three etcd members on loopback for the whole session (started once: ~1 s)."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd(etcd_cluster):
    """The session's etcd with every member running (a test before may have killed some)."""
    etcd_cluster.ensure_running()
    return etcd_cluster
