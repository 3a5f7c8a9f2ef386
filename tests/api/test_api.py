"""REST control plane: auth, pool changes without disconnects, reload, reads, errors."""

from __future__ import annotations

import json

import pytest

from proxy.sim import wait_until

from .conftest import POOL_PASSWORD, TOKEN, to_toml

pytestmark = pytest.mark.timeout(60)


async def _two_pools(api, **start):
    await api.pool("primary")
    await api.pool("backup")
    return await api.start(**start)


async def test_reads_are_open_and_status_has_version_and_wall_time(api):
    await _two_pools(api)
    status = await api.get("/api/v1/status")
    assert status["version"] and status["wall_time"] > 1e9
    assert status["active_pools"] == ["primary"]
    assert status["instance"] == "test-proxy"
    assert status["writes_enabled"] is True
    pools = (await api.get("/api/v1/pools"))["pools"]
    assert [p["name"] for p in pools] == ["primary", "backup"]
    one = await api.get("/api/v1/pools/backup")
    assert one["name"] == "backup" and one["user"] == "farm.backup"


async def test_writes_need_the_bearer_token(api):
    await _two_pools(api)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2VjcmV0"},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}):
        err = await api.call("PATCH", "/api/v1/pools/backup", 401, json={"priority": -5},
                             headers=headers)
        assert "token" in err["error"]
        await api.call("POST", "/api/v1/pools/primary/drain", 401, headers=headers)
        await api.call("POST", "/api/v1/reload", 401, headers=headers)
    assert api.view("backup")["priority"] == 1
    assert not api.view("primary")["draining"]
    assert api.active_pools() == ["primary"]
    view = await api.call("PATCH", "/api/v1/pools/backup", json={"weight": 2.5}, headers=api.auth())
    assert view["weight"] == 2.5


async def test_no_token_configured_refuses_every_write_with_403(api):
    await _two_pools(api, token="")
    assert (await api.get("/api/v1/status"))["writes_enabled"] is False
    for method, path, body in (("PATCH", "/api/v1/pools/backup", {"priority": -1}),
                               ("POST", "/api/v1/pools/primary/drain", None),
                               ("POST", "/api/v1/pools/primary/undrain", None),
                               ("POST", "/api/v1/reload", None)):
        for headers in ({}, api.auth(""), api.auth(TOKEN)):
            err = await api.call(method, path, 403, json=body, headers=headers)
            assert "api.token" in err["error"] and "disabled" in err["error"]
    assert api.view("backup")["priority"] == 1
    assert api.active_pools() == ["primary"]


async def test_patch_priority_moves_hashrate_without_disconnecting_a_rig(api):
    await _two_pools(api)
    raw = [await api.raw_rig("farm.raw1"), await api.raw_rig("farm.raw2")]
    for rig in raw:
        await rig.on_job_of("primary")
    fleet = await api.fleet(4)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == 4, 10, "on primary")

    view = await api.call("PATCH", "/api/v1/pools/backup", json={"priority": -1}, headers=api.auth())
    assert view["priority"] == -1
    status = await api.get("/api/v1/status")
    assert status["active_pools"] == ["backup"]
    for rig in raw:
        await rig.on_job_of("backup")
        assert await rig.alive()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == 4, 10, "on backup")
    assert fleet.disconnects == 0
    assert api.totals()["rigs_disconnected"] == 0
    assert (await api.get("/api/v1/pools/backup"))["rigs"] == 6
    changed = [e for e in (await api.get("/api/v1/events?kind=pool_changed"))["events"]]
    assert changed[-1]["pool"] == "backup" and changed[-1]["changes"]["priority"] == {"from": 1, "to": -1}

    # disable the backup: back to the primary, still nobody disconnected
    view = await api.call("PATCH", "/api/v1/pools/backup", json={"enabled": False}, headers=api.auth())
    assert view["enabled"] is False and view["state"] == "disabled"
    for rig in raw:
        await rig.on_job_of("primary")
        assert await rig.alive()
    assert api.totals()["rigs_disconnected"] == 0


async def test_drain_empties_a_pool_and_undrain_clears_it(api):
    await _two_pools(api)
    raw = await api.raw_rig("farm.raw1")
    fleet = await api.fleet(3)
    await wait_until(lambda: api.view("primary")["rigs"] == 4, 10, what="4 rigs on the primary")

    view = await api.call("POST", "/api/v1/pools/primary/drain", headers=api.auth())
    assert view["draining"] is True
    await wait_until(lambda: api.view("primary")["rigs"] == 0, 10, what="primary drained")
    pools = {p["name"]: p for p in (await api.get("/api/v1/pools"))["pools"]}
    assert pools["primary"]["rigs"] == 0 and pools["backup"]["rigs"] == 4
    assert pools["primary"]["active"] is False
    await raw.on_job_of("backup")
    assert await raw.alive()
    assert fleet.disconnects == 0 and api.totals()["rigs_disconnected"] == 0
    drains = (await api.get("/api/v1/events?kind=pool_drain"))["events"]
    assert drains and drains[-1]["pool"] == "primary"

    view = await api.call("POST", "/api/v1/pools/primary/undrain", headers=api.auth())
    assert view["draining"] is False


