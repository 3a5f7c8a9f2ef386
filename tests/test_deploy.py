"""The shipped deployment files say what the README says: non-root, many open files, restart
on failure, SIGHUP reload, a stop timeout longer than the proxy's own drain bound."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import STOP_BOUND_S, build_parser
from proxy.config import ProxySection

ROOT = Path(__file__).resolve().parents[1]
UNITS = ["stratum-proxy.service", "stratum-proxy@.service"]


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(ROOT / "configs" / name)
    return parser


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_runs_the_proxy_safely(name):
    service = _unit(name)["Service"]
    assert service["User"] not in ("", "root") and service["Group"] not in ("", "root")
    assert int(service["LimitNOFILE"]) >= 100_000
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > ProxySection().shutdown_drain_s + STOP_BOUND_S
    assert service["NoNewPrivileges"] == "yes"
    # the commands the unit runs are real subcommands of this CLI
    for key in ("ExecStart", "ExecStartPre"):
        argv = shlex.split(service[key])
        assert argv[0].endswith("/stratum-proxy")
        build_parser().parse_args(argv[1:])


@pytest.mark.parametrize("name", UNITS)
def test_systemd_accepts_the_unit(tmp_path, name):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit's keys are checked above)")
    exe = Path(sys.executable).with_name("stratum-proxy")
    assert exe.exists(), "the package's console script is installed next to python"
    text = (ROOT / "configs" / name).read_text().replace("/opt/stratum-proxy/bin/stratum-proxy", str(exe))
    (tmp_path / name).write_text(text)
    target = tmp_path / (name.replace("@", "@1") if "@" in name else name)
    proc = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "stratum-proxy" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_every_shipped_config_is_valid(name):
    proc = subprocess.run([sys.executable, "-m", "proxy", "check-config", str(ROOT / "configs" / name)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout


def test_haproxy_accepts_the_shipped_config():
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(exe).exists(), "haproxy is not installed: .ci/run installs the Debian package 'haproxy'"
    proc = subprocess.run([exe, "-c", "-f", str(ROOT / "configs" / "haproxy.cfg")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "configs" / "haproxy.cfg").read_text()
    assert "balance leastconn" in text and "option httpchk GET /healthz" in text and "mode tcp" in text
