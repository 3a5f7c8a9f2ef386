"""The API's view of GPU listeners (EthereumStratum/1.0.0): their pools answer the same
pool routes as the SV1 ones (GET, PATCH, drain, undrain, /metrics), and
``GET /api/v1/listeners`` lists every rig port with its protocol, rigs, active pools and
counters."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.eth_view import EthView


def gpu_views(service: Any) -> list[EthView]:
    """The running GPU listeners' views, in config order."""
    return [g.view for g in getattr(service, "gpu", {}).values() if g.view is not None]


def gpu_pool(service: Any, name: str) -> tuple[Any, EthView] | None:
    """(operator, view) of the GPU listener that serves pool ``name``, or None."""
    for g in getattr(service, "gpu", {}).values():
        if g.view is not None and g.view.has_pool(name):
            return g.core.operator, g.view
    return None


def sv1_listener(service: Any) -> str:
    """The name of the SV1 rig port ("main" unless [proxy] speaks a GPU protocol; "" if none)."""
    from ..listeners import resolve

    return next((x.name for x in resolve(service.config) if x.protocol == "sv1"), "")


async def get_listeners(request: web.Request) -> web.Response:
    """Every rig port: the SV1 one (if any) and each GPU listener."""
    from .app import SERVICE, json_response  # app imports this module: imported late

    svc = request.app[SERVICE]
    now = svc.now()
    out: list[dict[str, Any]] = []
    view = svc.view
    gpu = getattr(svc, "gpu", {})
    sv1 = sv1_listener(svc)
    for name, port in getattr(svc, "ports", {}).items():
        if name == sv1 and view is not None:  # the SV1 port
            out.append({"name": name, "protocol": "sv1", "port": port, "rigs": view.rig_count(),
                        "active_pools": view.active_pools(), "counters": view.totals(),
                        "pools": view.pool_names()})
    for g in gpu.values():  # each GPU core (both halves of an "eth" port share its port)
        if g.view is not None:
            summary = g.view.summary(now)
            out.append({**summary, "port": g.port, "pools": [p["name"] for p in summary["pools"]]})
    return json_response({"listeners": out})


async def get_listener_rigs(request: web.Request) -> web.Response:
    """A GPU listener's rigs (the SV1 rigs are at /api/v1/rigs)."""
    from .app import SERVICE, ApiError, json_response

    gpu = getattr(request.app[SERVICE], "gpu", {}).get(request.match_info["name"])
    if gpu is None or gpu.view is None:
        raise ApiError(404, f"no GPU listener named {request.match_info['name'][:64]!r}")
    return json_response({"listener": gpu.name, "rigs": gpu.view.rigs()})


def add_listener_routes(router: web.UrlDispatcher) -> None:
    """The listener routes (read-only)."""
    router.add_get("/api/v1/listeners", get_listeners)
    router.add_get("/api/v1/listeners/{name}/rigs", get_listener_rigs)
