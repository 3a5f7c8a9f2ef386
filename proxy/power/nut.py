"""The asyncio NUT client: one short session per poll (connect, log in, LIST VAR, LOGOUT).

Why a session per poll and not one long connection: upsd drops idle clients, a poll every
few seconds is nothing to it, and a fresh connection means a restarted upsd or a half-open
socket cannot leave the proxy reading stale figures.  Every step has a deadline; any
failure (refused, silent, garbage, ``ERR``) becomes a reading of ``Power.UNKNOWN`` with the
reason, never an exception into the caller.  With ``tls`` the session starts with
``STARTTLS`` and goes on inside TLS (certificate checked against ``ca_file`` or the system
store); a upsd that refuses it is an unknown UPS, never a fallback to plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from .nutproto import (
    MAX_LINE,
    NutError,
    Power,
    UpsReading,
    UpsTarget,
    VarListParser,
    check_ok,
    command,
    decode_line,
    login_commands,
    reading_from,
)


async def _readline(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise NutError(f"answer line longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        raise NutError("upsd closed the connection mid-answer") from None
    return decode_line(raw)


def tls_context(ca_file: str = "", verify: bool = True) -> ssl.SSLContext:
    """The client side of STARTTLS: the system CAs or ``ca_file``; ``verify=False`` only
    encrypts (upsd certificates are often self-signed)."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def list_vars(target: UpsTarget, user: str | None = None, password: str | None = None,
                    timeout_s: float = 5.0, tls: ssl.SSLContext | None = None) -> dict[str, str]:
    """Every variable of one UPS; raises NutError / OSError / TimeoutError / ssl.SSLError."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=MAX_LINE)
        try:
            if tls is not None:
                writer.write(b"STARTTLS\n")
                check_ok(await _readline(reader))
                await writer.start_tls(tls, server_hostname=target.host)
            for line in login_commands(user, password):
                writer.write(line)
                check_ok(await _readline(reader))
            writer.write(command("LIST", "VAR", target.ups))
            parser = VarListParser(target.ups)
            while not parser.done:
                parser.feed(await _readline(reader))
            writer.write(b"LOGOUT\n")
            return parser.variables
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def read_ups(target: UpsTarget, user: str | None = None, password: str | None = None,
                   timeout_s: float = 5.0, tls: ssl.SSLContext | None = None) -> UpsReading:
    """One UPS's reading; anything that went wrong is ``Power.UNKNOWN`` with the reason."""
    try:
        variables = await list_vars(target, user, password, timeout_s, tls)
    except TimeoutError:
        return UpsReading(Power.UNKNOWN, reason=f"no answer from upsd at {target} within {timeout_s:g}s")
    except NutError as exc:
        return UpsReading(Power.UNKNOWN, reason=f"upsd at {target}: {exc}")
    except ssl.SSLError as exc:  # before OSError: it is one
        return UpsReading(Power.UNKNOWN, reason=f"TLS with upsd at {target} failed: {exc.reason or exc}")
    except (OSError, ValueError) as exc:  # refused, reset, unreachable, bad name
        return UpsReading(Power.UNKNOWN, reason=f"cannot reach upsd at {target}: {exc}")
    return reading_from(variables)
