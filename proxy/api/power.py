"""REST for the power-aware backfill: ``GET /api/v1/power`` (the UPSes, what is at risk,
the curtailments, what is rented), ``POST /api/v1/power/curtailments`` and
``DELETE /api/v1/power/curtailments/{id}`` (token; with ``[cluster]`` they are stored in
etcd and every instance applies them, ``proxy.cluster.curtail``).  Kept apart from ``app.py``'s route table
(which the farm control plane shares) because power is per proxy."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..cluster.etcd import EtcdError
from ..power.monitor import CurtailmentError


def _monitor(request: web.Request) -> Any:
    from .app import SERVICE

    return getattr(request.app[SERVICE], "power", None)


def _farm(request: web.Request) -> Any:
    """The farm's curtailments in etcd (``proxy.cluster.curtail``) with ``[cluster]``, else None."""
    from .app import SERVICE

    node = getattr(request.app[SERVICE], "cluster", None)
    return node.curtailments if node is not None else None


def _rented(request: web.Request) -> dict[str, Any]:
    from .app import SERVICE

    rental = getattr(request.app[SERVICE], "rental", None)
    if rental is None:
        return {"enabled": False}
    view = rental.view()
    decision = view.get("last_decision") or {}
    return {"enabled": True, "state": view["state"], "active_order": view["active_order"],
            "ordered_hs": view["ordered_hs"], "rented_hs": view["rented_hs"],
            "decision": decision.get("code"), "reason": decision.get("reason")}


async def get_power(request: web.Request) -> web.Response:
    from .app import json_response

    monitor = _monitor(request)
    if monitor is None:
        return json_response({"enabled": False, "ups": [], "curtailments": [],
                              "note": "no [power] section in the config: no UPS is read and no "
                                      "curtailment is planned (see the README, Power-aware backfill)"})
    return json_response({"enabled": True, **monitor.view(), "rental": _rented(request)})


async def post_curtailment(request: web.Request) -> web.Response:
    from .app import ApiError, _require_write, json_object, json_response

    _require_write(request)
    monitor = _monitor(request)
    if monitor is None:
        raise ApiError(409, "power: no [power] section in the config; add one and restart")
    body = await json_object(request)
    farm = _farm(request)
    try:
        if farm is not None:  # in etcd: every instance of the farm applies it
            return json_response(await farm.add(body), status=201)
        return json_response(monitor.add_curtailment(body), status=201)
    except CurtailmentError as exc:
        raise ApiError(400, str(exc)) from None
    except EtcdError as exc:
        from ..cluster.curtail import refused

        raise ApiError(503, refused(exc)) from None


async def delete_curtailment(request: web.Request) -> web.Response:
    from .app import ApiError, _require_write, json_response

    _require_write(request)
    monitor = _monitor(request)
    cid = request.match_info["id"]
    farm = _farm(request)
    if monitor is not None and farm is not None:
        try:
            if await farm.remove(cid):
                return json_response({"removed": cid})
        except EtcdError as exc:
            from ..cluster.curtail import refused

            raise ApiError(503, refused(exc)) from None
    if monitor is None or not monitor.remove_curtailment(cid):
        raise ApiError(404, f"id: no curtailment {cid[:40]!r} added through the API "
                            "(config windows are removed by editing the file)")
    return json_response({"removed": cid})


def add_power_routes(router: web.UrlDispatcher) -> None:
    router.add_route("GET", "/api/v1/power", get_power)
    router.add_route("POST", "/api/v1/power/curtailments", post_curtailment)
    router.add_route("DELETE", "/api/v1/power/curtailments/{id}", delete_curtailment)
