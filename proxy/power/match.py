"""Which rigs a UPS feeds or a curtailment stops: worker-name globs and address CIDRs."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from fnmatch import translate

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def remote_host(remote: str) -> str:
    """``1.2.3.4:5678`` / ``[::1]:5678`` -> the address part."""
    host, sep, port = remote.rpartition(":")
    if not sep or not port.isdigit():
        return remote
    return host.strip("[]")


@dataclass(frozen=True)
class RigMatcher:
    """A rig matches when any of its worker names matches any glob (case-sensitive, as
    pools treat worker names) or its address is in any of the networks."""

    workers: tuple[str, ...]
    networks: tuple[Network, ...]
    pattern: re.Pattern[str] | None = field(default=None, compare=False)  # the globs as one regex

    @classmethod
    def build(cls, workers: list[str], addresses: list[str]) -> RigMatcher:
        """ValueError(index, text) for an address that is not an address or CIDR."""
        nets = []
        for i, text in enumerate(addresses):
            try:
                nets.append(ipaddress.ip_network(str(text).strip(), strict=False))
            except ValueError:
                raise ValueError(i, text) from None
        pattern = re.compile("|".join(f"(?:{translate(g)})" for g in workers)) if workers else None
        return cls(tuple(workers), tuple(nets), pattern)

    def matches(self, workers: list[str], remote: str, addr: Address | None = None) -> bool:
        """``addr``: the remote address already parsed (a caller matching one rig against many
        selectors parses it once)."""
        if self.pattern is not None and any(self.pattern.match(w) for w in workers):
            return True
        if not self.networks:
            return False
        if addr is None:
            addr = parse_remote(remote)
        if addr is None:
            return False
        return any(addr in net for net in self.networks if net.version == addr.version)


def parse_remote(remote: str) -> Address | None:
    try:
        return ipaddress.ip_address(remote_host(remote))
    except ValueError:
        return None
