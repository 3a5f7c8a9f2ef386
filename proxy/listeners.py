"""Rig listeners: which port speaks which protocol to which pools.

The main listener is ``[proxy] listen`` with ``[proxy] protocol`` ("sv1" by default); each
``[[listeners]]`` entry adds a port with its own ``protocol`` and ``pools = [names]``.
The main listener serves every pool no ``[[listeners]]`` entry names.  Every listener has
its own core (its own active group, health, failover), so an ASIC port and a GPU port in
one process fail over each on its own.  A pool whose ``protocol`` differs from its
listener's is a config error naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from .config import Config, ConfigError, PoolConfig, parse_address

MAIN = "main"
BOTH = "eth"  # a GPU port for both dialects, picked by each rig's first request
GETWORK_SUFFIX = ".getwork"  # the getwork half of an "eth" listener, as the API shows it


@dataclass(slots=True)
class Listener:
    """One rig port, resolved: its pools in config order."""

    name: str
    listen: str
    protocol: str
    pools: list[PoolConfig]
    where: str  # the config field that defines it, for messages


def _pool_index(config: Config) -> dict[str, int]:
    return {p.name: i for i, p in enumerate(config.pools)}


def validate_listeners(config: Config) -> None:
    """Names, addresses, pool names and protocols; raises ConfigError naming the field."""
    index = _pool_index(config)
    claimed: dict[str, str] = {}
    names = {MAIN}
    addresses = {config.proxy.listen: "proxy.listen"}
    for i, entry in enumerate(config.listeners):
        where = f"listeners[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", entry.name):
            raise ConfigError(f"{where}.name: use 1-64 letters, digits, '_', '.', '-'")
        if entry.name in names:
            raise ConfigError(f"{where}.name: {entry.name!r} is taken (\"main\" is [proxy] listen)")
        names.add(entry.name)
        parse_address(entry.listen, f"{where}.listen")
        if entry.listen in addresses and not entry.listen.endswith(":0"):
            raise ConfigError(f"{where}.listen: {entry.listen} is already {addresses[entry.listen]}")
        addresses[entry.listen] = f"{where}.listen"
        if not entry.pools:
            raise ConfigError(f"{where}.pools: name at least one [[pools]] entry")
        for j, name in enumerate(entry.pools):
            if name not in index:
                raise ConfigError(f"{where}.pools[{j}]: no [[pools]] entry named {name!r}")
            if name in claimed:
                raise ConfigError(f"{where}.pools[{j}]: pool {name!r} is already served by {claimed[name]}")
            claimed[name] = where
    for listener in resolve(config):
        for pool in listener.pools:
            k = index[pool.name]
            if listener.protocol == BOTH and pool.protocol not in ("ethstratum", "ethproxy"):
                raise ConfigError(f"pools[{k}].protocol: listener {listener.name!r} ({listener.where} = "
                                  f'"eth") serves both GPU dialects, so its pools say theirs: '
                                  f'"ethstratum" or "ethproxy"')
            if listener.protocol != BOTH and pool.protocol and pool.protocol != listener.protocol:
                raise ConfigError(f"pools[{k}].protocol: pool {pool.name!r} speaks {pool.protocol}, but "
                                  f"its listener {listener.name!r} ({listener.where}) speaks "
                                  f"{listener.protocol}")
    listeners = resolve(config)
    sv1 = [x for x in listeners if x.protocol == "sv1"]
    if len(sv1) > 1:
        raise ConfigError(f"{sv1[1].where}: one sv1 listener per process (the API, rental and "
                          "vardiff serve it); extra [[listeners]] speak ethstratum or ethproxy")
    main = listeners[0]
    if config.listeners and not main.pools:
        raise ConfigError("proxy.listen: every pool is named by a [[listeners]] entry, so the main "
                          "listener would have none; leave its pools out of [[listeners]]")


def resolve(config: Config) -> list[Listener]:
    """The main listener first, then each [[listeners]] entry, with their pools."""
    claimed = {n for entry in config.listeners for n in entry.pools}
    by_name = {p.name: p for p in config.pools}
    out = [Listener(MAIN, config.proxy.listen, config.proxy.protocol,
                    [p for p in config.pools if p.name not in claimed], "proxy.protocol")]
    for i, entry in enumerate(config.listeners):
        out.append(Listener(entry.name, entry.listen, entry.protocol,
                            [by_name[n] for n in entry.pools if n in by_name], f"listeners[{i}].protocol"))
    return out


def split_dialects(listener: Listener) -> list[Listener]:
    """An "eth" listener as its two halves (each with the pools of its dialect, if any): the
    EthereumStratum one keeps the name, the getwork one gets ``GETWORK_SUFFIX``."""
    if listener.protocol != BOTH:
        return [listener]
    halves = []
    for protocol, suffix in (("ethstratum", ""), ("ethproxy", GETWORK_SUFFIX)):
        pools = [p for p in listener.pools if p.protocol == protocol]
        if pools:
            halves.append(Listener(listener.name + suffix, listener.listen, protocol, pools, listener.where))
    return halves


def for_listener(config: Config, listener: Listener) -> Config:
    """The config a listener's core sees: the same settings, only its pools."""
    return msgspec.structs.replace(config, pools=list(listener.pools))
