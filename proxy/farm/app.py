"""The farm API: the instances' REST shape for the whole farm, each row with its instance.

The dashboard served here is the proxy's own page; it reads the same routes, so pointing a
browser at the control plane shows the farm.  Reads are served from the last poll (status,
pools, events) or fetched from every instance on demand (rigs, history); writes go to
every instance (see ``FarmService.apply``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import __version__
from ..api import app as proxy_api
from ..api.app import ApiError, error_middleware, json_response, validate_patch
from ..api.auth import check_write
from ..api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..api.metrics import MetricsWriter, render_rental
from .service import FarmService, InstanceUnreachable
from .view import farm_events, farm_pools, merge_history, merge_rig_pages

log = logging.getLogger("proxy.farm.api")

FARM: web.AppKey[FarmService] = web.AppKey("farm", FarmService)
RIGS_MAX_WINDOW = 5000  # an instance gives at most this many rows per request


def _farm(request: web.Request) -> FarmService:
    return request.app[FARM]


def _require_write(request: web.Request) -> None:
    check_write(request, _farm(request).config.farm.token)


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    return proxy_api.int_param(request, name, default, lo, hi)


def _known_pool(farm: FarmService, name: str) -> None:
    if not any(p["name"] == name for p in farm_pools(farm.instances)):
        up = sum(1 for i in farm.instances if i.up)
        raise ApiError(404, f"unknown pool {name!r}" + ("" if up else " (no instance is answering)"))


async def get_health(request: web.Request) -> web.Response:
    farm = _farm(request)
    up = sum(1 for i in farm.instances if i.up)
    return json_response({"ok": True, "instances_up": up, "instances_total": len(farm.instances)})


async def get_status(request: web.Request) -> web.Response:
    view = _farm(request).status()
    view["version"] = __version__
    return json_response(view)


async def get_instances(request: web.Request) -> web.Response:
    farm = _farm(request)
    return json_response({"instances": [i.summary(farm.now()) for i in farm.instances]})


async def get_pools(request: web.Request) -> web.Response:
    return json_response({"pools": farm_pools(_farm(request).instances)})


async def get_pool(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for row in farm_pools(_farm(request).instances):
        if row["name"] == name:
            return json_response(row)
    raise ApiError(404, f"unknown pool {name!r}")


async def get_events(request: web.Request) -> web.Response:
    farm = _farm(request)
    limit = _int(request, "limit", proxy_api.EVENTS_DEFAULT_LIMIT, 1, proxy_api.EVENTS_MAX_LIMIT)
    kind = request.query.get("kind") or None
    own = [{**e, "instance": e.get("instance", farm.config.farm.name)} for e in farm.events.recent(2000)]
    return json_response({"events": farm_events(farm.instances, own, limit, kind)})


async def _from_every_instance(farm: FarmService, path: str,
                               params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    answers = []
    for inst in farm.instances:
        if not inst.up:
            continue
        try:
            status, data = await farm.request(inst.name, "GET", path, params=params)
        except InstanceUnreachable as exc:
            log.info("farm: %s %s: %s", inst.name, path, exc)
            continue
        if status == 200 and isinstance(data, dict):
            answers.append((inst.name, data))
        elif status == 400 and isinstance(data, dict):
            raise ApiError(400, str(data.get("error")))
    return answers


async def get_rigs(request: web.Request) -> web.Response:
    farm = _farm(request)
    offset = _int(request, "offset", 0, 0, RIGS_MAX_WINDOW - 1)
    limit = _int(request, "limit", proxy_api.RIGS_DEFAULT_LIMIT, 1, proxy_api.RIGS_MAX_LIMIT)
    window = min(offset + limit, RIGS_MAX_WINDOW)
    params = {k: v for k in ("pool", "q", "sort") if (v := request.query.get(k))}
    params.update(offset=0, limit=window)
    pages = await _from_every_instance(farm, "/api/v1/rigs", params)
    merged = merge_rig_pages(pages, offset, limit, params.get("sort"))
    merged.update(pool=params.get("pool"), q=params.get("q"))
    return json_response(merged)


async def get_history(request: web.Request) -> web.Response:
    farm = _farm(request)
    params = {k: v for k in ("pool", "minutes") if (v := request.query.get(k))}
    answers = await _from_every_instance(farm, "/api/v1/history", params)
    return json_response(merge_history(answers))


async def get_rentals(request: web.Request) -> web.Response:
    farm = _farm(request)
    if farm.etcd is not None:  # the instances' elected leader rents; it publishes its view
        return json_response(await farm.leader_rentals())
    if farm.rental is None:
        return json_response({"enabled": False, "provider": None, "orders": [],
                              "note": "no [rental] section in the farm config"})
    return json_response({**farm.rental.view(), "instances": [i.name for i in farm.instances if i.up]})


async def patch_pool(request: web.Request) -> web.Response:
    _require_write(request)
    farm = _farm(request)
    name = request.match_info["name"]
    body = validate_patch(await proxy_api.json_object(request))
    _known_pool(farm, name)
    if farm.etcd is not None:
        return await _etcd_change(farm, name, body)
    return _change_response(await farm.apply("PATCH", f"/api/v1/pools/{name}", body))


async def drain_pool(request: web.Request) -> web.Response:
    return await _pool_action(request, "drain")


async def undrain_pool(request: web.Request) -> web.Response:
    return await _pool_action(request, "undrain")


async def _pool_action(request: web.Request, action: str) -> web.Response:
    _require_write(request)
    farm = _farm(request)
    name = request.match_info["name"]
    _known_pool(farm, name)
    if farm.etcd is not None:
        return await _etcd_change(farm, name, {"drained": action == "drain"})
    return _change_response(await farm.apply("POST", f"/api/v1/pools/{name}/{action}", None))


async def _etcd_change(farm: FarmService, name: str, changes: dict[str, Any]) -> web.Response:
    """With [cluster]: one etcd transaction (200), or 503 with etcd's reason and no change."""
    from ..cluster.etcd import EtcdError

    try:
        return json_response(await farm.write_setting(name, changes))
    except EtcdError as exc:
        raise ApiError(503, f"etcd did not take the change ({exc}); nothing was changed") from None


