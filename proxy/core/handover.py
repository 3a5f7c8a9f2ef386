"""What a rig is sent when it lands on a pool connection, and what keeps a quiet rig mining.

This is the whole of "switching pools without the rigs noticing": a rig that moves gets
``mining.set_difficulty`` (if it changed), ``mining.set_version_mask`` (if it changed) and
the new connection's job with clean_jobs=true; its extranonce1 and extranonce2_size stay.
Only a pool too narrow for the fold forces a layout change, by ``mining.set_extranonce`` for
a rig that subscribed to it, else by ``client.reconnect``; both are counted and reported.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING

from .events import RigsExtranonceChanged
from .vardiff import set_difficulty_line

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .pool import PoolState
    from .rig import RigSession
    from .upstream import PoolConnection
    from .vardiff import Vardiff

MOVE_BATCH = 500  # rigs moved per run of the core (about 5 ms at 10,000 rigs)
SET_EXTRANONCE = "set_extranonce"
RECONNECT = "client.reconnect"


def layout_on(conn: PoolConnection, rig: RigSession, e2_size: int) -> tuple[bytes, int]:
    """(extranonce1, extranonce2_size) the rig must use for ``conn``'s jobs."""
    if conn.passthrough:
        return conn.extranonce1, conn.extranonce2_size
    return rig.prefix, e2_size


def hand_over(rig: RigSession, conn: PoolConnection, e2_size: int, vardiff: Vardiff,
              now: float) -> str | None:
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
    # a switch leaves the rig's own difficulty alone unless the new pool's is lower
    # a pool that retargeted the connection aims it at all of its rigs: a new one carries ~1/N
    sharing = len(conn.rigs) if conn.retargets else 1
    difficulty = (vardiff.start(rig, conn.difficulty, sharing) if rig.difficulty is None
                  else vardiff.capped(rig, conn.difficulty))
    if difficulty is not None:
        vardiff.apply(rig, difficulty, now)
        rig.send(set_difficulty_line(difficulty))
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


def fan_out_difficulty(conn: PoolConnection, vardiff: Vardiff, now: float) -> None:
    """The pool changed difficulty: rigs above it come down to it (the pool would not credit
    their work at more); rigs below keep their own, and their vardiff may now go higher."""
    for rig in conn.rigs.values():
        difficulty = vardiff.capped(rig, conn.difficulty)
        if difficulty is not None:
            retarget(rig, difficulty, vardiff, now)


def retarget(rig: RigSession, difficulty: float, vardiff: Vardiff, now: float) -> None:
    """Give the rig a new difficulty: set_difficulty, then its current job again (firmware
    applies a new difficulty from the next notify; clean_jobs=false, its work goes on)."""
    vardiff.apply(rig, difficulty, now)
    rig.send(set_difficulty_line(difficulty))
    job = rig.last_sent_job
    if job is not None:
        rig.send(job.line_keepalive)


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


class Mover:
    """Moves rigs between connections for one core, counting the layout changes it needed
    (the switch event reports them)."""

    __slots__ = ("core", "layout_moves", "pending", "_plan", "_later_moves")

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.layout_moves: Counter[str] = Counter()
        # the rig ids of a plan's moves not made yet (ids, not (id, pool) pairs: a plan of
        # 10,000 pairs is 10,000 new objects for the garbage collector in the failing call)
        self.pending: deque[int] = deque()
        self._plan: dict[int, PoolState] = {}
        self._later_moves: Counter[str] = Counter()  # layout changes of the later batches

    def carry_out(self, plan: dict[int, PoolState], now: float) -> None:
        """Make a plan's moves (it replaces any unfinished one): MOVE_BATCH now, the rest a
        batch per run of the core, so moving 10,000 rigs never holds the loop for all."""
        self._plan = plan
        self.pending = deque(plan)
        self._later_moves.clear()
        self.continue_moves(now, first=True)

    def continue_moves(self, now: float, first: bool = False) -> None:
        """The next batch of the plan in progress."""
        core = self.core
        pending = self.pending
        if not first:
            self.layout_moves.clear()
        for _ in range(min(MOVE_BATCH, len(pending))):
            rig_id = pending.popleft()
            pool = self._plan[rig_id]
            rig = core.rigs.get(rig_id)
            if rig is not None and rig.placeable and pool.name in core.active_pools():
                self.place(rig, pool, now)
        if not first:
            self._later_moves.update(self.layout_moves)
        if pending:
            core.timers.due(now)
            return
        self._plan = {}
        if self._later_moves:
            # the switch event counted the first batch's; these are the rest
            core.publish(RigsExtranonceChanged(pool=",".join(core.active_pools()),
                                               reason="the rest of the switch",
                                               extranonce_changes=dict(self._later_moves)), now)
            self._later_moves.clear()
        if not first and core.placement.unplaced:
            core.reroute(now, "rigs waiting for a connection")

    def place(self, rig: RigSession, pool: PoolState, now: float) -> None:
        """Put the rig on a connection of ``pool``; it sees only difficulty, mask and a job."""
        core = self.core
        placement = core.placement
        old = rig.conn
        conn = placement.connection_for(pool, rig) or core.upstreams.dial(pool, now)
        placement.detach(rig)
        placement.attach(rig, conn)
        if core.settings.forward_worker_names:
            suffix = rig.worker.rsplit(".", 1)[-1] if rig.worker else f"rig{rig.rig_id}"
            rig.upstream_worker = f"{pool.config.user}.{suffix}"
            conn.authorize_worker(rig.upstream_worker, pool.config.password, now)
        if conn.ready and conn.current_job is not None:
            self._hand_over(rig, conn, now)
        if old is not None and not old.rigs:
            core.upstreams.retire_idle(old, now)

    def _hand_over(self, rig: RigSession, conn: PoolConnection, now: float) -> None:
        change = hand_over(rig, conn, self.core.e2_size, self.core.vardiff, now)
        if change is not None:
            self.layout_moves[change] += 1
            if change == RECONNECT:
                self.core.placement.gone(rig)

    def hand_over_all(self, conn: PoolConnection, now: float) -> dict[str, int]:
        """A connection just became ready: its rigs get its work; the layout changes it took."""
        self.layout_moves.clear()
        for rig in list(conn.rigs.values()):
            self._hand_over(rig, conn, now)
        moves = dict(self.layout_moves)
        self.layout_moves.clear()
        return moves
