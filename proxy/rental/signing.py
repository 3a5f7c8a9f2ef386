"""NiceHash API v2 request signing, shared by the client and the simulated marketplace.

One function for both sides means the simulator checks exactly what the client sends; the
published vectors in ``tests/rental/test_signing.py`` pin it to NiceHash's own definition:

    X-Auth = key + ":" + hex(HMAC_SHA256(secret,
             key \\0 time \\0 nonce \\0 \\0 org \\0 \\0 METHOD \\0 path \\0 query [\\0 body]))

``query`` is the query string without ``?`` (empty when none); ``body`` is appended only when
the request has one and must be byte-identical to what goes on the wire.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "signature_message", "verify"]


def signature_message(
    key: str, time_ms: str, nonce: str, org: str, method: str, path: str, query: str, body: bytes | None
) -> bytes:
    parts = [key, time_ms, nonce, "", org, "", method.upper(), path, query]
    message = b"\x00".join(p.encode("utf-8") for p in parts)
    if body:
        message += b"\x00" + body
    return message


def sign(
    key: str,
    secret: str,
    time_ms: str,
    nonce: str,
    org: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes | None = None,
) -> str:
    """The ``X-Auth`` header value for one request."""
    message = signature_message(key, time_ms, nonce, org, method, path, query, body)
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{key}:{digest}"


def verify(
    x_auth: str,
    key: str,
    secret: str,
    time_ms: str,
    nonce: str,
    org: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes | None = None,
) -> bool:
    """Constant-time check of an ``X-Auth`` header (the simulated marketplace uses it)."""
    expected = sign(key, secret, time_ms, nonce, org, method, path, query, body)
    return hmac.compare_digest(expected.encode("utf-8"), x_auth.encode("utf-8"))
