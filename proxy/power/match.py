"""Which rigs a UPS feeds or a curtailment stops: worker-name globs and address CIDRs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fnmatch import fnmatchcase

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    @classmethod
    def build(cls, workers: list[str], addresses: list[str]) -> RigMatcher:
        """ValueError(index, text) for an address that is not an address or CIDR."""
        nets = []
        for i, text in enumerate(addresses):
            try:
                nets.append(ipaddress.ip_network(str(text).strip(), strict=False))
            except ValueError:
                raise ValueError(i, text) from None
        return cls(tuple(workers), tuple(nets))

    def matches(self, workers: list[str], remote: str) -> bool:
        if any(fnmatchcase(w, g) for g in self.workers for w in workers):
            return True
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(remote_host(remote))
        except ValueError:
            return False
        return any(addr in net for net in self.networks if net.version == addr.version)
