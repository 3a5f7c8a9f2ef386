"""History: per-minute rows and events in SQLite (WAL), or in memory; served by /api/v1/history."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.api.app import RECORDER
from proxy.sim import wait_until
from proxy.store.history import HistoryStore

pytestmark = pytest.mark.timeout(60)


def _row(minute: int, pool: str, accepted: int, **kw) -> dict:
    return {"minute": minute, "pool": pool, "accepted": accepted, "rejected": kw.get("rejected", 0),
            "timeouts": 0, "lost": 0, "accepted_difficulty": accepted * 0.5,
            "hashrate": kw.get("hashrate", 1e6), "rigs": kw.get("rigs", 3),
            "latency_p50_ms": kw.get("p50"), "latency_p99_ms": kw.get("p99"),
            "state": kw.get("state", "healthy")}


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_rows_of_one_minute_add_up(tmp_path, backend):
    store = HistoryStore(str(tmp_path / "h.db") if backend == "sqlite" else "").open()
    assert store.backend == backend
    store.write([_row(600, "a", 3, p50=1.5, p99=9.0), _row(600, "b", 1)], [])
    store.write([_row(600, "a", 4, rigs=5, state="degraded"), _row(660, "a", 2)], [])
    rows = store.query(since=600)["rows"]
    assert [(r["minute"], r["pool"], r["accepted"]) for r in rows] == [(600, "a", 7), (600, "b", 1),
                                                                        (660, "a", 2)]
    first = rows[0]
    assert first["rigs"] == 5 and first["state"] == "degraded"  # gauges: the latest value
    assert first["latency_p50_ms"] == 1.5 and first["accepted_difficulty"] == 3.5  # null keeps the last
    # a row is in range when its minute overlaps it
    assert [r["minute"] for r in store.query(since=659.9)["rows"]] == [600, 600, 660]
    assert [r["minute"] for r in store.query(since=660)["rows"]] == [660]
    assert [r["pool"] for r in store.query(since=0, pool="b")["rows"]] == ["b"]
    store.close()


def test_history_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "sub" / "history.db")
    store = HistoryStore(path).open()
    events = [{"seq": 1, "time": 1000.5, "kind": "pool_switch", "reason": "startup", "to_pools": ["a"]},
              {"seq": 2, "time": 1010.0, "kind": "pool_health", "pool": "a", "state": "down"}]
    store.write([_row(960, "a", 10), _row(1020, "a", 5)], events)
    store.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    again = HistoryStore(path).open()
    got = again.query(since=900)
    assert [(r["minute"], r["accepted"]) for r in got["rows"]] == [(960, 10), (1020, 5)]
    assert got["events"] == events
    assert again.query(since=1005)["events"] == events[1:]
    again.write([_row(1020, "a", 1)], [])
    again.close()
    assert HistoryStore(path).open().query(since=1020)["rows"][0]["accepted"] == 6


def test_unwritable_database_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = HistoryStore(str(blocker / "history.db")).open()
    assert store.backend == "memory" and "cannot open" in store.error
    store.write([_row(60, "a", 1)], [])
    assert store.query(since=0)["rows"][0]["accepted"] == 1


def test_prune_drops_old_rows(tmp_path):
    store = HistoryStore(str(tmp_path / "h.db"), retention_days=1).open()
    store.write([_row(0, "a", 1), _row(86400 * 2, "a", 2)],
                [{"time": 5.0, "kind": "old"}, {"time": 86400 * 2.0, "kind": "new"}])
    store.prune(86400 * 2 + 30)
    got = store.query(since=0)
    assert [r["accepted"] for r in got["rows"]] == [2]
    assert [e["kind"] for e in got["events"]] == ["new"]


async def _history(api, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await api.get(f"/api/v1/history?{query}")


async def test_recorder_writes_rows_and_events_and_flushes_on_cleanup(api, tmp_path):
    db = str(tmp_path / "history.db")
    await api.pool("primary")
    await api.pool("backup")
    svc = await api.start(history_db=db, history_interval=0.1)
    fleet = await api.fleet(3)

    recorder = svc.api_runner.app[RECORDER]
    await wait_until(lambda: api.view("primary")["accepted"] >= 10, 20, what="10 shares accepted")
    taken = recorder.samples
    await wait_until(lambda: recorder.samples >= taken + 2, 5, what="a sample after those shares")
    assert sum(r["accepted"] for r in (await _history(api, pool="primary", minutes=5))["rows"]) >= 10
    got = await _history(api, minutes=5)
    assert got["backend"] == "sqlite" and got["interval_s"] == 0.1
    assert {r["pool"] for r in got["rows"]} == {"primary", "backup"}
    row = next(r for r in reversed(got["rows"]) if r["pool"] == "primary")
    assert row["state"] == "healthy" and row["rigs"] == 3 and row["minute"] % 60 == 0
    assert any(e["kind"] == "pool_switch" for e in got["events"]), got["events"]

    # an event emitted just now is already queryable (pending events are flushed first)
    await api.call("POST", "/api/v1/pools/backup/drain", headers=api.auth())
    got = await _history(api, minutes=1)
    assert got["events"][-1]["kind"] == "pool_drain" and got["events"][-1]["pool"] == "backup"

    await fleet.drain(10)
    await wait_until(lambda: api.view("primary")["in_flight"] == 0, 5, what="no share in flight")
    final = api.view("primary")["accepted"]
    await svc.api_runner.cleanup()  # stops the recorder: last sample + flush + close
    svc.api_runner = None
    assert svc.events.listener_count == 0  # the recorder left the event bus

    store = HistoryStore(db).open()
    rows = store.query(since=0)["rows"]
    assert sum(r["accepted"] for r in rows if r["pool"] == "primary") == final
    kinds = [e["kind"] for e in store.query(since=0)["events"]]
    assert "pool_switch" in kinds and "pool_drain" in kinds
    store.close()


async def test_history_without_a_database_answers_from_memory(api):
    await api.pool("primary")
    svc = await api.start(history_db="", history_interval=0.05)
    await api.fleet(2)
    await wait_until(lambda: api.view("primary")["accepted"] >= 5, 20, what="5 shares accepted")

    recorder = svc.api_runner.app[RECORDER]
    taken = recorder.samples
    await wait_until(lambda: recorder.samples >= taken + 2, 5, what="a sample after those shares")
    got = await _history(api, pool="primary")
    assert got["backend"] == "memory"
    assert sum(r["accepted"] for r in got["rows"]) >= 5
    got = await _history(api, pool="primary", minutes=1)
    assert got["pool"] == "primary" and got["minutes"] == 1 and got["error"] is None


async def test_history_parameters_are_checked(api):
    await api.pool("primary")
    await api.start()
    for bad in ("minutes=0", "minutes=abc", "minutes=99999999", "pool=" + "x" * 65):
        err = await api.call("GET", f"/api/v1/history?{bad}", 400)
        assert bad.split("=")[0] in err["error"]
    got = await _history(api, pool="no-such-pool-ever")
    assert got["rows"] == []


def test_a_schema_1_database_gains_the_hashprice_columns(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as db:  # the table as schema 1 made it
        db.execute("""CREATE TABLE pool_minutes (minute INTEGER NOT NULL, pool TEXT NOT NULL,
            accepted INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
            timeouts INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0,
            accepted_difficulty REAL NOT NULL DEFAULT 0, hashrate REAL, rigs INTEGER,
            latency_p50_ms REAL, latency_p99_ms REAL, state TEXT,
            PRIMARY KEY (minute, pool)) WITHOUT ROWID""")
        db.execute("INSERT INTO pool_minutes (minute, pool, accepted) VALUES (60, 'a', 4)")
    store = HistoryStore(path).open()
    assert store.backend == "sqlite" and not store.error
    store.write([{**_row(120, "a", 1), "hashprice": 0.0005, "network_difficulty": 1.5e14,
                  "block_value_btc": 3.2}], [])
    old, new = store.query(since=0)["rows"]
    assert (old["accepted"], old["hashprice"]) == (4, None)
    assert (new["hashprice"], new["network_difficulty"], new["block_value_btc"]) == (0.0005, 1.5e14, 3.2)
    store.close()


async def test_the_pools_hashprice_is_recorded_per_minute(api):
    pool = await api.pool("primary", nbits=0x1703A30C, coinbase_value_sat=312_500_000)
    svc = await api.start(history_db="", history_interval=0.05)
    recorder = svc.api_runner.app[RECORDER]
    await wait_until(lambda: api.view("primary")["hashprice"]["btc_per_ph_day"] is not None, 10,
                     what="the pool's hashprice")
    first = api.view("primary")["hashprice"]
    taken = recorder.samples
    await wait_until(lambda: recorder.samples >= taken + 2, 5, what="a sample with the hashprice")
    row = (await _history(api, pool="primary", minutes=5))["rows"][-1]
    assert row["hashprice"] == first["btc_per_ph_day"] and row["block_value_btc"] == 3.125
    assert row["network_difficulty"] == first["network_difficulty"]
    pool.set_template(coinbase_value_sat=625_000_000)  # twice the value
    await wait_until(lambda: api.view("primary")["hashprice"]["block_value_btc"] == 6.25, 10,
                     what="the new template's value")
    taken = recorder.samples
    await wait_until(lambda: recorder.samples >= taken + 2, 5, what="a sample with the new value")
    row = (await _history(api, pool="primary", minutes=5))["rows"][-1]
    assert row["hashprice"] == pytest.approx(2 * first["btc_per_ph_day"])