@pytest.mark.parametrize("body,field", [
    ({"priority": "1"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": None}, "priority"),
    ({"weight": -1}, "weight"),
    ({"weight": "heavy"}, "weight"),
    ({"weight": False}, "weight"),
    ({"enabled": 1}, "enabled"),
    ({"enabled": "yes"}, "enabled"),
    ({"colour": "red"}, "colour"),
    ({"priority": 0, "password": "x"}, "password"),
    ({}, "priority"),
])
async def test_bad_patch_body_is_400_naming_the_field(api, body, field):
    await _two_pools(api)
    err = await api.call("PATCH", "/api/v1/pools/backup", 400, json=body, headers=api.auth())
    assert field in err["error"]
    backup = api.view("backup")
    assert (backup["priority"], backup["weight"], backup["enabled"]) == (1, 1.0, True)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"priority"', b"{\"priority\": 1"])
async def test_patch_body_must_be_a_json_object(api, raw):
    await _two_pools(api)
    err = await api.call("PATCH", "/api/v1/pools/backup", 400, data=raw,
                         headers={**api.auth(), "Content-Type": "application/json"})
    assert "JSON" in err["error"]


async def test_unknown_pool_and_route_are_404_json(api):
    await _two_pools(api)
    err = await api.call("GET", "/api/v1/pools/nope", 404)
    assert "nope" in err["error"]
    await api.call("PATCH", "/api/v1/pools/nope", 404, json={"priority": 1}, headers=api.auth())
    await api.call("POST", "/api/v1/pools/nope/drain", 404, headers=api.auth())
    await api.call("POST", "/api/v1/pools/nope/undrain", 404, headers=api.auth())
    await api.call("GET", "/api/v1/nothing-here", 404)
    await api.call("GET", "/api/v1/rigs?pool=nope", 404)
    await api.call("DELETE", "/api/v1/pools/primary", 405, headers=api.auth())


async def test_reload_with_a_bad_file_is_400_and_changes_nothing(api):
    svc = await _two_pools(api)
    before = await api.get("/api/v1/pools")
    good = api.config_path.read_text()

    bad = json.loads(json.dumps(api.data))
    bad["pools"][1]["url"] = "http://127.0.0.1:1"
    bad["pools"][0]["priority"] = 7
    api.config_path.write_text(to_toml(bad))
    err = await api.call("POST", "/api/v1/reload", 400, headers=api.auth())
    assert "pools[1].url" in err["error"]

    api.config_path.write_text(good + "\n[[pools]]\nname = \n")
    err = await api.call("POST", "/api/v1/reload", 400, headers=api.auth())
    assert "TOML" in err["error"]

    after = await api.get("/api/v1/pools")
    assert [(p["name"], p["priority"], p["url"]) for p in after["pools"]] == \
        [(p["name"], p["priority"], p["url"]) for p in before["pools"]]
    assert api.active_pools() == ["primary"]
    assert [p.name for p in svc.config.pools] == ["primary", "backup"]


async def test_reload_with_a_good_file_adds_the_pool(api):
    await _two_pools(api)
    await api.pool("extra")
    data = json.loads(json.dumps(api.data))
    data["pools"].append(api.pool_entry("extra", 5))
    api.config_path.write_text(to_toml(data))
    result = await api.call("POST", "/api/v1/reload", headers=api.auth())
    assert result["added"] == ["extra"] and result["removed"] == []
    names = [p["name"] for p in (await api.get("/api/v1/pools"))["pools"]]
    assert names == ["primary", "backup", "extra"]
    await wait_until(lambda: api.view("extra")["state"] == "healthy", 10, what="extra healthy")
    assert (await api.get("/api/v1/pools/extra"))["priority"] == 5
    assert api.active_pools() == ["primary"]
    reloads = (await api.get("/api/v1/events?kind=config_reloaded"))["events"]
    assert reloads[-1]["added"] == ["extra"]


async def test_rigs_are_paginated_and_filtered(api):
    await _two_pools(api)
    await api.fleet(6, worker_prefix="shelf")
    await api.raw_rig("other.raw")
    page = await api.get("/api/v1/rigs?limit=2")
    assert page["total"] == 7 and len(page["rigs"]) == 2
    assert {"id", "worker", "remote", "pool", "difficulty", "hashrate", "shares"} <= set(page["rigs"][0])
    ids = [r["id"] for r in (await api.get("/api/v1/rigs"))["rigs"]]
    assert len(ids) == 7 and (await api.get("/api/v1/rigs"))["limit"] == 500
    assert [r["id"] for r in (await api.get("/api/v1/rigs?offset=5&limit=10"))["rigs"]] == ids[5:]
    await wait_until(lambda: api.view("primary")["rigs"] == 7, 10, what="all rigs placed")
    assert (await api.get("/api/v1/rigs?pool=primary"))["total"] == 7
    assert (await api.get("/api/v1/rigs?pool=backup"))["total"] == 0
    found = await api.get("/api/v1/rigs?q=SHELF.0003")
    assert found["total"] == 1 and found["rigs"][0]["worker"] == "shelf.0003"
    assert (await api.get("/api/v1/rigs?q=other&pool=primary"))["total"] == 1
    assert (await api.get("/api/v1/rigs?q=shelf&limit=4&offset=4"))["total"] == 6
    for bad in ("limit=0", "limit=5001", "offset=-1", "limit=abc"):
        err = await api.call("GET", f"/api/v1/rigs?{bad}", 400)
        assert bad.split("=")[0] in err["error"]


async def test_events_limit_and_kind(api):
    svc = await _two_pools(api)
    await api.call("POST", "/api/v1/pools/primary/drain", headers=api.auth())
    await api.call("POST", "/api/v1/pools/primary/undrain", headers=api.auth())
    events = (await api.get("/api/v1/events"))["events"]
    assert len(events) == len(svc.events.recent())
    assert all("time" in e and "kind" in e for e in events)
    assert len((await api.get("/api/v1/events?limit=1"))["events"]) == 1
    switches = (await api.get("/api/v1/events?kind=pool_switch"))["events"]
    assert switches and all(e["kind"] == "pool_switch" for e in switches)
    assert all(e.get("reason") for e in switches)
    after = (await api.get(f"/api/v1/events?after={events[-2]['seq']}"))["events"]
    assert [e["seq"] for e in after] == [events[-1]["seq"]]
    await api.call("GET", "/api/v1/events?limit=0", 400)


async def test_rentals_off_without_a_rental_section_and_dashboard_page(api):
    await _two_pools(api)
    rentals = await api.get("/api/v1/rentals")
    assert rentals["orders"] == [] and rentals["budget_left_btc"] is None
    assert rentals["enabled"] is False and rentals["provider"] is None and "[rental]" in rentals["note"]
    assert api.http is not None
    async with api.http.get("/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        html = await resp.text()
    assert "dashboard" in html.lower() and "/api/v1/pools" in html and "/metrics" in html
    assert "http://" not in html and "https://" not in html  # no external assets


async def test_a_failing_handler_answers_500_json_and_the_api_keeps_serving(api, monkeypatch):
    await _two_pools(api)
    from proxy.core.view import CoreView

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(CoreView, "status", boom)
    err = await api.call("GET", "/api/v1/status", 500)
    assert "internal error" in err["error"] and "kaboom" not in err["error"]
    assert (await api.get("/api/v1/pools"))["pools"]


async def test_reload_error_from_the_core_is_500_and_logged(api, monkeypatch):
    svc = await _two_pools(api)

    def broken(path=None):
        raise KeyError("bug")

    monkeypatch.setattr(svc, "reload", broken)
    await api.call("POST", "/api/v1/reload", 500, headers=api.auth())
    assert (await api.get("/api/v1/status"))["active_pools"] == ["primary"]


async def test_secrets_never_leave_the_api(api, caplog):
    caplog.set_level("DEBUG")
    pool = await api.pool("primary")
    # a pool URL carrying credentials is shown without the password (and dialed without them)
    await api.start(pool_extra={"primary": {
        "url": f"stratum+tcp://farm:{POOL_PASSWORD}@127.0.0.1:{pool.port}"}})
    await api.fleet(2)
    await wait_until(lambda: pool.accepted >= 2, 10, what="shares through the pool")
    outputs = []
    for path in ("/api/v1/status", "/api/v1/pools", "/api/v1/pools/primary", "/api/v1/rigs",
                 "/api/v1/events", "/api/v1/history", "/api/v1/rentals", "/metrics", "/"):
        assert api.http is not None
        async with api.http.get(path) as resp:
            assert resp.status == 200, path
            outputs.append(await resp.text())
    text = "\n".join(outputs)
    assert POOL_PASSWORD not in text
    assert TOKEN not in text.replace("secrets", "")
    pool = await api.get("/api/v1/pools/primary")
    assert "password" not in pool and pool["url"].startswith("stratum+tcp://farm:***@127.0.0.1:")
    # nor the log: the proxy logged while dialing, authorizing and serving the API
    assert len(caplog.records) > 5
    assert POOL_PASSWORD not in caplog.text and TOKEN not in caplog.text.replace("secrets", "")


async def test_healthz_for_the_load_balancer(api):
    await api.pool("primary")
    await api.start()
    health = await api.get("/healthz")
    assert health["ok"] is True and health["pool_connections_ready"] >= 1
    # SIGTERM sets this before the rig port closes: HAProxy stops sending rigs here
    api.svc.stopping = True
    answer = await api.call("GET", "/healthz", 503)
    assert answer["ok"] is False and answer["reason"] == "stopping"
