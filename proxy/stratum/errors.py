"""Stratum share error codes (the de-facto set cgminer and pools agree on)."""

from __future__ import annotations

OTHER = 20
JOB_NOT_FOUND = 21
DUPLICATE = 22
LOW_DIFFICULTY = 23
UNAUTHORIZED = 24
NOT_SUBSCRIBED = 25

# JSON-RPC 2.0 style codes for requests we do not understand at all.
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
PARSE_ERROR = -32700

MESSAGES = {
    OTHER: "Other/Unknown",
    JOB_NOT_FOUND: "Job not found (=stale)",
    DUPLICATE: "Duplicate share",
    LOW_DIFFICULTY: "Low difficulty share",
    UNAUTHORIZED: "Unauthorized worker",
    NOT_SUBSCRIBED: "Not subscribed",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    PARSE_ERROR: "Parse error",
}


class StratumError(Exception):
    """A request failed with a Stratum error code; ``message`` is shown to the peer."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, "error"))
        self.code = code
        self.message = message or MESSAGES.get(code, "error")

    def as_wire(self) -> list:
        return [self.code, self.message, None]


def reason_from_error(error: object) -> str:
    """Map a pool's error field to one of our reject reasons (stale/duplicate/low_difficulty/...)."""
    code = None
    text = ""
    if isinstance(error, list) and error:
        code = error[0] if isinstance(error[0], int) else None
        text = str(error[1]) if len(error) > 1 else ""
    elif isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), int) else None
        text = str(error.get("message", ""))
    elif error is not None:
        text = str(error)
    lowered = text.lower()
    if code == JOB_NOT_FOUND or "stale" in lowered or "job not found" in lowered:
        return "stale"
    if code == DUPLICATE or "duplicate" in lowered:
        return "duplicate"
    if code == LOW_DIFFICULTY or "low difficulty" in lowered or "above target" in lowered:
        return "low_difficulty"
    if code == UNAUTHORIZED or "unauthorized" in lowered:
        return "unauthorized"
    return "other"
