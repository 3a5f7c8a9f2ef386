"""Issue 20 end to end, with the default ``silent_timeout_s = "auto"``: a silent pool is left
on suspicion long before the old fixed 4 s, a pool with one hiccup costs one switch and one
return, and a steadily slow pool costs none.  (How fast is measured by the benchmark, not
asserted here.)"""

from __future__ import annotations

from proxy.sim import wait_until

RIGS = 50


async def _farm(farm, **proxy):
    primary = await farm.pool("primary", job_interval=30.0)
    backup = await farm.pool("backup", job_interval=30.0)
    svc = await farm.start_proxy(**proxy)
    fleet = await farm.start_fleet(RIGS, share_interval=0.2)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10,
                           "all rigs on the primary's job")
    # enough answers for the proxy to know the primary's latency
    await wait_until(lambda: svc.view.pool("primary", svc.now())["latency_ms"]["window_count"] >= 40,
                     15, what="40 answers from the primary")
    return primary, backup, svc, fleet


def _switches(svc) -> list[tuple[list[str], list[str]]]:
    return [(e["from_pools"], e["to_pools"]) for e in svc.events.recent(kind="pool_switch")][1:]


async def test_a_stalled_pool_is_suspect_before_it_is_down(farm):
    primary, backup, svc, fleet = await _farm(farm)
    bound = svc.view.pool("primary", svc.now())["suspect_after_s"]
    assert bound is not None and bound < 4.0  # learned from its own latency (floor 0.5 s)
    primary.stall()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10,
                           "all rigs on the backup's job")
    # still silent at the 4 s ceiling: down, its unanswered shares counted as timeouts
    await wait_until(lambda: svc.view.pool("primary", svc.now())["state"] == "down", 10,
                     what="the primary down at the ceiling")
    health = [e for e in svc.events.recent(kind="pool_health") if e["pool"] == "primary"]
    assert [e["state"] for e in health] == ["healthy", "suspect", "down"]
    assert "over its bound" in health[1]["reason"] and "p99" in health[1]["reason"]
    assert "silent: no answer for 4s" in svc.view.pool("primary", svc.now())["reason"]
    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0
    assert _switches(svc) == [(["primary"], ["backup"])]


async def test_one_hiccup_is_one_switch_and_one_return(farm):
    primary, backup, svc, fleet = await _farm(farm, suspect_hold_s=1.0)
    primary.set_answer_delay(2.0)
    await wait_until(lambda: svc.view.active_pools() == ["backup"], 10, what="the switch away")
    primary.set_answer_delay(0.0)
    await wait_until(lambda: svc.view.active_pools() == ["primary"], 15, what="the return")
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10,
                           "all rigs back on the primary's job")
    await fleet.drain(10)
    assert _switches(svc) == [(["primary"], ["backup"]), (["backup"], ["primary"])]
    view = svc.view.pool("primary", svc.now())
    assert view["state"] == "healthy" and view["timeouts"] == 0 and view["lost_total"] == 0
    assert fleet.disconnects == 0 and fleet.pending == 0


async def test_steady_slowness_never_switches(farm):
    primary, backup, svc, fleet = await _farm(farm)
    primary.set_answer_delay(0.3)
    accepted = svc.view.pool("primary", svc.now())["accepted"]
    await wait_until(lambda: svc.view.pool("primary", svc.now())["accepted"] >= accepted + 300, 30,
                     what="300 slow answers")
    assert _switches(svc) == []
    view = svc.view.pool("primary", svc.now())
    assert view["state"] == "healthy" and view["suspect_after_s"] > 1.0  # 4 x p99 (~0.3 s)
    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0
