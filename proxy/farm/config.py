"""``stratum-proxy farm -c FILE``: which instances make the farm, and the farm API's own bind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ..config import (
    ClusterSection,
    ConfigError,
    PoolConfig,
    RentalSection,
    _is_loopback,
    convert,
    parse_address,
    read_toml,
    validate_cluster,
    validate_pools,
    validate_rental,
)


class FarmSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str = "farm"
    listen: str = "127.0.0.1:8090"
    token: str = ""  # writes to the farm API (Bearer), as [api] token on an instance
    poll_s: float = 2.0  # how often every instance is read
    timeout_s: float = 2.0  # an instance slower than this is down for that poll
    retry_s: float = 5.0  # a change an instance did not take is sent again this often
    history_db: str = ""  # not used yet: each instance keeps its own history


class InstanceEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    api: str  # http://host:port of the instance's [api] listen
    token: str = ""  # the instance's [api] token (needed to propagate changes)


class FarmConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    farm: FarmSection = msgspec.field(default_factory=FarmSection)
    instances: list[InstanceEntry] = msgspec.field(default_factory=list)
    # the farm-wide backfill: one controller for all instances, so two never both rent
    rental: RentalSection | None = None
    # where rented hashpower may be pointed (rental.pool names one; the instances' own pools
    # are not visible here with their credentials), or rental.pool = "@proxy" with the
    # farm's public address (HAProxy's) as rental.public_address
    pools: list[PoolConfig] = msgspec.field(default_factory=list)
    # with [cluster]: a stateless reader of the farm's etcd (the instances are the registered
    # members, pool writes are etcd transactions, the instances' elected leader rents)
    cluster: ClusterSection | None = None
    path: str = ""


def validate_farm(config: FarmConfig) -> FarmConfig:
    f = config.farm
    host, _ = parse_address(f.listen, "farm.listen")
    if f.token in ("", "change-me") and not _is_loopback(host):
        raise ConfigError(f"farm.token: the farm API listens on {host} (not loopback), so it needs "
                          "a token of your own; set [farm] token, or listen on 127.0.0.1")
    for name in ("poll_s", "timeout_s", "retry_s"):
        if not getattr(f, name) > 0:
            raise ConfigError(f"farm.{name}: must be > 0")
    if config.cluster is not None:
        validate_cluster(config.cluster)
        if config.rental is not None:
            raise ConfigError("rental: with [cluster] the instances elect the one that rents; put "
                              "[rental] in the instances' files, not in the farm's")
    elif not config.instances:
        raise ConfigError("instances: at least one [[instances]] entry is required (or a [cluster] "
                          "section: the instances registered in etcd)")
    seen: set[str] = set()
    for i, inst in enumerate(config.instances):
        where = f"instances[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", inst.name):
            raise ConfigError(f"{where}.name: use 1-64 letters, digits, '_', '.', '-'")
        if inst.name in seen:
            raise ConfigError(f"{where}.name: duplicate instance name {inst.name!r}")
        seen.add(inst.name)
        parts = urlsplit(inst.api)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}.api: expected http://HOST:PORT, got {inst.api!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"{where}.api: bad port in {inst.api!r}") from None
    validate_pools(config.pools)
    if config.rental is not None:
        validate_rental(config)
    return config


def load_farm_dict(data: dict[str, Any], path: str = "") -> FarmConfig:
    config = convert(data, FarmConfig)
    config.path = path
    return validate_farm(config)


def load_farm(path: str | Path) -> FarmConfig:
    return load_farm_dict(read_toml(path), str(path))
