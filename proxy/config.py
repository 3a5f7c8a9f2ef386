"""Configuration: the TOML file, validated up front with the path of any bad field.

A farm operator edits this file by hand and reloads it live, so every error names the
field (``pools[1].url: ...``) and nothing half-valid is ever applied.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec


class ConfigError(ValueError):
    """A config file that cannot run; the message starts with the bad field's path."""


class ProxySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:3333"
    instance: str = "proxy"
    # what rigs get as extranonce2_size; >= 4 where every pool allows it
    extranonce2_size: int = 4
    # bytes of proxy-chosen extranonce1 per rig: 0 = one upstream connection per rig,
    # 1 = up to 256 rigs per connection, 2 = 65,536; a pool needs
    # extranonce2_size >= extranonce_prefix_size + extranonce2_size to carry the rigs
    extranonce_prefix_size: int = 2
    forward_worker_names: bool = False
    max_line_bytes: int = 16384
    # a forwarded share unanswered this long marks the pool silent (and counts as a timeout)
    silent_timeout_s: float = 4.0
    # no new job from the pool for this long marks it stale
    max_job_age_s: float = 150.0
    # a recovered higher-priority pool must stay healthy this long before hashrate returns
    failback_hold_s: float = 60.0
    # rigs on a dead pool get their last job again this often so firmware never sees silence
    keepalive_s: float = 30.0
    reconnect_min_s: float = 0.25
    reconnect_max_s: float = 10.0
    connect_timeout_s: float = 5.0
    ntime_window_s: int = 7200
    # health limits (a pool beyond these is degraded and loses its hashrate)
    max_reject_ratio: float = 0.5
    max_timeout_ratio: float = 0.5
    latency_slo_ms: float = 0.0  # p99 of share answers; 0 = no latency limit
    health_window_s: float = 60.0
    min_answers_for_health: int = 20
    history_db: str = ""
    # hostile or broken rigs
    max_rigs: int = 100_000  # connections refused (closed at once) beyond this
    max_rigs_per_address: int = 0  # per source IP; 0 = no limit (farms behind NAT share one)
    auth_timeout_s: float = 30.0  # connected but not subscribed+authorized by then: closed
    max_requests_per_s: float = 100.0  # per rig, sustained; bursts up to 4x are allowed
    # workers rigs may authorize as (glob patterns, e.g. "farm1.*"); empty = any worker
    allowed_workers: list[str] = msgspec.field(default_factory=list)
    history_sample_s: float = 60.0  # how often per-pool counters are sampled into the history
    # weighted split: how often rigs are re-planned across pools of equal priority
    split_slice_s: float = 10.0


class ApiSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    token: str = ""
    enabled: bool = True


class PoolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    url: str
    user: str
    password: str = "x"
    priority: int = 0
    weight: float = 1.0
    enabled: bool = True
    standby: Literal["hot", "cold"] = "hot"
    ca_file: str = ""
    tls_verify: bool = True

    @property
    def tls(self) -> bool:
        return self.url.startswith("stratum+ssl://")

    @property
    def endpoint(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 3333


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    proxy: ProxySection = msgspec.field(default_factory=ProxySection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    pools: list[PoolConfig] = msgspec.field(default_factory=list)
    rental: dict[str, Any] | None = None
    path: str = ""


_PATH_RE = re.compile(r"\$((?:\.[A-Za-z_][\w]*|\[\d+\])*)")


def _friendly_path(message: str) -> str:
    """Turn msgspec's ``... - at `$.pools[1].url``` into ``pools[1].url: ...``."""
    match = re.search(r" - at `\$([^`]*)`", message)
    if not match:
        return message
    where = match.group(1).lstrip(".") or "(top level)"
    what = message[: match.start()]
    return f"{where}: {what}"


def parse_address(text: str, field: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{field}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{field}: missing host in {text!r}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(config: Config) -> Config:
    """Checks msgspec's types cannot express; raises ConfigError naming the field."""
    p = config.proxy
    parse_address(p.listen, "proxy.listen")
    parse_address(config.api.listen, "api.listen")
    if not 1 <= p.extranonce2_size <= 16:
        raise ConfigError("proxy.extranonce2_size: must be 1..16")
    if not 0 <= p.extranonce_prefix_size <= 4:
        raise ConfigError("proxy.extranonce_prefix_size: must be 0..4")
    if p.max_rigs < 1 or p.max_rigs_per_address < 0:
        raise ConfigError("proxy.max_rigs: must be >= 1 (max_rigs_per_address >= 0)")
    if not p.auth_timeout_s > 0 or not p.max_requests_per_s > 0:
        raise ConfigError("proxy.auth_timeout_s and proxy.max_requests_per_s: must be > 0")
    if p.max_line_bytes < 512:
        raise ConfigError("proxy.max_line_bytes: must be at least 512")
    for name in ("silent_timeout_s", "max_job_age_s", "keepalive_s", "reconnect_min_s",
                 "reconnect_max_s", "connect_timeout_s", "health_window_s", "split_slice_s",
                 "history_sample_s"):
        if not getattr(p, name) > 0:
            raise ConfigError(f"proxy.{name}: must be > 0")
    if p.failback_hold_s < 0:
        raise ConfigError("proxy.failback_hold_s: must be >= 0")
    if p.reconnect_max_s < p.reconnect_min_s:
        raise ConfigError("proxy.reconnect_max_s: must be >= reconnect_min_s")
    for name in ("max_reject_ratio", "max_timeout_ratio"):
        if not 0 < getattr(p, name) <= 1:
            raise ConfigError(f"proxy.{name}: must be in (0, 1]")
    api_host, _ = parse_address(config.api.listen, "api.listen")
    if (config.api.enabled and config.api.token in ("", "change-me")
            and not _is_loopback(api_host)):
        raise ConfigError(f"api.token: the API listens on {api_host} (not loopback), so it needs a "
                          "token of your own; set [api] token, or listen on 127.0.0.1")
    if not config.pools:
        raise ConfigError("pools: at least one [[pools]] entry is required")
    seen: set[str] = set()
    for i, pool in enumerate(config.pools):
        where = f"pools[{i}]"
        if not pool.name or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", pool.name):
            raise ConfigError(f"{where}.name: use 1-64 letters, digits, '_', '.', '-'")
        if pool.name in seen:
            raise ConfigError(f"{where}.name: duplicate pool name {pool.name!r}")
        seen.add(pool.name)
        parts = urlsplit(pool.url)
        if parts.scheme not in ("stratum+tcp", "stratum+ssl"):
            raise ConfigError(f"{where}.url: scheme must be stratum+tcp:// or stratum+ssl://, "
                              f"got {pool.url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{where}.url: bad port in {pool.url!r}") from None
        if not parts.hostname or port is None:
            raise ConfigError(f"{where}.url: expected stratum+tcp://HOST:PORT, got {pool.url!r}")
        if not pool.user:
            raise ConfigError(f"{where}.user: must not be empty")
        if not pool.weight >= 0 or pool.weight != pool.weight:
            raise ConfigError(f"{where}.weight: must be >= 0")
        if pool.ca_file and not Path(pool.ca_file).is_file():
            raise ConfigError(f"{where}.ca_file: no such file {pool.ca_file!r}")
    return config


def load_dict(data: dict[str, Any], path: str = "") -> Config:
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_friendly_path(str(exc))) from None
    config.path = path
    return validate(config)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return load_dict(data, str(path))
