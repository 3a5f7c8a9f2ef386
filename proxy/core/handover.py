"""What a rig is sent when it lands on a pool connection, and what keeps a quiet rig mining.

This is the whole of "switching pools without the rigs noticing": a rig that moves gets
``mining.set_difficulty`` (if it changed), ``mining.set_version_mask`` (if it changed) and
the new connection's job with clean_jobs=true; its extranonce1 and extranonce2_size stay.
Only a pool too narrow for the fold forces a layout change, by ``mining.set_extranonce`` for
a rig that subscribed to it, else by ``client.reconnect``; both are counted and reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rig import RigSession
    from .upstream import PoolConnection

SET_EXTRANONCE = "set_extranonce"
RECONNECT = "client.reconnect"


def layout_on(conn: PoolConnection, rig: RigSession, e2_size: int) -> tuple[bytes, int]:
    """(extranonce1, extranonce2_size) the rig must use for ``conn``'s jobs."""
    if conn.passthrough:
        return conn.extranonce1, conn.extranonce2_size
    return rig.prefix, e2_size


def hand_over(rig: RigSession, conn: PoolConnection, e2_size: int, now: float) -> str | None:
    """Send the rig the work of ``conn`` (ready, with a job).  Returns the layout change it
    needed (``SET_EXTRANONCE`` or ``RECONNECT``), or None; after ``RECONNECT`` the rig is
    leaving and was sent no work."""
    job = conn.current_job
    assert job is not None
    want = layout_on(conn, rig, e2_size)
    change = None
    if rig.subscribe_held is not None:
        rig.answer_subscribe(rig.subscribe_held, *want)  # the layout was waiting for this pool
    elif (rig.extranonce1, rig.extranonce2_size) != want:
        if not rig.extranonce_subscribed:
            rig.ask_to_reconnect()  # last resort: it comes back to us with the new layout
            return RECONNECT
        rig.set_extranonce(*want)
        change = SET_EXTRANONCE
    if rig.difficulty != conn.difficulty:
        rig.send(conn.difficulty_line())
        rig.difficulty = conn.difficulty
    if rig.requested_mask is not None:
        rig.set_version_mask(rig.requested_mask & (conn.version_mask or 0))
    rig.send(job.line_clean)
    rig.last_sent_job = job
    rig.last_work_at = now
    return change


def fan_out_job(conn: PoolConnection) -> None:
    """A new job for every rig on the connection: encoded once, written N times."""
    job = conn.current_job
    assert job is not None
    line = job.line
    for rig in conn.rigs.values():
        rig.send(line)
        rig.last_sent_job = job


def fan_out_difficulty(conn: PoolConnection) -> None:
    """The pool changed difficulty: tell every rig on the connection that is not on it yet (encoded once)."""
    line = conn.difficulty_line()
    difficulty = conn.difficulty
    for rig in conn.rigs.values():
        if rig.difficulty != difficulty:
            rig.difficulty = difficulty
            rig.send(line)


def fan_out_version_mask(conn: PoolConnection) -> None:
    """The pool changed its version mask: each rig that asked for version rolling gets its mask
    within the new one."""
    mask = conn.version_mask or 0
    for rig in conn.rigs.values():
        if rig.requested_mask is not None:
            rig.set_version_mask(rig.requested_mask & mask)


def keep_alive(conns: list[PoolConnection], orphans: set[RigSession], interval: float,
               now: float) -> None:
    """Never let a rig hear nothing for long: firmware drops a silent pool after ~90 s.
    Rigs on a quiet connection get its job again (clean_jobs=false, work goes on); rigs on
    no connection (their pool is gone) get their last job again."""
    for conn in conns:
        if (conn.rigs and conn.current_job is not None
                and now - max(conn.last_job_at, conn.last_keepalive) >= interval):
            conn.last_keepalive = now
            line = conn.current_job.line_keepalive
            for rig in conn.rigs.values():
                rig.send(line)
    for rig in orphans:
        if rig.last_sent_job is not None and now - rig.last_work_at >= interval:
            rig.last_work_at = now
            rig.send(rig.last_sent_job.line_keepalive)
