"""A simulated NUT server (upsd's network protocol) for the demo and the fast tests.

Independent of ``proxy.power`` on purpose (its own parsing and quoting), so a client mistake
shows up here rather than being mirrored.  Serves ``LIST VAR``, ``GET VAR``, ``LIST UPS``,
``USERNAME``/``PASSWORD`` (checked when ``users`` is given), ``STARTTLS`` (with ``tls``, an
``ssl.SSLContext``: ``OK STARTTLS`` and the session goes on in TLS; without it
``ERR FEATURE-NOT-CONFIGURED``, as a upsd without certificates answers) and ``LOGOUT``.
Faults for the tests: ``mode`` = "ok", "garbage" (nonsense lines), "silent" (reads, never
answers), "stale" (``ERR DATA-STALE``, what upsd says when its driver is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import ssl


class SimNut:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, users: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls
        self.tls_sessions = 0
        self.port = port
        self.users = users
        self.ups: dict[str, dict[str, str]] = {}
        self.mode = "ok"
        self.sessions = 0
        self.list_calls = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def set(self, ups: str, status: str | None = None, charge: float | None = None,
            runtime: float | None = None, **extra: str) -> None:
        """Set a UPS's variables (created on first use)."""
        v = self.ups.setdefault(ups, {"device.type": "ups", "ups.mfr": "sim"})
        for name, value in (("ups.status", status), ("battery.charge", charge), ("battery.runtime", runtime)):
            if value is not None:
                v[name] = value if isinstance(value, str) else f"{value:g}"
        v.update({k.replace("_", "."): str(x) for k, x in extra.items()})

    def target(self, ups: str) -> str:
        return f"{ups}@{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self._conns.add(writer)
        user = None
        try:
            while line := await reader.readline():
                if self.mode == "silent":
                    continue
                if self.mode == "garbage":
                    writer.write(b"\x00\xffBEGIN LIST \"unterminated\n")
                    await writer.drain()
                    continue
                text = line.decode("utf-8", "replace").strip()
                if text == "STARTTLS" and self.tls is not None:
                    writer.write(b"OK STARTTLS\n")
                    await writer.start_tls(self.tls)
                    self.tls_sessions += 1
                    continue
                out, user, done = self._answer(text, user)
                writer.write(out.encode())
                await writer.drain()
                if done:
                    break
        except (ConnectionError, ValueError, ssl.SSLError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    def _answer(self, line: str, user: str | None) -> tuple[str, str | None, bool]:
        try:
            words = shlex.split(line)
        except ValueError:
            return "ERR INVALID-ARGUMENT\n", user, False
        if not words:
            return "ERR UNKNOWN-COMMAND\n", user, False
        verb = words[0].upper()
        if verb == "LOGOUT":
            return "OK Goodbye\n", user, True
        if verb == "STARTTLS":
            return "ERR FEATURE-NOT-CONFIGURED\n", user, False
        if verb == "USERNAME" and len(words) == 2:
            return "OK\n", words[1], False
        if verb == "PASSWORD" and len(words) == 2:
            if self.users is not None and self.users.get(user or "") != words[1]:
                return "ERR ACCESS-DENIED\n", user, False
            return "OK\n", user, False
        if self.mode == "stale":
            return "ERR DATA-STALE\n", user, False
        if words[:2] == ["LIST", "UPS"]:
            body = "".join(f'UPS {name} "simulated"\n' for name in self.ups)
            return f"BEGIN LIST UPS\n{body}END LIST UPS\n", user, False
        if words[:2] == ["LIST", "VAR"] and len(words) == 3:
            variables = self.ups.get(words[2])
            if variables is None:
                return "ERR UNKNOWN-UPS\n", user, False
            self.list_calls += 1
            body = "".join(f"VAR {words[2]} {k} {_quote(v)}\n" for k, v in variables.items())
            return f"BEGIN LIST VAR {words[2]}\n{body}END LIST VAR {words[2]}\n", user, False
        if words[:2] == ["GET", "VAR"] and len(words) == 4:
            variables = self.ups.get(words[2])
            if variables is None:
                return "ERR UNKNOWN-UPS\n", user, False
            if words[3] not in variables:
                return "ERR VAR-NOT-SUPPORTED\n", user, False
            return f"VAR {words[2]} {words[3]} {_quote(variables[words[3]])}\n", user, False
        return "ERR UNKNOWN-COMMAND\n", user, False


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
