"""A pool failing under one upstream connection per rig: its other connections are closed a
batch per run of the core (not all in the failing call), and until then they carry nothing."""

from __future__ import annotations

from proxy.core.handover import MOVE_BATCH
from proxy.core.health import PoolHealth
from proxy.core.sharepath import LOST_UNSENT
from proxy.core.upstream import ConnState
from proxy.core.upstreams import CLOSE_BATCH

from .harness import FakeRig, connect, make_core, make_notify

RIGS = max(CLOSE_BATCH, MOVE_BATCH) + 44  # more than the failing call closes or moves


def _serve(core, io, clock, links, served):
    """Connect and answer every connection dialed since the last call."""
    while served[0] < len(io.dialed):
        conn = io.dialed[served[0]]
        served[0] += 1
        link = connect(core, conn, clock)
        tag = "01" if conn.pool.name == "primary" else "02"
        link.handshake(extranonce1=f"{served[0]:08x}", e2_size=4,
                       notify=make_notify(f"{conn.pool.name}-{served[0]}", tag=tag))
        links[conn] = link


def _farm():
    core, io, clock = make_core(extranonce_prefix_size=0, extranonce2_size=4)
    links: dict = {}
    served = [0]
    _serve(core, io, clock, links, served)
    rigs = []
    for i in range(RIGS):
        rig = FakeRig(core, clock, peer=f"10.0.{i >> 8}.{i & 255}:1")
        rig.request("mining.subscribe", ["test-rig/1.0"])
        rig.request("mining.authorize", [f"farm.rig{i}", "x"])
        _serve(core, io, clock, links, served)
        rigs.append(rig)
    return core, io, clock, links, served, rigs


def test_the_other_connections_close_a_batch_per_run_and_carry_nothing_meanwhile():
    core, io, clock, links, served, rigs = _farm()
    primary = core.pools["primary"]
    conns = [c for c in primary.connections.values() if c.rigs]
    assert len(conns) == RIGS and all(c.exclusive for c in conns)

    core.pool_closed(conns[0], "connection reset by pool", clock.now)
    assert primary.health.state is PoolHealth.DOWN
    doomed = [c for c in primary.connections.values() if c.alive]
    assert doomed and all(c.doomed == "pool failed: connection reset by pool" for c in doomed)
    closed_now = sum(1 for c in conns[1:] if c.state is ConnState.CLOSED)
    assert 0 < closed_now <= CLOSE_BATCH

    # the glue reporting a doomed connection's end changes nothing: no second failure
    health_events = len(core.events.recent(kind="pool_health"))
    backoff = primary.backoff
    core.pool_closed(doomed[0], "connection reset by pool", clock.now)
    assert doomed[0].alive and primary.backoff == backoff
    assert len(core.events.recent(kind="pool_health")) == health_events

    # a share from a rig still on a doomed connection: answered, counted lost, never written
    rig = next(r for r in rigs if r.session.conn is not None and r.session.conn.doomed)
    link = links[rig.session.conn]
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    sent_before = len(link.sent)
    nonce = _find_nonce(job, rig.session.prefix)  # meets the job's (the pool's) target
    mid = rig.request("mining.submit", [rig.session.worker, job_id, "01020304",
                                        f"{job.ntime:08x}", f"{nonce:08x}"])
    assert rig.answer(mid)["result"] is True
    assert primary.counters.lost == {LOST_UNSENT: 1}
    assert len(link.sent) == sent_before

    # the core's runs close the rest and move every rig; the backup's connections come up
    for _ in range(100):
        if not core.upstreams.doomed and not core.mover.pending:
            break
        core.tick(clock.now)
        _serve(core, io, clock, links, served)
    assert not core.upstreams.doomed and not core.mover.pending
    assert all(c.state is ConnState.CLOSED for c in conns)
    assert set(conns) <= set(io.closed) | {conns[0]}  # the glue closed the first itself
    assert all(r.session.conn is not None and r.session.conn.pool.name == "backup" for r in rigs)
    assert all("02020202" in r.notifications("mining.notify")[-1][2] for r in rigs)


def _find_nonce(job, extranonce1: bytes) -> int:
    for nonce in range(1_000_000):
        digest = job.header_hash(extranonce1, b"\1\2\3\4", job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            return nonce
    raise AssertionError("no nonce")
