"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), on aiohttp.

Why not a gRPC client: the runtime dependencies are fixed (stdlib, uvloop, msgspec,
aiohttp), and the gateway that every etcd >= 3.4 serves on its client port speaks the same
API as JSON: keys and values base64, 64-bit integers as decimal strings, fields at their
default value left out (a false ``succeeded``, a 0 ``TTL``).

What the farm needs and nothing more: range (one key or a prefix), put (under a lease),
txn (compare and swap, the fence of every ledger write), lease grant / keepalive / revoke,
and watch as an async iterator of events.  Every call has a deadline (``timeout_s``) and
tries the endpoints in turn, remembering the last one that answered; an etcd member without
quorum does not answer a linearizable request before the deadline, so "no quorum" and
"unreachable" both surface as ``EtcdUnavailable`` with the reason.  Nothing here ever waits
without a deadline except a watch, which the caller runs in its own task.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

log = logging.getLogger("proxy.cluster.etcd")

__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable", "KeyValue", "WatchEvent", "client_for",
           "describe_client_error", "prefix_end"]


class EtcdError(Exception):
    """etcd answered with an error (e.g. a lease it does not know)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time: unreachable, or a member without quorum."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" | "delete"
    kv: KeyValue


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with ``prefix`` (etcd's convention)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return raw.decode("latin-1")
        raw.pop()
    return "\0"


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(base64.b64decode(item.get("key", "")).decode(),
                    base64.b64decode(item.get("value", "")),
                    int(item.get("create_revision", 0)), int(item.get("mod_revision", 0)),
                    int(item.get("lease", 0)))


def put_op(key: str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    """One put inside a txn."""
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def compare_create(key: str, revision: int) -> dict[str, Any]:
    """Txn compare: ``key`` was created at ``revision`` (0: the key does not exist)."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(revision)}


def compare_mod(key: str, revision: int) -> dict[str, Any]:
    """Txn compare: ``key`` was last written at ``revision`` (0: the key does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


class EtcdClient:
    """See the module docstring.  ``await close()`` when done."""

    def __init__(self, endpoints: list[str], timeout_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout_s = timeout_s
        self.ssl: ssl.SSLContext | bool = ssl_context or True  # True: the system CA store
        self._current = 0
        self._http: aiohttp.ClientSession | None = None
        self.last_error = ""

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, path: str, body: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers in time."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        errors: list[str] = []
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            url = f"{self.endpoints[index]}/v3/{path}"
            try:
                async with self._session().post(url, json=body, timeout=timeout, ssl=self.ssl) as resp:
                    data = msgspec.json.decode(await resp.read())
            except (aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError) as exc:
                errors.append(f"{self.endpoints[index]}: {describe_client_error(exc)}")
                continue
            self._current = index
            if isinstance(data, dict) and "error" in data and resp.status >= 400:
                message = str(data.get("message") or data["error"])
                if _no_quorum(message):
                    errors.append(f"{self.endpoints[index]}: {message}")
                    continue
                raise EtcdError(message)
            return data if isinstance(data, dict) else {}
        self.last_error = "; ".join(errors)
        raise EtcdUnavailable(f"no etcd endpoint answered: {self.last_error}")

    # --- kv ---------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(self, key: str, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """(key-values, the store's revision); ``prefix``: every key starting with ``key``."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key).encode("latin-1"))
        data = await self.call("kv/range", body)
        return [_kv(item) for item in data.get("kvs", [])], int(data.get("header", {}).get("revision", 0))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        data = await self.call("kv/put", put_op(key, value, lease)["request_put"])
        return int(data.get("header", {}).get("revision", 0))

    async def delete(self, key: str) -> int:
        """Delete ``key``; returns how many keys went (0 or 1)."""
        data = await self.call("kv/deleterange", {"key": b64(key)})
        return int(data.get("deleted", 0))

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None) -> tuple[bool, int, list[dict[str, Any]]]:
        """(succeeded, revision, responses): ``success`` ran if every compare held."""
        data = await self.call("kv/txn", {"compare": compare, "success": success,
                                          "failure": failure or []})
        return (bool(data.get("succeeded", False)), int(data.get("header", {}).get("revision", 0)),
                data.get("responses", []))

    # --- leases -----------------------------------------------------------------------------

    async def grant(self, ttl_s: int) -> int:
        data = await self.call("lease/grant", {"TTL": str(ttl_s)})
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; returns its TTL (0: etcd no longer knows it: it expired)."""
        data = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # --- watch ------------------------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """(revision, events) for every change under ``prefix`` from ``start_revision`` on.

        Runs until the stream breaks (EtcdUnavailable: the caller re-reads and watches again)
        or the history it asks for was compacted (EtcdError)."""
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix).encode("latin-1")),
                                   "start_revision": str(start_revision)}}
        url = f"{self.endpoints[self._current]}/v3/watch"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        try:
            async with self._session().post(url, json=body, timeout=timeout, ssl=self.ssl) as resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    data = msgspec.json.decode(line)
                    result = data.get("result") or {}
                    if "error" in data:
                        raise EtcdError(str(data.get("message") or data["error"]))
                    if result.get("compact_revision") not in (None, "0"):
                        raise EtcdError(f"watch history compacted at {result['compact_revision']}")
                    if result.get("canceled"):
                        raise EtcdUnavailable(f"watch cancelled: {result.get('cancel_reason', '')}")
                    events = [WatchEvent("delete" if e.get("type") == "DELETE" else "put", _kv(e["kv"]))
                              for e in result.get("events", [])]
                    yield int(result.get("header", {}).get("revision", 0)), events
        except (aiohttp.ClientError, OSError, msgspec.DecodeError) as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"watch on {url}: {describe_client_error(exc)}") from None
        self._current = (self._current + 1) % len(self.endpoints)
        raise EtcdUnavailable(f"watch on {url}: stream ended")


def client_for(config: Any) -> EtcdClient:
    """The client a ``[cluster]`` section describes (endpoints, timeout, TLS)."""
    context = None
    if config.ca_file or config.cert_file:
        context = ssl.create_default_context(cafile=config.ca_file or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
    return EtcdClient(config.etcd, config.timeout_s, context)


def _no_quorum(message: str) -> bool:
    return any(s in message for s in ("timed out", "no leader", "leader changed", "unhealthy cluster"))


def describe_client_error(exc: BaseException) -> str:
    """An HTTP client failure in a few words (the farm's instance polls use it too)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}"
