"""The aiohttp control plane: REST under /api/v1, Prometheus at /metrics, the dashboard at /.

Reads are open; writes need ``Authorization: Bearer <api.token>`` and are refused outright
(403) while no token is configured.  Every number comes from the core's read-only view
(``proxy.core.view``) so the API, the metrics and the demo agree.  A handler that fails
answers 500 with JSON and is logged; it never takes the proxy down.  ``start_api`` also
starts the history recorder (see ``proxy.store.history``), which ``runner.cleanup()`` stops
after a final flush.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import msgspec
from aiohttp import web

from .. import __version__
from ..config import ConfigError, parse_address
from ..core.view import CoreView, UnknownPool, UnknownSortKey
from ..store.history import HistoryRecorder, HistoryStore
from .auth import AuthError, check_write
from .dashboard import INDEX_HEADERS, INDEX_HTML
from .listeners import add_listener_routes, gpu_pool, gpu_views, sv1_listener
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .power import add_power_routes

log = logging.getLogger("proxy.api")

SERVICE: web.AppKey[Any] = web.AppKey("service", object)
RECORDER: web.AppKey[HistoryRecorder | None] = web.AppKey("recorder", object)

DEFAULT_HISTORY_INTERVAL_S = 60.0
RIGS_DEFAULT_LIMIT = 500
RIGS_MAX_LIMIT = 5000
EVENTS_DEFAULT_LIMIT = 200
EVENTS_MAX_LIMIT = 2000
HISTORY_DEFAULT_MINUTES = 60
HISTORY_MAX_MINUTES = 60 * 24 * 30
PATCH_FIELDS = ("priority", "weight", "enabled")
MAX_PRIORITY = 1_000_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_encoder = msgspec.json.Encoder(enc_hook=str)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message)
    except AuthError as exc:
        response = error_response(exc.status, exc.message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="stratum-proxy"'
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("API %s %s failed", request.method, request.path)
        response = error_response(500, f"internal error ({type(exc).__name__}); see the proxy log")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


# ---------------------------------------------------------------------------- helpers


def _service(request: web.Request) -> Any:
    return request.app[SERVICE]


def _view(request: web.Request) -> CoreView:
    view = _service(request).view
    if view is None:
        raise ApiError(503, "the proxy core is not running")
    return view


def _now(request: web.Request) -> float:
    return _service(request).now()


def redact_url(url: str) -> str:
    """Drop a password embedded in a pool URL (stratum+tcp://user:pass@host:port)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "(unparseable url)"


def public_pool(view: dict[str, Any]) -> dict[str, Any]:
    if "@" in view.get("url", ""):
        view = {**view, "url": redact_url(view["url"])}
    return view


def _pool_or_404(view: CoreView, name: str) -> None:
    if not view.has_pool(name):
        raise ApiError(404, f"unknown pool {name!r}")


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be between {lo} and {hi}")
    return value


def _require_write(request: web.Request) -> None:
    check_write(request, _service(request).config.api.token)


# ---------------------------------------------------------------------------- reads


async def index(request: web.Request) -> web.Response:
    return web.Response(text=INDEX_HTML, content_type="text/html", charset="utf-8", headers=INDEX_HEADERS)


async def get_status(request: web.Request) -> web.Response:
    view = _view(request).status(_now(request))
    view["version"] = __version__
    view["wall_time"] = round(time.time(), 3)
    view["writes_enabled"] = bool(_service(request).config.api.token)
    return json_response(view)


async def get_health(request: web.Request) -> web.Response:
    """For a load balancer's health check: 503 once SIGTERM has closed the rig port, so new
    rigs go elsewhere. A farm-wide pool outage is NOT unhealthy: every instance would fail
    the check and the balancer would drop rigs that the proxy keeps on keepalive work."""
    svc = _service(request)
    view = svc.view
    if view is None or getattr(svc, "stopping", False):
        return json_response({"ok": False, "reason": "stopping" if view else "not started"}, 503)
    return json_response({"ok": True, "instance": view.instance, "rigs": view.rig_count(),
                          "pool_connections_ready": view.ready_connections()})


async def get_pools(request: web.Request) -> web.Response:
    now = _now(request)
    gpu = [p for v in gpu_views(_service(request)) for p in v.pools(now)]  # GPU listeners' pools
    return json_response({"pools": [public_pool(v) for v in _view(request).pools(now) + gpu]})


async def get_pool(request: web.Request) -> web.Response:
    view = _view(request)
    name = request.match_info["name"]
    gpu = gpu_pool(_service(request), name)
    if gpu is not None:
        return json_response(public_pool(gpu[1].pool(name, _now(request))))
    _pool_or_404(view, name)
    return json_response(public_pool(view.pool(name, _now(request))))


async def get_rigs(request: web.Request) -> web.Response:
    view = _view(request)
    offset = int_param(request, "offset", 0, 0, 10**9)
    limit = int_param(request, "limit", RIGS_DEFAULT_LIMIT, 1, RIGS_MAX_LIMIT)
    pool = request.query.get("pool") or None
    needle = (request.query.get("q") or "").strip().lower()
    sort = request.query.get("sort") or None
    if pool is not None:
        _pool_or_404(view, pool)
    try:
        total, rigs = view.rigs(_now(request), offset, limit, pool=pool, needle=needle, sort=sort)
    except UnknownSortKey as exc:
        raise ApiError(400, str(exc)) from None
    except UnknownPool:
        raise ApiError(404, f"unknown pool {pool!r}") from None
    return json_response({"total": total, "offset": offset, "limit": limit, "pool": pool,
                          "q": needle or None, "sort": sort, "rigs": rigs})


async def get_events(request: web.Request) -> web.Response:
    events_log = _service(request).events
    limit = int_param(request, "limit", EVENTS_DEFAULT_LIMIT, 1, EVENTS_MAX_LIMIT)
    after = int_param(request, "after", 0, 0, 2**62)
    kind = request.query.get("kind") or None
    if after:
        events = [e for e in events_log.recent(EVENTS_MAX_LIMIT, kind) if e["seq"] > after][:limit]
    else:
        events = events_log.recent(limit, kind)
    return json_response({"events": events})


async def get_history(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER]
    if recorder is None:
        raise ApiError(503, "history recorder is not running")
    minutes = int_param(request, "minutes", HISTORY_DEFAULT_MINUTES, 1, HISTORY_MAX_MINUTES)
    pool = request.query.get("pool") or None
    if pool is not None and len(pool) > 64:
        raise ApiError(400, "pool: name too long")
    return json_response(await recorder.query(pool, minutes))


async def get_rentals(request: web.Request) -> web.Response:
    controller = getattr(_service(request), "rental", None)
    if controller is None and getattr(_service(request), "cluster", None) is not None:
        from ..cluster.api import rentals_elsewhere  # another instance leads the controller

        return json_response(rentals_elsewhere(_service(request).cluster))
    if controller is None:
        return json_response({
            "enabled": False, "provider": None, "state": "disabled", "orders": [], "budget_left_btc": None,
            "note": "no [rental] section in the config, so hashpower backfill is off; add one "
                    "(see the README) and restart to turn it on",
        })
    return json_response(controller.view())


async def get_metrics(request: web.Request) -> web.Response:
    rental = getattr(_service(request), "rental", None)
    text = render_metrics(_view(request), _now(request), __version__, rental=rental,
                          cluster=getattr(_service(request), "cluster", None),
                          gpu=gpu_views(_service(request)),
                          power=getattr(_service(request), "power", None))
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": METRICS_CONTENT_TYPE})


# ---------------------------------------------------------------------------- writes


async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def validate_patch(body: dict[str, Any]) -> dict[str, Any]:
    """Check a PATCH body; raise ApiError(400) naming the bad field."""
    unknown = [k for k in body if k not in PATCH_FIELDS]
    if unknown:
        raise ApiError(400, f"{str(unknown[0])[:64]}: unknown field (allowed: {', '.join(PATCH_FIELDS)})")
    if not body:
        raise ApiError(400, f"body must set at least one of {', '.join(PATCH_FIELDS)}")
    changes: dict[str, Any] = {}
    if "priority" in body:
        value = body["priority"]
        if type(value) is not int or not -MAX_PRIORITY <= value <= MAX_PRIORITY:
            raise ApiError(400, f"priority: must be an integer in +-{MAX_PRIORITY}, got {value!r}")
        changes["priority"] = value
    if "weight" in body:
        value = body["weight"]
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise ApiError(400, f"weight: must be a number >= 0, got {value!r}")
        changes["weight"] = float(value)
    if "enabled" in body:
        value = body["enabled"]
        if type(value) is not bool:
            raise ApiError(400, f"enabled: must be true or false, got {value!r}")
        changes["enabled"] = value
    return changes


async def patch_pool(request: web.Request) -> web.Response:
    _require_write(request)
    view: Any = _view(request)
    name = request.match_info["name"]
    svc = _service(request)
    gpu = gpu_pool(svc, name)  # a GPU listener's pool? (those stay per instance)
    operator, view = gpu or (svc.core.operator, view)
    _pool_or_404(view, name)
    changes = validate_patch(await json_object(request))
    if gpu is None and getattr(svc, "cluster", None) is not None:
        from ..cluster.api import write_setting  # one etcd transaction; every instance applies it

        await write_setting(svc, name, changes)
    else:
        operator.set_pool(name, svc.now(), **changes)
    log.info("API: pool %s changed: %s", name, changes)
    return json_response(public_pool(view.pool(name, svc.now())))


async def _drain_action(request: web.Request, drain: bool) -> web.Response:
    _require_write(request)
    view: Any = _view(request)
    name = request.match_info["name"]
    svc = _service(request)
    gpu = gpu_pool(svc, name)  # a GPU listener's pool? (those stay per instance)
    operator, view = gpu or (svc.core.operator, view)
    _pool_or_404(view, name)
    if gpu is None and getattr(svc, "cluster", None) is not None:
        from ..cluster.api import write_setting

        await write_setting(svc, name, {"drained": drain})
    elif drain:
        operator.drain(name, svc.now())
    else:
        operator.undrain(name, svc.now())
    log.info("API: pool %s %s", name, "drained" if drain else "undrained")
    return json_response(public_pool(view.pool(name, svc.now())))


async def drain_pool(request: web.Request) -> web.Response:
    return await _drain_action(request, drain=True)


async def undrain_pool(request: web.Request) -> web.Response:
    return await _drain_action(request, drain=False)


async def reload_config(request: web.Request) -> web.Response:
    _require_write(request)
    svc = _service(request)
    try:
        result = svc.reload()
    except ConfigError as exc:
        log.warning("API: reload refused: %s", exc)
        raise ApiError(400, str(exc)) from None
    log.info("API: config reloaded: %s", result)
    return json_response({"ok": True, "path": svc.config.path, **result,
                          "active_pools": _view(request).active_pools()})


# ---------------------------------------------------------------------------- app


def _history_interval(service: Any, explicit: float | None) -> float:
    """The explicit argument (tests, benchmarks) or ``proxy.history_sample_s``."""
    if explicit:
        return float(explicit)
    return float(service.config.proxy.history_sample_s or DEFAULT_HISTORY_INTERVAL_S)


def create_app(service: Any, *, history_interval: float | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[SERVICE] = service
    app[RECORDER] = None
    interval = _history_interval(service, history_interval)

    async def start_recorder(app: web.Application) -> None:
        if service.view is None:
            log.warning("history recorder not started: the proxy core is not running")
            return
        store = HistoryStore(service.config.proxy.history_db)
        recorder = HistoryRecorder(service.view, service.events, service.now, store, interval_s=interval,
                                   gpu=gpu_views(service), listener=sv1_listener(service))
        await recorder.start()
        app[RECORDER] = recorder
        log.info("history: %s%s, sampled every %gs", store.backend,
                 f" at {store.path}" if store.backend == "sqlite" else "", interval)

    async def stop_recorder(app: web.Application) -> None:
        recorder = app[RECORDER]
        if recorder is not None:
            await recorder.stop()

    app.on_startup.append(start_recorder)
    app.on_cleanup.append(stop_recorder)

    add_api_routes(app.router, PROXY_HANDLERS)
    if getattr(service, "cluster", None) is not None:
        from ..cluster.api import add_cluster_routes

        add_cluster_routes(app.router)
    add_listener_routes(app.router)  # GPU listeners (proxy/api/listeners.py)
    add_power_routes(app.router)
    return app


class RestHandlers(NamedTuple):
    """The REST shape, one handler per route: the proxy serves it, and the farm control plane
    serves the same for the whole farm with its own handlers, so the dashboard reads either.
    Fields hold functions, so a renamed handler fails at import (and in ``ruff``), not at
    start."""

    index: Handler
    get_health: Handler
    get_status: Handler
    get_pools: Handler
    get_pool: Handler
    patch_pool: Handler
    drain_pool: Handler
    undrain_pool: Handler
    get_rigs: Handler
    get_events: Handler
    get_history: Handler
    get_rentals: Handler
    reload_config: Handler
    get_metrics: Handler


def api_routes(h: RestHandlers) -> tuple[tuple[str, str, Handler], ...]:
    return (
        ("GET", "/", h.index),
        ("GET", "/healthz", h.get_health),
        ("GET", "/api/v1/status", h.get_status),
        ("GET", "/api/v1/pools", h.get_pools),
        ("GET", "/api/v1/pools/{name}", h.get_pool),
        ("PATCH", "/api/v1/pools/{name}", h.patch_pool),
        ("POST", "/api/v1/pools/{name}/drain", h.drain_pool),
        ("POST", "/api/v1/pools/{name}/undrain", h.undrain_pool),
        ("GET", "/api/v1/rigs", h.get_rigs),
        ("GET", "/api/v1/events", h.get_events),
        ("GET", "/api/v1/history", h.get_history),
        ("GET", "/api/v1/rentals", h.get_rentals),
        ("POST", "/api/v1/reload", h.reload_config),
        ("GET", "/metrics", h.get_metrics),
    )


PROXY_HANDLERS = RestHandlers(
    index=index, get_health=get_health, get_status=get_status, get_pools=get_pools,
    get_pool=get_pool, patch_pool=patch_pool, drain_pool=drain_pool, undrain_pool=undrain_pool,
    get_rigs=get_rigs, get_events=get_events, get_history=get_history, get_rentals=get_rentals,
    reload_config=reload_config, get_metrics=get_metrics,
)


def add_api_routes(router: web.UrlDispatcher, handlers: RestHandlers) -> None:
    for method, path, handler in api_routes(handlers):
        router.add_route(method, path, handler)


async def serve(app: web.Application, listen: str, field: str) -> tuple[web.AppRunner, str, int]:
    """Bind ``listen`` (port 0: an ephemeral port); returns (runner, host, bound port).
    ``await runner.cleanup()`` stops the server and runs the app's cleanup hooks."""
    host, port = parse_address(listen, field)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, host, bound


async def start_api(service: Any, *, history_interval: float | None = None) -> tuple[web.AppRunner, int]:
    """The proxy's API on ``api.listen``; the runner's cleanup also stops the history recorder."""
    app = create_app(service, history_interval=history_interval)
    runner, host, bound = await serve(app, service.config.api.listen, "api.listen")
    if not service.config.api.token:
        log.warning("api.token is empty: the API is read-only until it is set")
    log.info("API listening on http://%s:%d/", host, bound)
    return runner, bound
