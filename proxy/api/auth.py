"""Bearer-token checks for writes: constant-time compare, clear refusals, nothing changed."""

from __future__ import annotations

import hmac

from aiohttp import web

WRITES_DISABLED = ("writes are disabled until api.token is set: put a token in the [api] "
                   "section of the config file and restart the proxy")


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_write(request: web.Request, token: str) -> None:
    """Raise AuthError (403 when no token is configured, 401 when missing or wrong)."""
    if not token:
        raise AuthError(403, WRITES_DISABLED)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <api.token>'")
    if not hmac.compare_digest(presented.strip().encode("utf-8"), token.encode("utf-8")):
        raise AuthError(401, "invalid bearer token")
