"""The rental backfill for GPU rigs: a DaggerHashimoto order book (the sim marketplace's
Ethash-family market), rented GPU rigs speaking EthereumStratum/1.0.0 through the proxy's
GPU port, the deficit measured on the GPU listener."""

from __future__ import annotations

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet
from tests.api.conftest import SIM_MARKET_ENV, sim_rental
from tests.rental.flow import backfill_market, rigs_die_and_are_backfilled

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL  # 4096 H/s
RIGS = 12


async def test_gpu_rig_failure_is_backfilled_from_the_daggerhashimoto_market(tmp_path, monkeypatch):
    for name, value in SIM_MARKET_ENV.items():
        monkeypatch.setenv(name, value)
    pool = EthSimPool("etc-pool", difficulty=DIFF, job_interval=1.0)
    market = backfill_market(DIFF, INTERVAL, algorithm="DAGGERHASHIMOTO")
    await pool.start()
    await market.start()
    cfg = load_dict(
        {
            "proxy": {"listen": "127.0.0.1:0", "protocol": "ethstratum"},
            "api": {"enabled": False},
            "pools": [
                {"name": "etc-pool", "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "acct.farm"}
            ],
            "rental": sim_rental(
                market.url,
                str(tmp_path / "ledger.sqlite3"),
                algorithm="DAGGERHASHIMOTO",
                target_hashrate=f"{RIGS * RIG_HS} H/s",
                trigger_deficit=0.15,
                trigger_after_s=0.5,
                recover_after_s=0.5,
                min_order_s=0,
                window_s=2.0,
                interval_s=0.1,
                pool="@proxy",
                public_address="127.0.0.1:0",
            ),
        }
    )
    service = ProxyService(cfg)
    await service.start()
    stay = EthRigFleet("127.0.0.1", service.port, RIGS * 2 // 3, share_interval=INTERVAL)
    doomed = EthRigFleet(
        "127.0.0.1", service.port, RIGS // 3, share_interval=INTERVAL, worker_prefix="doomed"
    )
    back = None
    ctl = service.rental
    try:
        assert ctl is not None and ctl.rented_in_source
        await stay.start()
        await doomed.start()
        order = await rigs_die_and_are_backfilled(ctl, market, doomed, RIGS * RIG_HS, service.port)
        gpu = service.gpu["main"].view
        assert gpu is not None and any(r["worker"].startswith("rental") for r in gpu.rigs())
        back = EthRigFleet(
            "127.0.0.1", service.port, RIGS // 3, share_interval=INTERVAL, worker_prefix="back"
        )
        await back.start()  # the rigs return
        await wait_until(lambda: order.state == "CANCELLED", 12, what="the order cancelled")
        assert market.create_calls == 1
        assert pool.wrong_extranonce() == 0 and pool.accepted > 0
    finally:
        for fleet in (stay, doomed, back):
            if fleet is not None:
                await fleet.stop()
        await service.stop()
        await market.stop()
        await pool.stop()
    assert stay.total("disconnects") == 0
