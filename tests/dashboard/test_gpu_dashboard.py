"""The dashboard with an ASIC port and a GPU port (EthereumStratum/1.0.0) in one proxy: the GPU
pools in the pools table under their listener, the rig ports card, the chart per port, the
controls on a GPU pool, and a GPU primary's failure shown live.  Waits are page conditions."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import expect

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet
from proxy.store.history import HistoryStore
from tests.api.conftest import POOL_PASSWORD
from tests.dashboard.conftest import RIGS, TOKEN
from tests.dashboard.test_readable import MISALIGNED_NUMBERS, NUMBER_FIRST

pytestmark = pytest.mark.timeout(60)

GPU_RIGS = 6


async def start_mixed_farm(api, history_db: str) -> EthRigFleet:
    """SV1 pools primary/backup on [proxy] listen, GPU pools etc-a/etc-b on listener "gpu",
    an ASIC fleet and a GPU fleet mining; everything is torn down by the ``dash`` fixture."""
    for name in ("primary", "backup"):
        await api.pool(name)
    gpu = {name: EthSimPool(name, job_interval=1.0) for name in ("etc-a", "etc-b")}
    for pool in gpu.values():
        await pool.start()
    sv1 = [api.pool_entry(name, i) for i, name in enumerate(api.pools)]
    api.pools.update(gpu)  # stopped with the others
    data = {
        "proxy": {"listen": "127.0.0.1:0", "instance": "test-proxy", "history_db": history_db,
                  "failback_hold_s": 60.0},
        "api": {"listen": "127.0.0.1:0", "token": TOKEN},
        "pools": sv1 + [{"name": name, "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "farm",
                         "password": POOL_PASSWORD, "priority": i, "protocol": "ethstratum"}
                        for i, (name, pool) in enumerate(gpu.items())],
        "listeners": [{"name": "gpu", "listen": "127.0.0.1:0", "protocol": "ethstratum",
                       "pools": ["etc-a", "etc-b"]}],
    }
    svc = ProxyService(load_dict(data, str(api.config_path)))
    svc.config.proxy.history_sample_s = 0.25
    await svc.start()
    api.svc = svc
    api.http = aiohttp.ClientSession(f"http://127.0.0.1:{svc.api_port}")
    await wait_until(lambda: svc.view.active_pools() == ["primary"], 10, what="primary active")
    await api.fleet(RIGS)
    fleet = EthRigFleet("127.0.0.1", svc.ports["gpu"], GPU_RIGS, share_interval=0.1)
    api.fleets.append(fleet)
    await fleet.start()
    prefix = gpu["etc-a"].header_prefix()
    await fleet.wait_until(lambda: fleet.on_pool(prefix) == GPU_RIGS, 10, "GPUs on etc-a")
    return fleet


async def test_gpu_port_in_the_dashboard_fails_over_live(dash, tmp_path):
    db = str(tmp_path / "history.db")
    fleet = await start_mixed_farm(dash.api, db)
    page = await dash.open(1440, 900, rigs=RIGS + GPU_RIGS)

    # the pools table: every pool with its rig port and protocol
    rows = page.locator("#pools-body tr")
    await expect(rows).to_have_count(4)
    etc_a = page.locator('#pools-body tr[data-pool="etc-a"]')
    etc_b = page.locator('#pools-body tr[data-pool="etc-b"]')
    await expect(etc_a.locator(".port-label")).to_have_text("gpu · EthereumStratum/1.0.0")
    primary = page.locator('#pools-body tr[data-pool="primary"]')
    await expect(primary.locator(".port-label")).to_have_text("main · Stratum V1")
    await expect(etc_a.locator(".chip-active")).to_have_text("active")
    await expect(etc_a.locator("td[data-col=rigs]")).to_have_text(str(GPU_RIGS))
    await expect(etc_a.locator("td[data-col=accepted]")).not_to_have_text("0")
    # the rig ports card: each port's rigs and active pool; the header counts both
    gpu_port = page.locator('#listeners-body tr[data-listener="gpu"]')
    await expect(gpu_port.locator("td[data-col=rigs]")).to_have_text(str(GPU_RIGS))
    await expect(gpu_port.locator("td[data-col=active]")).to_have_text("etc-a")
    main_port = page.locator('#listeners-body tr[data-listener="main"]')
    await expect(main_port.locator("td[data-col=rigs]")).to_have_text(str(RIGS))
    await expect(page.locator("#stat-active")).to_have_text("primary · etc-a")
    await expect(page.locator("#stat-rigs-sub")).to_contain_text(f"GPU {GPU_RIGS}")
    # the chart stacks one port's pools: the GPU port's on request
    await page.locator("#history-listener").select_option("gpu")
    await expect(page.locator('#history-chart rect[data-pool="etc-a"]').first).to_be_attached()
    await expect(page.locator('#history-chart rect[data-pool="primary"]')).to_have_count(0)
    assert await page.evaluate(MISALIGNED_NUMBERS, NUMBER_FIRST) == []  # the rig ports' too
    await dash.screenshot(page, "dashboard-gpu-1440-full", full_page=True)
    narrow = await dash.open(390, 844, rigs=RIGS + GPU_RIGS)
    await expect(narrow.locator('#listeners-body tr[data-listener="gpu"]')).to_be_visible()
    overflow = await narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390px"
    await dash.screenshot(narrow, "dashboard-gpu-390-full", full_page=True)
    await page.evaluate("window.__samePage = 'yes'")

    # the GPU primary dies: the page shows it down and the GPU rigs on etc-b, the ASICs stay
    await dash.api.pools["etc-a"].stop()
    switch = page.locator("#events li[data-kind=pool_switch]", has_text="etc-a → etc-b")
    await expect(switch).to_be_visible()
    await expect(switch.locator(".ev-reason")).to_contain_text("listener gpu")
    await expect(etc_a.locator(".badge")).to_have_text("down")
    await expect(etc_b.locator(".chip-active")).to_be_visible()
    await expect(gpu_port.locator("td[data-col=active]")).to_have_text("etc-b")
    await expect(gpu_port.locator("td[data-col=moves]")).to_have_text(f"{GPU_RIGS} / 0")
    await expect(page.locator("#stat-active")).to_have_text("primary · etc-b")
    await expect(page.locator("#stat-active-sub")).to_contain_text("on a backup (gpu)")
    assert await page.evaluate("window.__samePage") == "yes"  # updated in place, not reloaded
    await dash.screenshot(page, "dashboard-gpu-after-failover-1440x900")

    # the controls act on a GPU pool: edit its weight, drain it, undrain it
    await page.locator("#token-input").fill(TOKEN)
    await page.locator("#token-form button[type=submit]").click()
    await etc_b.locator("button[data-action=edit]").click()
    await page.locator("#edit-weight").fill("2.5")
    await page.locator("#edit-apply").click()
    await expect(page.locator("#message-text")).to_contain_text("etc-b: weight 1 → 2.5")
    await expect(etc_b.locator("td[data-col=weight]")).to_have_text("2.5")
    gpu_view = dash.api.svc.gpu["gpu"].view
    assert gpu_view.pool("etc-b", dash.api.svc.now())["weight"] == 2.5
    await etc_b.locator("button[data-action=drain]").click()
    await page.locator("#confirm-ok").click()
    await expect(etc_b.locator("td[data-col=state] .chip")).to_have_text("draining")
    assert gpu_view.pool("etc-b", dash.api.svc.now())["draining"] is True
    await etc_b.locator("button[data-action=undrain]").click()
    await expect(etc_b.locator("td[data-col=state] .chip")).to_have_count(0)
    assert gpu_view.active_pools() == ["etc-b"] and fleet.total("disconnects") == 0

    # /api/v1/history has the GPU pools under their port; the SQLite file keeps them across
    # the restart (the last sample, taken once the rigs are closed, says 0 H/s: the truth then)
    history = await dash.api.get("/api/v1/history?minutes=5")
    live = [r for r in history["rows"] if r["pool"] == "etc-b"]
    assert live and live[-1]["listener"] == "gpu" and live[-1]["hashrate"] > 0
    await dash.close()  # no page polls a stopped proxy
    await dash.api.svc.stop()
    dash.api.svc = None
    rows = HistoryStore(db).open().query(since=0)["rows"]
    by_pool = {r["pool"]: r["listener"] for r in rows}
    assert by_pool == {"primary": "main", "backup": "main", "etc-a": "gpu", "etc-b": "gpu"}
    for name in ("etc-a", "etc-b"):
        assert sum(r["accepted"] for r in rows if r["pool"] == name) > 0, name


async def test_a_gpu_only_proxy_reads_as_one(dash):
    """[proxy] listen speaks EthereumStratum: the header, chart and ports are the GPU port's."""
    gpu = {name: EthSimPool(name, job_interval=1.0) for name in ("etc-a", "etc-b")}
    for pool in gpu.values():
        await pool.start()
    dash.api.pools.update(gpu)
    data = {"proxy": {"listen": "127.0.0.1:0", "protocol": "ethstratum", "instance": "gpu-proxy"},
            "api": {"listen": "127.0.0.1:0", "token": TOKEN},
            "pools": [{"name": name, "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "farm",
                       "priority": i} for i, (name, pool) in enumerate(gpu.items())]}
    svc = ProxyService(load_dict(data, str(dash.api.config_path)))
    svc.config.proxy.history_sample_s = 0.25
    await svc.start()
    dash.api.svc = svc
    fleet = EthRigFleet("127.0.0.1", svc.port, GPU_RIGS, share_interval=0.1)
    dash.api.fleets.append(fleet)
    await fleet.start()
    page = await dash.open(1440, 900, rigs=GPU_RIGS)
    await expect(page.locator("#stat-active")).to_have_text("etc-a")
    await expect(page.locator("#stat-rigs-sub")).to_have_text(f"GPU {GPU_RIGS}")
    await expect(page.locator("#stat-hashrate")).not_to_have_text("0 H/s")
    port = page.locator('#listeners-body tr[data-listener="main"]')
    await expect(port).to_contain_text("EthereumStratum/1.0.0")
    await expect(page.locator('#pools-body tr[data-pool="etc-a"] .port-label')).to_have_text(
        "main · EthereumStratum/1.0.0")
    await expect(page.locator("#rigs-card")).to_be_hidden()  # no SV1 port: no SV1 rigs table
    await expect(page.locator("#history-listener")).to_be_hidden()  # one port: nothing to pick
    await expect(page.locator('#history-chart rect[data-pool="etc-a"]').first).to_be_attached()
    await dash.screenshot(page, "dashboard-gpu-only-1440x900")