async def reload_config(request: web.Request) -> web.Response:
    """Every instance re-reads its own file (the farm's file lists instances only)."""
    _require_write(request)
    return _change_response(await _farm(request).apply("POST", "/api/v1/reload", None))


def _change_response(result: dict[str, Any]) -> web.Response:
    """200 when every instance took it; 202 when some will get it on retry; the instances'
    own error (400) when every instance refused it the same way."""
    per = result["instances"]
    if result["refused"] and not result["applied"] and not result["queued_for_retry"]:
        errors = {r.get("error") for r in per.values()}
        message = errors.pop() if len(errors) == 1 else "; ".join(
            f"{n}: {r.get('error')}" for n, r in per.items())
        statuses = {r.get("status") for r in per.values()}
        status = statuses.pop() if len(statuses) == 1 else 400
        return json_response({"error": message, "status": status, **result}, status)
    ok = not result["refused"] and not result["queued_for_retry"]
    return json_response({"ok": ok, **result}, 200 if ok else 202)


async def get_metrics(request: web.Request) -> web.Response:
    farm = _farm(request)
    status = farm.status()
    w = MetricsWriter(farm=farm.config.farm.name)
    w.metric("farm_instances_up", "gauge", "Instances that answered the last poll.", status["instances_up"])
    w.family("farm_instance_up", "gauge", "1 when this instance answered the last poll.")
    for inst in status["instances"]:
        w.sample("farm_instance_up", int(inst["up"]), instance=inst["name"])
    w.metric("farm_hashrate_hashes_per_second", "gauge", "Delivered hashrate, instances that answered.",
             float(status["hashrate"]))
    w.metric("farm_rigs_connected", "gauge", "Rigs connected to the instances that answered.",
             status["rigs_connected"])
    w.metric("farm_changes_pending", "gauge", "Changes waiting for an instance to take them.",
             len(status["changes_pending"]))
    if farm.rental is not None:  # the farm-wide backfill: same names as one proxy's
        render_rental(w, farm.rental)
    return web.Response(body=w.text().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def create_farm_app(farm: FarmService) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[FARM] = farm
    proxy_api.add_api_routes(app.router, proxy_api.RestHandlers(
        index=proxy_api.index, get_health=get_health, get_status=get_status, get_pools=get_pools,
        get_pool=get_pool, patch_pool=patch_pool, drain_pool=drain_pool, undrain_pool=undrain_pool,
        get_rigs=get_rigs, get_events=get_events, get_history=get_history, get_rentals=get_rentals,
        reload_config=reload_config, get_metrics=get_metrics))
    app.router.add_get("/api/v1/instances", get_instances)
    return app


async def start_farm_api(farm: FarmService) -> tuple[web.AppRunner, int]:
    runner, host, bound = await proxy_api.serve(create_farm_app(farm), farm.config.farm.listen, "farm.listen")
    log.info("farm API listening on http://%s:%d/", host, bound)
    return runner, bound
