"""History rows name their rig port (GPU pools beside the SV1 ones); a database written before
that column existed is migrated in place, its rows kept with no listener."""

from __future__ import annotations

import sqlite3

from proxy.store.history import COLUMNS, HistoryStore


def _row(minute: int, pool: str, listener: str | None) -> dict:
    return {"minute": minute, "pool": pool, "accepted": 2, "rejected": 0, "timeouts": 0, "lost": 0,
            "accepted_difficulty": 1.0, "hashrate": 5e9, "rigs": 4, "latency_p50_ms": 1.0,
            "latency_p99_ms": 2.0, "state": "healthy", "hashprice": None, "network_difficulty": None,
            "block_value_btc": None, "listener": listener}


def test_a_schema_2_database_gains_the_listener_column(tmp_path):
    path = str(tmp_path / "old.db")
    old_columns = [c for c in COLUMNS if c != "listener"]
    with sqlite3.connect(path) as db:  # the table as schema 2 made it, with one row
        db.execute("CREATE TABLE pool_minutes (minute INTEGER NOT NULL, pool TEXT NOT NULL, "
                   "accepted INTEGER, rejected INTEGER, timeouts INTEGER, lost INTEGER, "
                   "accepted_difficulty REAL, hashrate REAL, rigs INTEGER, latency_p50_ms REAL, "
                   "latency_p99_ms REAL, state TEXT, hashprice REAL, network_difficulty REAL, "
                   "block_value_btc REAL, PRIMARY KEY (minute, pool)) WITHOUT ROWID")
        db.execute(f"INSERT INTO pool_minutes ({', '.join(old_columns)}) VALUES "
                   f"({', '.join('?' for _ in old_columns)})",
                   [_row(600, "asic-a", None)[c] for c in old_columns])
    store = HistoryStore(path).open()
    assert store.backend == "sqlite" and not store.error
    store.write([_row(660, "etc-a", "gpu"), _row(660, "asic-a", "main")], [])
    store.close()

    rows = HistoryStore(path).open().query(since=0)["rows"]
    assert [(r["minute"], r["pool"], r["listener"]) for r in rows] == [
        (600, "asic-a", None), (660, "asic-a", "main"), (660, "etc-a", "gpu")]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_memory_history_keeps_the_listener_too():
    store = HistoryStore("").open()
    store.write([_row(600, "etc-a", "gpu")], [])
    store.write([_row(600, "etc-a", "gpu")], [])
    (row,) = store.query(since=0)["rows"]
    assert row["listener"] == "gpu" and row["accepted"] == 4
