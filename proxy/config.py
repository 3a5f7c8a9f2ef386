"""Configuration: the TOML file, validated up front with the path of any bad field.

A farm operator edits this file by hand and reloads it live, so every error names the
field (``pools[1].url: ...``) and nothing half-valid is ever applied.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from .power.config import PowerSection, validate_power

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A config file that cannot run; the message starts with the bad field's path."""


class ProxySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:3333"
    # the rig protocol of the main listener: "sv1" (ASICs), "ethstratum" (GPU rigs,
    # EthereumStratum/1.0.0), "ethproxy" (GPU rigs, the getwork dialect) or "eth" (either,
    # by the rig's first request); more listeners as [[listeners]] (proxy/listeners.py)
    protocol: Literal["sv1", "ethstratum", "ethproxy", "eth"] = "sv1"
    # this process's name in /api/v1/status, /metrics labels and the farm control plane
    instance: str = "proxy"
    # several instances on one machine share proxy.listen and every [[listeners]] port
    # (SO_REUSEPORT, one per core): the kernel spreads the rigs, and a rig whose instance
    # dies reconnects to a live one
    reuse_port: bool = False
    # behind a load balancer: the rig's real address from its PROXY protocol header ("v1",
    # "v2"), believed only from these CIDRs (required when on); anything else is closed
    proxy_protocol: Literal["off", "v1", "v2"] = "off"
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # what rigs get as extranonce2_size; "auto" (with extranonce_prefix_size "auto"): chosen
    # from the pools' own sizes at start (see README, "Extranonce layout")
    extranonce2_size: int | Literal["auto"] = "auto"
    # bytes of proxy-chosen extranonce1 per rig: 0 = one upstream connection per rig,
    # 1 = up to 256 rigs per connection, 2 = 65,536; a pool needs
    # extranonce2_size >= extranonce_prefix_size + extranonce2_size to carry the rigs
    extranonce_prefix_size: int | Literal["auto"] = "auto"
    forward_worker_names: bool = False
    max_line_bytes: int = 16384
    # a forwarded share unanswered this long marks the pool silent (and counts as a timeout)
    # per-rig difficulty: each rig aims at one share this often (never above the pool's)
    rig_share_interval_s: float = 5.0
    rig_min_difficulty: float = 0.0  # floor for every rig (0: none; rigs may ask for their own)
    rig_max_difficulty: float = 0.0  # ceiling (0: only the pool's difficulty)
    # "auto": a pool is suspect (rigs move, its connection stays) when a request waits
    # longer than silent_p99_multiple x its own recent p99 answer latency, between
    # silent_floor_s and silent_ceiling_s; silent (down) at silent_ceiling_s.
    # A number: one fixed window, silent (down) after it, no suspicion.
    silent_timeout_s: float | Literal["auto"] = "auto"
    silent_floor_s: float = 0.5
    silent_ceiling_s: float = 4.0
    silent_p99_multiple: float = 4.0
    # a suspect pool that answers after all gets the rigs back after this (not failback_hold_s)
    suspect_hold_s: float = 5.0
    # suspected this many times within suspect_window_s: degraded (sits out health_window_s)
    suspect_limit: int = 3
    suspect_window_s: float = 600.0
    # a rig that subscribes before any pool is usable waits this long for its answer, so its
    # extranonce layout fits the pool it will mine on (then it gets the proxy's layout)
    layout_wait_s: float = 5.0
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
    # on SIGTERM: stop accepting rigs, then wait up to this long for the pools to answer the
    # shares already forwarded, so a restart loses none of them
    shutdown_drain_s: float = 5.0


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
    # "" = the protocol of the listener that serves the pool; set, it must match it
    protocol: Literal["sv1", "ethstratum", "ethproxy", ""] = ""

    @property
    def tls(self) -> bool:
        return self.url.startswith("stratum+ssl://")

    @property
    def endpoint(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 3333


RENTAL_PROXY_TARGET = "@proxy"  # [rental] pool value: point rented hashpower at the proxy itself
HASHPRICE = "hashprice"  # [rental] max_price value: the cap follows what the hashrate earns


class RentalSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[rental]``: rent hashpower when the farm's own delivery falls short (proxy/rental)."""

    provider: Literal["nicehash", "sim"] = "nicehash"
    api_url: str = "https://api2.nicehash.com"
    # credentials come from these environment variables, never from the file, never logged
    key_env: str = "NICEHASH_API_KEY"
    secret_env: str = "NICEHASH_API_SECRET"
    org_env: str = "NICEHASH_ORG_ID"
    market: str = "EU"
    algorithm: str = "SHA256ASICBOOST"
    target_hashrate: str  # what the operator wants delivered to the pool, "120 TH/s" (H/s .. EH/s)
    trigger_deficit: float = 0.05  # rent when delivered < target by more than this fraction ...
    trigger_after_s: float = 120.0  # ... for this long
    # cancel when the farm's own rigs deliver >= target * (1 - recover_band) for recover_after_s;
    # default half of trigger_deficit, so a cancel never re-triggers at once
    recover_band: float = -1.0
    recover_after_s: float = 600.0
    # BTC per PH/s per day, a decimal string, never exceeded; or "hashprice": what the farm's
    # hashrate earns, read from the pools' jobs (plus max_premium), so renting never costs more
    # than it brings in
    max_price: str
    max_premium: float = 0.0  # with max_price = "hashprice": pay at most this fraction above it
    daily_budget_btc: str  # decimal string; spent today + escrow of open orders stays within it
    min_order_s: float = 1800.0  # an order runs at least this long before it is cancelled
    # where rented hashpower is pointed: a [[pools]] name, or "@proxy" (this proxy's rig port,
    # announced as public_address); the default is the first pool
    pool: str = ""
    public_address: str = ""  # HOST:PORT marketplace rigs can reach when pool = "@proxy"
    worker: str = "rental"  # worker name rented rigs authorize with when pool = "@proxy"
    window_s: float = 60.0  # delivered hashrate = accepted share difficulty over this window
    interval_s: float = 5.0  # how often the controller decides
    ledger: str = "rental-ledger.sqlite3"  # relative paths are next to the config file

    @property
    def target_hs(self) -> float:
        from .rental.units import parse_hashrate

        return float(parse_hashrate(self.target_hashrate))

    @property
    def follows_hashprice(self) -> bool:
        return self.max_price == HASHPRICE

    @property
    def max_price_btc(self) -> Decimal | None:
        """The fixed cap; None when it follows the hashprice."""
        return None if self.follows_hashprice else Decimal(self.max_price)

    @property
    def daily_budget(self) -> Decimal:
        return Decimal(self.daily_budget_btc)

    @property
    def band(self) -> float:
        return self.trigger_deficit / 2 if self.recover_band < 0 else self.recover_band


class ClusterSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Several instances coordinated through etcd (see proxy/cluster): pool settings, the
    members' summaries, the rental leader and its ledger live under ``/<farm>/``."""

    etcd: list[str]  # client URLs of the etcd members, http://HOST:PORT
    farm: str = "farm"  # the key prefix: instances with the same farm coordinate together
    lease_ttl_s: int = 10  # an instance (and the rental leader) that stops renewing is gone after this
    publish_s: float = 2.0  # how often each instance publishes its summary
    timeout_s: float = 2.0  # an etcd call unanswered this long: etcd is unreachable (or has no quorum)
    # where the other instances and the farm view reach this instance's API (default:
    # http://<api.listen>; set it when api.listen is 0.0.0.0 or behind NAT)
    api_url: str = ""
    # https:// etcd endpoints: verified against ca_file (else the system CA store); with
    # cert_file + key_file the instance presents a client certificate (etcd --client-cert-auth)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class ListenerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An extra rig port beside [proxy] listen, with its own protocol and pools (failing
    over on its own); see proxy/listeners.py."""

    name: str
    listen: str
    protocol: Literal["sv1", "ethstratum", "ethproxy", "eth"]
    pools: list[str]


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    proxy: ProxySection = msgspec.field(default_factory=ProxySection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    pools: list[PoolConfig] = msgspec.field(default_factory=list)
    listeners: list[ListenerConfig] = msgspec.field(default_factory=list)
    rental: RentalSection | None = None
    cluster: ClusterSection | None = None
    power: PowerSection | None = None  # UPSes and curtailments (proxy/power)
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
    if (p.extranonce2_size == "auto") != (p.extranonce_prefix_size == "auto"):
        raise ConfigError('proxy.extranonce2_size and proxy.extranonce_prefix_size: both "auto" '
                          "or both numbers")
    if p.extranonce2_size != "auto" and not 1 <= p.extranonce2_size <= 16:
        raise ConfigError("proxy.extranonce2_size: must be 1..16")
    if p.extranonce_prefix_size != "auto" and not 0 <= p.extranonce_prefix_size <= 4:
        raise ConfigError("proxy.extranonce_prefix_size: must be 0..4")
    if p.max_rigs < 1 or p.max_rigs_per_address < 0:
        raise ConfigError("proxy.max_rigs: must be >= 1 (max_rigs_per_address >= 0)")
    if not p.auth_timeout_s > 0 or not p.max_requests_per_s > 0:
        raise ConfigError("proxy.auth_timeout_s and proxy.max_requests_per_s: must be > 0")
    if p.max_line_bytes < 512:
        raise ConfigError("proxy.max_line_bytes: must be at least 512")
    if p.silent_timeout_s != "auto" and not (
            isinstance(p.silent_timeout_s, (int, float)) and p.silent_timeout_s > 0):
        raise ConfigError('proxy.silent_timeout_s: must be "auto" or a number of seconds > 0')
    if not 0 < p.silent_floor_s <= p.silent_ceiling_s:
        raise ConfigError("proxy.silent_floor_s: must be > 0 and <= proxy.silent_ceiling_s")
    if p.rig_min_difficulty < 0 or p.rig_max_difficulty < 0 or (
            p.rig_max_difficulty and p.rig_min_difficulty > p.rig_max_difficulty):
        raise ConfigError("proxy.rig_min_difficulty / rig_max_difficulty: must be >= 0, min <= max")
    if p.proxy_protocol != "off" and not p.trusted_proxies:
        raise ConfigError("proxy.trusted_proxies: required with proxy_protocol (the CIDRs of "
                          "the load balancers whose PROXY headers are believed)")
    for i, cidr in enumerate(p.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"proxy.trusted_proxies[{i}]: not an address or CIDR: {cidr!r}") from None
    if p.suspect_limit < 1:
        raise ConfigError("proxy.suspect_limit: must be >= 1")
    for name in ("max_job_age_s", "keepalive_s", "reconnect_min_s",
                 "reconnect_max_s", "connect_timeout_s", "health_window_s", "split_slice_s",
                 "history_sample_s", "layout_wait_s", "silent_p99_multiple", "suspect_hold_s",
                 "suspect_window_s", "rig_share_interval_s"):
        if not getattr(p, name) > 0:
            raise ConfigError(f"proxy.{name}: must be > 0")
    if p.failback_hold_s < 0:
        raise ConfigError("proxy.failback_hold_s: must be >= 0")
    if not 0 <= p.shutdown_drain_s <= 600:
        raise ConfigError("proxy.shutdown_drain_s: must be 0..600")
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
    validate_pools(config.pools)
    from .listeners import validate_listeners  # listeners need PoolConfig: imported late
    validate_listeners(config)
    if config.rental is not None:
        validate_rental(config)
    if config.cluster is not None:
        validate_cluster(config.cluster)
    if config.power is not None:
        validate_power(config)
    return config


def validate_cluster(c: ClusterSection) -> None:
    if not c.etcd:
        raise ConfigError("cluster.etcd: list at least one etcd client URL (http://HOST:PORT)")
    for i, url in enumerate(c.etcd):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ConfigError(f"cluster.etcd[{i}]: expected http://HOST:PORT or https://HOST:PORT, "
                              f"got {url!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", c.farm):
        raise ConfigError("cluster.farm: use 1-64 letters, digits, '_', '.', '-'")
    if not 1 <= c.lease_ttl_s <= 3600:
        raise ConfigError("cluster.lease_ttl_s: must be 1..3600 seconds")
    if not 0 < c.publish_s < c.lease_ttl_s:
        raise ConfigError("cluster.publish_s: must be > 0 and below cluster.lease_ttl_s")
    if not 0 < c.timeout_s < c.lease_ttl_s:
        raise ConfigError("cluster.timeout_s: must be > 0 and below cluster.lease_ttl_s")
    for name in ("ca_file", "cert_file", "key_file"):
        if getattr(c, name) and not Path(getattr(c, name)).is_file():
            raise ConfigError(f"cluster.{name}: no such file {getattr(c, name)!r}")
    if bool(c.cert_file) != bool(c.key_file):
        raise ConfigError("cluster.cert_file and cluster.key_file: set both (a client certificate "
                          "and its key) or neither")
    api = urlsplit(c.api_url)
    if c.api_url and (api.scheme not in ("http", "https") or not api.hostname):
        raise ConfigError(f"cluster.api_url: expected http://HOST:PORT, got {c.api_url!r}")


def validate_pools(pools: list[PoolConfig]) -> None:
    """Names unique and well formed, URLs stratum+tcp/ssl://HOST:PORT, users set."""
    seen: set[str] = set()
    for i, pool in enumerate(pools):
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


