"""The Network UPS Tools network protocol (TCP 3493), pure: no sockets, no clock.

A NUT session is a few text lines: the client writes ``USERNAME``/``PASSWORD`` (optional),
``LIST VAR <ups>`` and ``LOGOUT``; upsd answers ``OK``, ``ERR <CODE>``, or a list framed by
``BEGIN LIST VAR <ups>`` / ``END LIST VAR <ups>`` with one ``VAR <ups> <name> "<value>"``
line per variable (values quoted, ``\\"`` and ``\\\\`` escaped).  The asyncio client
(``proxy.power.nut``) moves the bytes; everything that can go wrong with what upsd says
(garbage, an ``ERR``, a list for another UPS, an over-long line) is decided here, so it is
tested without a socket.  Protocol reference: the NUT developer guide, "Network protocol
information" (networkupstools.org).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

MAX_LINE = 4096  # upsd's own lines are far shorter; anything longer is garbage
MAX_VARS = 1000  # a UPS exposes ~50-150 variables
DEFAULT_PORT = 3493

# the status words upsd puts in ups.status (space separated), as the NUT docs list them
KNOWN_FLAGS = frozenset({
    "OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER", "TRIM",
    "BOOST", "FSD", "ALARM", "TEST", "WAIT", "COMM", "NOCOMM",
})
_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


class NutError(Exception):
    """upsd answered, but not with what was asked (``ERR <code>``, garbage, a wrong list)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Power(enum.Enum):
    """What a UPS's status means for the rigs behind it."""

    ONLINE = "online"  # OL: on mains
    BATTERY = "battery"  # OB: on battery, runtime counting down
    CRITICAL = "critical"  # LB, FSD or OFF: the rigs go dark now
    UNKNOWN = "unknown"  # no answer, garbage, stale data, WAIT: decide nothing from it


@dataclass(frozen=True)
class UpsTarget:
    """``ups@host:port`` as written in ``[[power.ups]] nut``."""

    ups: str
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"{self.ups}@{self.host}:{self.port}"


def parse_target(text: str) -> UpsTarget:
    """``ups@host[:port]`` (IPv6 hosts in brackets); ValueError says what is wrong."""
    ups, at, rest = text.partition("@")
    if not at or not _NAME.fullmatch(ups):
        raise ValueError(f'expected "ups@host:3493", got {text!r}')
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ValueError(f"bad IPv6 host in {text!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if not port_text:
        return UpsTarget(ups, host)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return UpsTarget(ups, host, int(port_text))


def quote(value: str) -> str:
    """A command argument as upsd reads it: quoted, with ``"`` and ``\\`` escaped; no line
    breaks (a newline would end the command and start another one)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("NUT arguments cannot contain line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(*words: str) -> bytes:
    """One command line: the verb words plain, the last word quoted when it must be."""
    *verbs, last = words
    tail = last if _NAME.fullmatch(last) else quote(last)
    return (" ".join([*verbs, tail]) + "\n").encode()


def login_commands(user: str | None, password: str | None) -> list[bytes]:
    """USERNAME / PASSWORD when credentials are configured (read-only access needs none)."""
    out = []
    if user:
        out.append(command("USERNAME", user))
    if password:
        out.append(command("PASSWORD", password))
    return out


def split_words(line: str) -> list[str]:
    """Words of one answer line; quoted words unescaped."""
    words = []
    pos = 0
    line = line.strip()
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            raise NutError(f"unparseable line {line[:80]!r}")
        if m.group(1) is not None:
            words.append(re.sub(r"\\(.)", r"\1", m.group(1)))
        else:
            if '"' in m.group(2):
                raise NutError(f"unbalanced quote in {line[:80]!r}")
            words.append(m.group(2))
        pos = m.end()
        while pos < len(line) and line[pos] == " ":
            pos += 1
    return words


def decode_line(raw: bytes) -> str:
    if len(raw) > MAX_LINE:
        raise NutError(f"answer line longer than {MAX_LINE} bytes")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise NutError("answer is not text") from None


def check_ok(line: str) -> None:
    """The answer to USERNAME / PASSWORD / STARTTLS: ``OK...`` or a NutError."""
    words = split_words(line)
    if words and words[0] == "OK":
        return
    raise_err(words, line)


def raise_err(words: list[str], line: str) -> None:
    if words and words[0] == "ERR":
        code = words[1] if len(words) > 1 else "UNKNOWN"
        raise NutError(f"upsd: ERR {code}", code)
    raise NutError(f"unexpected answer {line[:80]!r}")


@dataclass
class VarListParser:
    """Feed the lines answering ``LIST VAR <ups>``; ``done`` when ``END LIST VAR`` came."""

    ups: str
    variables: dict[str, str] = field(default_factory=dict)
    started: bool = False
    done: bool = False

    def feed(self, line: str) -> None:
        words = split_words(line)
        if not self.started:
            if words == ["BEGIN", "LIST", "VAR", self.ups]:
                self.started = True
                return
            raise_err(words, line)
        if words == ["END", "LIST", "VAR", self.ups]:
            self.done = True
            return
        if len(words) != 4 or words[0] != "VAR" or words[1] != self.ups:
            raise NutError(f"unexpected line in the variable list: {line[:80]!r}")
        if len(self.variables) >= MAX_VARS:
            raise NutError(f"more than {MAX_VARS} variables")
        self.variables[words[2]] = words[3]


def parse_get_var(line: str, ups: str, name: str) -> str:
    """The answer to ``GET VAR <ups> <name>``."""
    words = split_words(line)
    if len(words) == 4 and words[:3] == ["VAR", ups, name]:
        return words[3]
    raise_err(words, line)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class UpsReading:
    """One UPS as last read: its power state and the figures the planner uses."""

    power: Power
    status: str = ""  # ups.status as upsd gave it ("OB DISCHRG"), "" when unknown
    charge: float | None = None  # battery.charge, percent
    runtime_s: float | None = None  # battery.runtime, seconds left on battery
    reason: str = ""  # why the state is unknown, or what was odd

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.status.split())


def _number(variables: dict[str, str], name: str) -> float | None:
    text = variables.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise NutError(f"{name} is not a number: {text[:40]!r}") from None
    if value != value or value < 0:
        raise NutError(f"{name} out of range: {text[:40]!r}")
    return value


def reading_from(variables: dict[str, str]) -> UpsReading:
    """The power state from a UPS's variables.  LB, FSD or OFF win over OB and OL (the rigs
    stop now whatever else is set; upsmon ignores OFF, we do not); OB is on battery; OL on
    mains; WAIT (driver starting), a missing ``ups.status`` or no OL/OB at all is unknown."""
    try:
        status = variables.get("ups.status")
        if status is None:
            return UpsReading(Power.UNKNOWN, reason="no ups.status variable")
        flags = set(status.split())
        if not flags or not flags <= KNOWN_FLAGS:
            odd = sorted(flags - KNOWN_FLAGS)[:3]
            return UpsReading(Power.UNKNOWN, status[:64], reason=f"ups.status has unknown words {odd}")
        charge = _number(variables, "battery.charge")
        runtime = _number(variables, "battery.runtime")
    except NutError as exc:
        return UpsReading(Power.UNKNOWN, reason=str(exc))
    if flags & {"LB", "FSD", "OFF"}:
        power = Power.CRITICAL
    elif "OB" in flags:
        power = Power.BATTERY
    elif "OL" in flags:
        power = Power.ONLINE
    else:
        return UpsReading(Power.UNKNOWN, status, charge, runtime, reason=f"ups.status {status!r}")
    return UpsReading(power, status, charge, runtime)
