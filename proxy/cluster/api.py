"""The farm-wide routes every instance of a ``[cluster]`` serves, and the writes through etcd.

* ``GET /api/v1/cluster``: this instance's standing (etcd reachable, the leader, its lease),
  the farm's settings and its members.
* ``GET /api/v1/farm/status``, ``/api/v1/farm/pools``: the members' published summaries,
  summed with the rules of ``proxy.farm.view`` (the worst state of a pool with the instance it
  comes from, each instance's own state).
* ``GET /api/v1/farm/power``: the members' published power figures summed as the leader's
  backfill controller plans with them (``proxy.cluster.power``): rent-now, hold, per UPS and
  curtailment the at-risk hashrate with each instance's part, the instances whose figures
  are unknown (stale).
* ``GET /api/v1/farm/rigs``, ``/api/v1/farm/events``: read from every registered member's
  API and merged (each row with its ``instance``).
* ``GET /api/v1/rentals`` on an instance that does not lead: the leader's view, read from etcd.

A pool write (PATCH, drain, undrain) is one etcd transaction; when etcd does not answer the
API says 503 with the reason and nothing changed anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from ..farm.view import InstanceState, farm_events, farm_pools, farm_status, merge_rig_pages
from .etcd import EtcdError

log = logging.getLogger("proxy.cluster.api")

FETCH_TIMEOUT_S = 2.0


def _node(request: web.Request) -> Any:
    from ..api.app import SERVICE, ApiError

    node = getattr(request.app[SERVICE], "cluster", None)
    if node is None:
        raise ApiError(404, "this instance has no [cluster] section")
    return node


async def write_setting(service: Any, name: str, changes: dict[str, Any]) -> None:
    """The pool setting through etcd (the watch applies it everywhere), or 503 and nothing."""
    from ..api.app import ApiError

    try:
        await service.cluster.settings.write(name, changes)
    except EtcdError as exc:
        raise ApiError(503, f"etcd did not take the change ({exc}); nothing was changed on any "
                            "instance, try again when etcd answers") from None


def instances_of(node: Any) -> list[InstanceState]:
    """The registered members as the farm view's ``InstanceState`` (every one is up: a member
    whose lease lapsed is no longer registered)."""
    return [InstanceState(name, str(m.get("api", "")), up=True, last_ok=m.get("time"),
                          status={**(m.get("status") or {}), "hashprice": m.get("hashprice")},
                          pools=list(m.get("pools") or []))
            for name, m in sorted(node.members.items())]


def _json(data: Any) -> web.Response:
    from ..api.app import json_response

    return json_response(data)


async def get_cluster(request: web.Request) -> web.Response:
    return _json(_node(request).view())


async def get_farm_status(request: web.Request) -> web.Response:
    node = _node(request)
    svc = node.service
    view = farm_status(node.config.farm, instances_of(node), time.time(), node.started,
                       bool(svc.config.api.token))
    view.update(leader=node.leader, etcd_ok=node.etcd_ok, etcd_error=node.etcd_error or None)
    return _json(view)


async def get_farm_pools(request: web.Request) -> web.Response:
    return _json({"pools": farm_pools(instances_of(_node(request)))})


async def get_farm_power(request: web.Request) -> web.Response:
    node = _node(request)
    _, view = node.power.settled(*node.power.compute())
    return _json({**view, "leader": node.leader, "served_by": node.name})


async def _from_members(node: Any, path: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    async def one(name: str, api: str) -> tuple[str, dict[str, Any]] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as http, \
                    http.get(f"{api}{path}", params=params) as resp:
                if resp.status == 200:
                    return name, await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.info("farm view: %s %s: %s", name, path, exc)
        return None

    answers = await asyncio.gather(*(one(n, str(m.get("api"))) for n, m in sorted(node.members.items())))
    return [a for a in answers if a is not None]


async def get_farm_rigs(request: web.Request) -> web.Response:
    from ..api.app import RIGS_DEFAULT_LIMIT, RIGS_MAX_LIMIT, int_param

    node = _node(request)
    offset = int_param(request, "offset", 0, 0, 4999)
    limit = int_param(request, "limit", RIGS_DEFAULT_LIMIT, 1, RIGS_MAX_LIMIT)
    params: dict[str, Any] = {k: v for k in ("pool", "q", "sort") if (v := request.query.get(k))}
    params.update(offset=0, limit=min(offset + limit, RIGS_MAX_LIMIT))
    pages = await _from_members(node, "/api/v1/rigs", params)
    return _json(merge_rig_pages(pages, offset, limit, params.get("sort")))


async def get_farm_events(request: web.Request) -> web.Response:
    from ..api.app import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT, int_param

    node = _node(request)
    limit = int_param(request, "limit", EVENTS_DEFAULT_LIMIT, 1, EVENTS_MAX_LIMIT)
    kind = request.query.get("kind") or None
    params = {"limit": limit, **({"kind": kind} if kind else {})}
    answers = await _from_members(node, "/api/v1/events", params)
    instances = [InstanceState(name, "", up=True, events=[{**e, "instance": name}
                                                          for e in a.get("events", [])])
                 for name, a in answers]
    return _json({"events": farm_events(instances, [], limit, kind)})


def rentals_elsewhere(node: Any) -> dict[str, Any]:
    """``/api/v1/rentals`` on an instance that does not lead: the leader's published view."""
    if node.rental_view is not None:
        return {**node.rental_view, "served_by": node.name}
    return {"enabled": True, "state": "no_leader", "orders": [], "leader": node.leader,
            "note": "no instance leads the backfill controller now (etcd unreachable, or an election "
                    "in progress)"}


def add_cluster_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/cluster", get_cluster)
    router.add_get("/api/v1/farm/status", get_farm_status)
    router.add_get("/api/v1/farm/pools", get_farm_pools)
    router.add_get("/api/v1/farm/power", get_farm_power)
    router.add_get("/api/v1/farm/rigs", get_farm_rigs)
    router.add_get("/api/v1/farm/events", get_farm_events)