def _decimal(text: str, field: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{field}: expected a decimal string such as \"0.0005\", got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"{field}: must be a number > 0, got {text!r}")
    return value


def validate_rental(config: Any) -> None:
    """``[rental]`` of a proxy's config or the farm's (anything with rental, pools, path)."""
    from .rental.units import parse_hashrate

    r = config.rental
    assert r is not None
    try:
        parse_hashrate(r.target_hashrate)
    except ValueError as exc:
        raise ConfigError(f"rental.target_hashrate: {exc}") from None
    if r.max_price != HASHPRICE:
        try:
            _decimal(r.max_price, "rental.max_price")
        except ConfigError as exc:
            raise ConfigError(f'{exc} (or "{HASHPRICE}")') from None
        if r.max_premium:
            raise ConfigError(f'rental.max_premium: only with max_price = "{HASHPRICE}" (a fixed '
                              f"max_price is the cap itself), got {r.max_premium}")
    if not -1 < r.max_premium <= 1:
        raise ConfigError(f"rental.max_premium: a fraction above the hashprice in (-1, 1] "
                          f"(0.05 = at most 5% above), got {r.max_premium}")
    _decimal(r.daily_budget_btc, "rental.daily_budget_btc")
    if not r.api_url.startswith(("https://", "http://")):
        raise ConfigError(f"rental.api_url: expected an https:// URL, got {r.api_url!r}")
    if r.provider == "nicehash" and r.api_url.startswith("http://") and not _is_loopback(
            urlsplit(r.api_url).hostname or ""):
        raise ConfigError("rental.api_url: credentials are only sent over https (http:// only on loopback)")
    for name in ("key_env", "secret_env", "org_env"):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", getattr(r, name)):
            raise ConfigError(f"rental.{name}: must name an environment variable, got {getattr(r, name)!r}")
    if not 0 < r.trigger_deficit < 1:
        raise ConfigError(f"rental.trigger_deficit: must be a fraction in (0, 1), got {r.trigger_deficit}")
    if r.recover_band >= 0 and not r.recover_band < r.trigger_deficit:
        raise ConfigError("rental.recover_band: must be smaller than trigger_deficit (or the order flaps)")
    for name in ("trigger_after_s", "recover_after_s", "min_order_s"):
        if not getattr(r, name) >= 0:
            raise ConfigError(f"rental.{name}: must be >= 0")
    for name in ("window_s", "interval_s"):
        if not getattr(r, name) > 0:
            raise ConfigError(f"rental.{name}: must be > 0")
    if not r.pool:
        if not config.pools:
            raise ConfigError('rental.pool: name a [[pools]] entry or "@proxy"')
        r.pool = config.pools[0].name
    if r.pool == RENTAL_PROXY_TARGET:
        if not r.public_address:
            raise ConfigError('rental.public_address: required when pool = "@proxy" (HOST:PORT the '
                              "marketplace's rigs dial)")
        parse_address(r.public_address, "rental.public_address")
        if not r.worker:
            raise ConfigError("rental.worker: must not be empty")
    elif r.pool not in {p.name for p in config.pools}:
        raise ConfigError(f"rental.pool: no [[pools]] entry named {r.pool!r} (or use \"@proxy\")")
    if r.ledger and config.path and not Path(r.ledger).is_absolute():
        r.ledger = str(Path(config.path).resolve().parent / r.ledger)


def convert(data: dict[str, Any], cls: type[_T]) -> _T:
    """msgspec.convert with the bad field's path first in the error."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(_friendly_path(str(exc))) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_dict(data: dict[str, Any], path: str = "") -> Config:
    config = convert(data, Config)
    config.path = path
    return validate(config)


def load(path: str | Path) -> Config:
    return load_dict(read_toml(path), str(path))
