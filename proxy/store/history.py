"""Pool history: per-minute rows and the decision log, in SQLite (WAL) or an in-memory ring.

``HistoryStore`` is synchronous and owned by one worker thread (the recorder's single-thread
executor): the event loop never waits on the disk.  ``HistoryRecorder`` lives on the event
loop: it listens to core events, samples the pool views every ``interval_s`` seconds, turns
the since-start counters into deltas, and hands batches to the store.

With ``proxy.history_db = ""`` the store keeps the same rows in memory (bounded), so the API
answers the same way; nothing survives a restart then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.events import EventLog
from ..core.view import CoreView
from .remembered import remembered_extranonce2_sizes as remembered_extranonce2_sizes  # its old home

log = logging.getLogger("proxy.store")

SCHEMA_VERSION = 3
ADDED = ("accepted", "rejected", "timeouts", "lost", "accepted_difficulty")
# what the pool's jobs say the hashrate earns (view "hashprice" key -> column), per minute
HASHPRICE_COLUMNS = {"btc_per_ph_day": "hashprice", "network_difficulty": "network_difficulty",
                     "block_value_btc": "block_value_btc"}
# "listener": the rig port whose pool it is (GPU pools beside the SV1 ones; NULL in rows of
# schema 2 and older, which only had SV1 pools)
LATEST = ("hashrate", "rigs", "latency_p50_ms", "latency_p99_ms", "state", *HASHPRICE_COLUMNS.values(),
          "listener")
COLUMNS = ("minute", "pool", *ADDED, *LATEST)
KEEP_IF_NULL = ("latency_p50_ms", "latency_p99_ms", *HASHPRICE_COLUMNS.values())

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE TABLE IF NOT EXISTS pool_minutes (
    minute INTEGER NOT NULL,
    pool TEXT NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    timeouts INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    accepted_difficulty REAL NOT NULL DEFAULT 0,
    hashrate REAL,
    rigs INTEGER,
    latency_p50_ms REAL,
    latency_p99_ms REAL,
    state TEXT,
    hashprice REAL,
    network_difficulty REAL,
    block_value_btc REAL,
    listener TEXT,
    PRIMARY KEY (minute, pool)
) WITHOUT ROWID;
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Schema 1 had no hashprice columns, 2 no listener: add them (older rows keep NULL there)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(pool_minutes)")}
    for column in HASHPRICE_COLUMNS.values():
        if column not in have:
            db.execute(f"ALTER TABLE pool_minutes ADD COLUMN {column} REAL")
    if "listener" not in have:
        db.execute("ALTER TABLE pool_minutes ADD COLUMN listener TEXT")


def _upsert_sql() -> str:
    sets = [f"{c} = {c} + excluded.{c}" for c in ADDED]
    sets += [f"{c} = COALESCE(excluded.{c}, {c})" if c in KEEP_IF_NULL else f"{c} = excluded.{c}"
             for c in LATEST]
    return (f"INSERT INTO pool_minutes ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in COLUMNS)}) "
            f"ON CONFLICT(minute, pool) DO UPDATE SET {', '.join(sets)}")


_UPSERT = _upsert_sql()


def lost_without_timeouts(view: dict[str, Any]) -> int:
    """Shares never delivered, from a pool view (the core counts timeouts separately)."""
    return int(view["lost_total"])


class HistoryStore:
    """Synchronous store; call every method from one thread (or from tests, directly)."""

    def __init__(self, path: str = "", *, retention_days: float = 30.0,
                 memory_rows: int = 200_000, memory_events: int = 20_000) -> None:
        self.path = path
        self.retention_s = retention_days * 86400
        self.error = ""
        self._db: sqlite3.Connection | None = None
        self._rows: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._memory_rows = memory_rows
        self._events: deque[dict[str, Any]] = deque(maxlen=memory_events)
        self._opened = False

    @property
    def backend(self) -> str:
        return "sqlite" if self._db is not None else "memory"

    def open(self) -> HistoryStore:
        if self._opened:
            return self
        self._opened = True
        if not self.path:
            return self
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            _migrate(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            self.error = f"cannot open history database {self.path!r}: {exc}; keeping history in memory"
            log.error("%s", self.error)
        return self

    def write(self, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        if not self._opened:
            self.open()
        if self._db is None:
            self._write_memory(rows, events)
            return
        db = self._db
        db.execute("BEGIN")
        try:
            if events:
                db.executemany("INSERT INTO events (time, kind, data) VALUES (?, ?, ?)",
                               [(float(e.get("time", 0.0)), str(e.get("kind", "")),
                                 json.dumps(e, default=str, sort_keys=True)) for e in events])
            if rows:
                db.executemany(_UPSERT, [tuple(r.get(c) for c in COLUMNS) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _write_memory(self, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self._events.extend(dict(e) for e in events)
        for row in rows:
            key = (row["minute"], row["pool"])
            old = self._rows.get(key)
            if old is None:
                self._rows[key] = {c: row.get(c) for c in COLUMNS}
                continue
            for c in ADDED:
                old[c] = (old[c] or 0) + (row.get(c) or 0)
            for c in LATEST:
                if row.get(c) is not None or c not in KEEP_IF_NULL:
                    old[c] = row.get(c)
        while len(self._rows) > self._memory_rows:
            self._rows.popitem(last=False)

    def query(self, since: float, pool: str | None = None, *, max_rows: int = 100_000,
              max_events: int = 1000) -> dict[str, Any]:
        """Rows with ``minute >= floor(since)`` (oldest first) and events with ``time >= since``
        (the newest ``max_events`` of them, oldest first)."""
        if not self._opened:
            self.open()
        first_minute = int(since // 60) * 60
        if self._db is None:
            rows = [dict(r) for (minute, name), r in self._rows.items()
                    if minute >= first_minute and (pool is None or name == pool)]
            rows.sort(key=lambda r: (r["minute"], r["pool"]))
            events = [e for e in self._events if e.get("time", 0.0) >= since][-max_events:]
            return {"rows": rows[:max_rows], "events": events}
        sql = f"SELECT {', '.join(COLUMNS)} FROM pool_minutes WHERE minute >= ?"
        args: list[Any] = [first_minute]
        if pool is not None:
            sql += " AND pool = ?"
            args.append(pool)
        sql += " ORDER BY minute, pool LIMIT ?"
        args.append(max_rows)
        rows = [dict(zip(COLUMNS, r)) for r in self._db.execute(sql, args)]
        cur = self._db.execute("SELECT data FROM events WHERE time >= ? ORDER BY id DESC LIMIT ?",
                               (since, max_events))
        events = [json.loads(d) for (d,) in cur][::-1]
        return {"rows": rows, "events": events}

    def prune(self, now_wall: float) -> None:
        cutoff = now_wall - self.retention_s
        if self._db is None:
            for key in [k for k in self._rows if k[0] < cutoff]:
                del self._rows[key]
            while self._events and self._events[0].get("time", 0.0) < cutoff:
                self._events.popleft()
            return
        self._db.execute("DELETE FROM pool_minutes WHERE minute < ?", (int(cutoff),))
        self._db.execute("DELETE FROM events WHERE time < ?", (cutoff,))

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            db.close()


class HistoryRecorder:
    """Samples the core into a HistoryStore on a schedule; all disk work on one thread.

    ``gpu`` are the GPU listeners' views (``EthView``): their pools are sampled beside the
    SV1 core's, each row naming its listener (``listener`` names the SV1 one), so the chart
    can stack one listener's pools: an Ethash and a SHA-256 hashrate do not add up."""

    def __init__(self, view: CoreView, events: EventLog, now: Callable[[], float], store: HistoryStore, *,
                 interval_s: float = 60.0, flush_s: float = 1.0, batch_events: int = 500,
                 gpu: Sequence[Any] = (), listener: str = "main") -> None:
        if not interval_s > 0:
            raise ValueError("history sample interval must be > 0")
        self.view = view
        self.gpu = list(gpu)
        self.listener = listener
        self.event_log = events
        self.now = now
        self.store = store
        self.interval_s = float(interval_s)
        self.flush_s = min(float(flush_s), self.interval_s)
        self.batch_events = batch_events
        self.samples = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._rows: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._prev: dict[str, tuple[int, int, int, int, float]] = {}
        self._last_sample_wall = 0.0
        self._next_sample_at = 0.0
        self._last_prune = 0.0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # events the core emitted before we started (startup), then every new one: no await
        # between the two, so none is missed or doubled
        self._events.extend(self.event_log.recent(len(self.event_log)))
        self.event_log.subscribe(self._on_event)
        now = self.now()
        self._last_sample_wall = self.view.wall(now)
        self._schedule_next(now)
        await loop.run_in_executor(self._executor, self.store.open)
        self._task = loop.create_task(self._run(), name="history-recorder")

    async def stop(self) -> None:
        """Take a last sample, write everything pending, close the store."""
        if self._closed:
            return
        self._closed = True
        try:
            self.event_log.unsubscribe(self._on_event)
        except ValueError:
            pass
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            except TimeoutError:
                log.error("history recorder did not stop within 10s")
                task.cancel()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.store.close)
        finally:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ loop side

    def _on_event(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        if len(self._events) >= self.batch_events:
            self._wake.set()

    def _schedule_next(self, now: float) -> None:
        wall = self.view.wall(now)
        next_wall = (math.floor(wall / self.interval_s) + 1) * self.interval_s
        self._next_sample_at = now + (next_wall - wall)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            timeout = max(0.0, min(self.flush_s, self._next_sample_at - loop.time()))
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self.now() >= self._next_sample_at:
                    self.sample()
                    self._schedule_next(self.now())
                await self.flush()
            except Exception:
                log.exception("history recorder step failed")
        try:
            self.sample()
            await self.flush()
        except Exception:
            log.exception("history recorder final flush failed")

    def sample(self) -> list[dict[str, Any]]:
        """Snapshot every pool: counter deltas since the last sample, gauges as they are now.

        The deltas go to the minute holding the middle of the sampled interval, so with a
        60 s interval (aligned to the wall clock) each row is exactly one minute's work."""
        now = self.now()
        wall = self.view.wall(now)
        middle = (self._last_sample_wall + wall) / 2 if self._last_sample_wall else wall
        minute = int(middle // 60) * 60
        self._last_sample_wall = wall
        rows = []
        seen = set()
        views = self.view.pools(now) + [p for g in self.gpu for p in g.pools(now)]
        for view in views:
            name = view["name"]
            seen.add(name)
            current = (view["accepted"], view["rejected_total"], view["timeouts"],
                       lost_without_timeouts(view), float(view["accepted_difficulty"]))
            prev = self._prev.get(name, (0, 0, 0, 0, 0.0))
            self._prev[name] = current
            # a counter that went down belongs to a pool that was removed and re-added
            deltas = [c - p if c >= p else c for c, p in zip(current, prev)]
            latency = view["latency_ms"]
            rows.append({
                "minute": minute, "pool": name,
                "accepted": deltas[0], "rejected": deltas[1], "timeouts": deltas[2],
                "lost": deltas[3], "accepted_difficulty": deltas[4],
                "hashrate": view["hashrate"], "rigs": view["rigs"],
                "latency_p50_ms": latency["p50"], "latency_p99_ms": latency["p99"],
                "state": view["state"],
                **{column: view["hashprice"][key] for key, column in HASHPRICE_COLUMNS.items()},
                "listener": view.get("listener", self.listener),
            })
        for name in [n for n in self._prev if n not in seen]:
            del self._prev[name]
        self._rows.extend(rows)
        self.samples += 1
        return rows

    async def flush(self) -> None:
        """Hand pending rows and events to the store (in order: one worker thread)."""
        rows, events = self._rows, self._events
        self._rows, self._events = [], []
        loop = asyncio.get_running_loop()
        if rows or events:
            try:
                await loop.run_in_executor(self._executor, self.store.write, rows, events)
            except Exception:
                log.exception("writing %d history rows and %d events failed", len(rows), len(events))
        wall = time.time()
        if wall - self._last_prune > 3600:
            self._last_prune = wall
            await loop.run_in_executor(self._executor, self.store.prune, wall)

    async def query(self, pool: str | None, minutes: float) -> dict[str, Any]:
        """Rows and events of the last ``minutes``, including events emitted a moment ago."""
        if not self._closed:
            await self.flush()
        since = self.view.wall(self.now()) - minutes * 60
        loop = asyncio.get_running_loop()
        if self._closed:
            result = {"rows": [], "events": []}
        else:
            result = await loop.run_in_executor(self._executor, self.store.query, since, pool)
        return {"pool": pool, "minutes": minutes, "since": round(since, 3),
                "interval_s": self.interval_s, "backend": self.store.backend,
                "error": self.store.error or None, **result}
