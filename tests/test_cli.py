"""The command line as an operator uses it: check-config, run, SIGHUP reload, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from proxy.sim.pool import SimPool, SimPoolConfig

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_check_config_accepts_the_example():
    proc = _cli("check-config", str(ROOT / "configs" / "example.toml"))
    assert proc.returncode == 0, proc.stderr
    # the default layout is chosen from the pools: the rule is printed
    assert "extranonce layout: auto" in proc.stdout
    assert "smallest pool extranonce2_size >= 6: 2-byte prefix + 4" in proc.stdout
    assert "4: 1 + 3 (256 rigs per connection)" in proc.stdout
    assert "[0] primary" in proc.stdout and "[1] backup" in proc.stdout


def test_check_config_prints_a_fixed_layout_and_what_pools_need(tmp_path):
    path = tmp_path / "fixed.toml"
    path.write_text((ROOT / "configs" / "example.toml").read_text()
                    .replace('extranonce2_size = "auto"', "extranonce2_size = 4")
                    .replace('extranonce_prefix_size = "auto"', "extranonce_prefix_size = 2"))
    proc = _cli("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "pools should offer extranonce2_size >= 6" in proc.stdout


def test_check_config_names_the_bad_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pools]]\nname = "a"\nurl = "stratum+tcp://h:1"\nuser = "u"\n'
                   '[[pools]]\nname = "b"\nurl = "http://h:1"\nuser = "u"\n')
    proc = _cli("check-config", str(bad))
    assert proc.returncode != 0
    assert "pools[1].url" in proc.stderr
    bad.write_text('[proxy]\nextranonce2_size = "four"\n[[pools]]\nname="a"\nurl="stratum+tcp://h:1"\n'
                   'user="u"\n')
    proc = _cli("check-config", str(bad))
    assert proc.returncode != 0 and "proxy.extranonce2_size" in proc.stderr
    bad.write_text("this is [not toml")
    proc = _cli("check-config", str(bad))
    assert proc.returncode != 0 and "not valid TOML" in proc.stderr


def _config(port_a: int, port_b: int | None, listen_port: int) -> str:
    text = (f'[proxy]\nlisten = "127.0.0.1:{listen_port}"\n[api]\nenabled = false\n'
            f'[[pools]]\nname = "a"\nurl = "stratum+tcp://127.0.0.1:{port_a}"\nuser = "u"\n')
    if port_b is not None:
        text += f'[[pools]]\nname = "b"\nurl = "stratum+tcp://127.0.0.1:{port_b}"\nuser = "u"\npriority = 1\n'
    return text


async def _read_stderr_until(proc, needle: str, timeout: float) -> str:
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError("process ended; output:\n" + "".join(seen))
            seen.append(line)
            if needle in line:
                return line


async def test_run_reload_and_graceful_stop(tmp_path):
    pool_a = SimPool(SimPoolConfig(name="a", difficulty=2**-24))
    pool_b = SimPool(SimPoolConfig(name="b", difficulty=2**-24))
    await pool_a.start()
    await pool_b.start()
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(_config(pool_a.port, None, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "-c", str(cfg), cwd=ROOT,
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = await _read_stderr_until(proc, "listening for rigs on", 20)
        port = int(line.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"id":1,"method":"mining.subscribe","params":[]}\n'
                     b'{"id":2,"method":"mining.authorize","params":["w","x"]}\n')
        async with asyncio.timeout(10):
            while b"mining.notify" not in (await reader.readline()):
                pass
        # add a pool and reload: accepted
        cfg.write_text(_config(pool_a.port, pool_b.port, 0))
        proc.send_signal(signal.SIGHUP)
        await _read_stderr_until(proc, "config reloaded", 10)
        await pool_b.wait_until(lambda: pool_b.total_connections > 0, 10, "the added pool dialed")
        # a broken file: refused, the proxy keeps running with the old config
        cfg.write_text("[[pools]]\nname = 'x'\nurl = 'nonsense'\nuser = 'u'\n")
        proc.send_signal(signal.SIGHUP)
        refused = await _read_stderr_until(proc, "reload refused", 10)
        assert "pools[0].url" in refused
        writer.write(b'{"id":3,"method":"mining.suggest_difficulty","params":[1]}\n')
        async with asyncio.timeout(5):
            while (answer := json.loads(await reader.readline())).get("id") != 3:
                pass
        assert answer["result"] is True  # the rig never noticed
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rc = await proc.wait()
        assert rc == 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pool_a.stop()
        await pool_b.stop()


def test_run_without_marketplace_credentials_exits_with_the_reason(tmp_path):
    cfg = tmp_path / "proxy.toml"
    cfg.write_text('[proxy]\nlisten = "127.0.0.1:0"\n[api]\nenabled = false\n'
                   '[[pools]]\nname = "a"\nurl = "stratum+tcp://127.0.0.1:9"\nuser = "u"\n'
                   '[rental]\ntarget_hashrate = "1 PH/s"\nmax_price = "0.0005"\ndaily_budget_btc = "0.01"\n'
                   'key_env = "NO_SUCH_KEY_VAR"\nsecret_env = "NO_SUCH_SECRET_VAR"\n'
                   'org_env = "NO_SUCH_ORG_VAR"\n'
                   f'ledger = "{tmp_path / "ledger.sqlite3"}"\n')
    check = _cli("check-config", str(cfg))
    assert check.returncode == 0 and "rental: nicehash" in check.stdout and "$NO_SUCH_KEY_VAR" in check.stdout
    proc = _cli("run", "-c", str(cfg))
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "NO_SUCH_KEY_VAR" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_describes_a_hashprice_cap_and_names_a_bad_premium(tmp_path):
    cfg = tmp_path / "proxy.toml"
    base = ('[[pools]]\nname = "a"\nurl = "stratum+tcp://127.0.0.1:9"\nuser = "u"\n'
            '[rental]\ntarget_hashrate = "1 PH/s"\nmax_price = "hashprice"\ndaily_budget_btc = "0.01"\n')
    cfg.write_text(base + "max_premium = 0.05\n")
    check = _cli("check-config", str(cfg))
    assert check.returncode == 0 and "max_price the hashprice +5.0%" in check.stdout, check.stdout
    cfg.write_text(base + "max_premium = 2.0\n")
    bad = _cli("check-config", str(cfg))
    assert bad.returncode != 0 and "rental.max_premium" in bad.stderr + bad.stdout


def test_check_config_describes_the_proxy_protocol():
    proc = _cli("check-config", str(ROOT / "configs" / "instance-1.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "PROXY protocol v2 on the rig port" in proc.stdout and "127.0.0.1/32" in proc.stdout


def test_check_config_refuses_the_proxy_protocol_without_trusted_proxies(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text((ROOT / "configs" / "instance-1.toml").read_text()
                    .replace('trusted_proxies = ["127.0.0.1/32"]', "trusted_proxies = []"))
    proc = _cli("check-config", str(path))
    assert proc.returncode != 0 and "proxy.trusted_proxies" in (proc.stderr + proc.stdout)


def test_check_config_describes_a_cluster_and_names_a_bad_endpoint(tmp_path):
    shipped = ROOT / "configs" / "cluster-instance.toml"
    proc = _cli("check-config", str(shipped))
    assert proc.returncode == 0, proc.stderr
    assert "cluster: farm 'farm1' on etcd http://10.0.0.21:2379" in proc.stdout
    path = tmp_path / "bad.toml"
    path.write_text(shipped.read_text().replace('"http://10.0.0.22:2379"', '"10.0.0.22:2379"'))
    proc = _cli("check-config", str(path))
    assert proc.returncode != 0 and "cluster.etcd[1]" in proc.stderr
    path.write_text(shipped.read_text().replace("publish_s = 2.0", "publish_s = 20.0"))
    proc = _cli("check-config", str(path))
    assert proc.returncode != 0 and "cluster.publish_s" in proc.stderr


def test_a_farm_reading_etcd_leaves_renting_to_the_instances():
    import pytest

    from proxy.config import ConfigError
    from proxy.farm.config import load_farm_dict

    cluster = {"etcd": ["http://127.0.0.1:2379"], "farm": "f"}
    config = load_farm_dict({"cluster": cluster})
    assert config.instances == [] and config.cluster is not None
    with pytest.raises(ConfigError, match=r"^rental: with \[cluster\]"):
        load_farm_dict({"cluster": cluster, "rental": {"target_hashrate": "1 PH/s", "max_price": "0.1",
                                                       "daily_budget_btc": "0.01", "pool": "p"},
                        "pools": [{"name": "p", "url": "stratum+tcp://h:1", "user": "u"}]})
    with pytest.raises(ConfigError, match=r"^instances: at least one"):
        load_farm_dict({})
