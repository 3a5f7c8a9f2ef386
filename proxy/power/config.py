"""``[power]``: the UPSes that feed the rigs and the planned curtailments (a contract:
DESIGN.md's external interfaces list these fields).

```toml
[power]
order_lead_s = 300          # how long a rented order takes to deliver (learned ones may raise it)
runtime_margin_s = 60       # rigs on battery go dark at battery.runtime minus this

[[power.ups]]
name = "ups-a"
nut = "ups-a@10.0.0.5:3493"  # NUT: ups@host:port
workers = ["farm1.rack1.*"]   # which rigs it feeds: worker globs and/or address CIDRs
addresses = ["10.1.1.0/24"]
poll_s = 5
user_env = "NUT_USER"         # optional credentials, from these environment variables
password_env = "NUT_PASSWORD"

[[power.curtail]]
name = "ercot-4cp"
workers = ["farm1.*"]
from = 2026-07-01T19:00:00Z
until = 2026-07-01T20:00:00Z
reason = "4CP peak"
rent = true                   # rented hashpower covers the rigs while they are off
```

Kept apart from ``proxy.config`` (which validates it through ``validate_power``) so the
power feature is one package; ``ConfigError`` is imported late to avoid an import cycle.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec

from .match import RigMatcher
from .nutproto import parse_target

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class UpsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``[[power.ups]]``: a UPS read over NUT and the rigs it feeds."""

    name: str
    nut: str  # "ups@host:3493"
    workers: list[str] = msgspec.field(default_factory=list)
    addresses: list[str] = msgspec.field(default_factory=list)
    poll_s: float = 5.0
    timeout_s: float = 3.0  # a poll unanswered this long: the UPS is unknown
    user_env: str = ""
    password_env: str = ""
    tls: bool = False  # STARTTLS before anything else (credentials then never go in clear)
    ca_file: str = ""  # the CA upsd's certificate is checked against (default: the system's)
    tls_verify: bool = True


class CurtailConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``[[power.curtail]]`` window (the API's curtailments have the same fields)."""

    name: str = ""
    workers: list[str] = msgspec.field(default_factory=list)
    addresses: list[str] = msgspec.field(default_factory=list)
    start: AwareTime = msgspec.field(name="from")
    until: AwareTime
    reason: str = ""
    rent: bool = True


class PowerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    order_lead_s: float = 300.0
    learn_lead: bool = True  # raise order_lead_s to the slowest of the last deliveries seen
    runtime_margin_s: float = 60.0
    # curtailments added through the API survive a restart here (next to the config file)
    curtailments_file: str = "power-curtailments.json"
    ups: list[UpsConfig] = msgspec.field(default_factory=list)
    curtail: list[CurtailConfig] = msgspec.field(default_factory=list)


def _error(message: str) -> Exception:
    from ..config import ConfigError

    return ConfigError(message)


def check_rigs(where: str, workers: list[str], addresses: list[str]) -> RigMatcher:
    """The rig selector of a UPS or a curtailment; an error names the field."""
    if not workers and not addresses:
        raise _error(f"{where}.workers: name the rigs (worker globs in workers and/or CIDRs in addresses)")
    for i, glob in enumerate(workers):
        if not isinstance(glob, str) or not glob.strip() or len(glob) > 200:
            raise _error(f"{where}.workers[{i}]: a worker glob such as \"farm1.rack1.*\", got {glob!r}")
    try:
        return RigMatcher.build(workers, addresses)
    except ValueError as exc:
        i, text = exc.args
        raise _error(f"{where}.addresses[{i}]: not an address or CIDR: {text!r}") from None


def check_curtail(where: str, c: CurtailConfig) -> RigMatcher:
    matcher = check_rigs(where, c.workers, c.addresses)
    if c.until <= c.start:
        raise _error(f"{where}.until: must be after from ({c.start.isoformat()})")
    if len(c.reason) > 200 or len(c.name) > 64:
        raise _error(f"{where}.reason: at most 200 characters (name at most 64)")
    return matcher


def validate_power(config: Any) -> None:
    """Checks msgspec's types cannot express; raises ConfigError naming the field."""
    p: PowerSection = config.power
    for name in ("order_lead_s", "runtime_margin_s"):
        if not 0 <= getattr(p, name) <= 86400:
            raise _error(f"power.{name}: seconds in 0..86400, got {getattr(p, name)}")
    seen: set[str] = set()
    for i, ups in enumerate(p.ups):
        where = f"power.ups[{i}]"
        if not _NAME.fullmatch(ups.name):
            raise _error(f"{where}.name: use 1-64 letters, digits, '_', '.', ':', '-'")
        if ups.name in seen:
            raise _error(f"{where}.name: duplicate UPS name {ups.name!r}")
        seen.add(ups.name)
        try:
            parse_target(ups.nut)
        except ValueError as exc:
            raise _error(f"{where}.nut: {exc}") from None
        check_rigs(where, ups.workers, ups.addresses)
        if not 0.05 <= ups.poll_s <= 3600:
            raise _error(f"{where}.poll_s: seconds in 0.05..3600, got {ups.poll_s}")
        if not 0 < ups.timeout_s <= 60:
            raise _error(f"{where}.timeout_s: seconds in (0, 60], got {ups.timeout_s}")
        if ups.ca_file and not Path(ups.ca_file).is_file():
            raise _error(f"{where}.ca_file: no such file {ups.ca_file!r}")
        if (ups.ca_file or not ups.tls_verify) and not ups.tls:
            raise _error(f"{where}.tls: ca_file / tls_verify need tls = true")
        for env in ("user_env", "password_env"):
            value = getattr(ups, env)
            if value and not _ENV.fullmatch(value):
                raise _error(f"{where}.{env}: must name an environment variable, got {value!r}")
    for i, c in enumerate(p.curtail):
        check_curtail(f"power.curtail[{i}]", c)
    if p.curtailments_file and config.path and not Path(p.curtailments_file).is_absolute():
        p.curtailments_file = str(Path(config.path).resolve().parent / p.curtailments_file)


def describe_power(p: PowerSection, renting: bool) -> list[str]:
    """What ``check-config`` prints for ``[power]``."""
    learned = " (raised to the slowest delivery seen)" if p.learn_lead else ""
    lines = [f"power: order lead {p.order_lead_s:g}s{learned}, runtime margin {p.runtime_margin_s:g}s"
             + ("" if renting else "; no [rental] section: at-risk rigs are shown, nothing is rented")]
    for u in p.ups:
        rigs = ", ".join([*u.workers, *u.addresses])
        auth = f", user from ${u.user_env}" if u.user_env else ""
        auth += (", STARTTLS" + ("" if u.tls_verify else " (verification OFF)")) if u.tls else ""
        lines.append(f"  UPS {u.name}: NUT {u.nut} every {u.poll_s:g}s (timeout {u.timeout_s:g}s{auth}) "
                     f"feeds {rigs}")
    for c in p.curtail:
        lines.append(f"  curtailment {c.name or '(unnamed)'}: {c.start.isoformat()} .. {c.until.isoformat()} "
                     f"{', '.join([*c.workers, *c.addresses])}" + (", rented" if c.rent else ", not rented")
                     + (f" ({c.reason})" if c.reason else ""))
    return lines
