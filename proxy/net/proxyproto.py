"""The PROXY protocol (HAProxy's, versions 1 and 2): the rig's real address, in front of its
first Stratum byte, from a load balancer the proxy trusts.

Behind HAProxy every rig would otherwise have HAProxy's address, and per-address limits, the
rigs table, events and any rule by address would be blind.  This module only parses (no
sockets): ``parse(buffer)`` says the header is incomplete (None), or returns the address and
how many bytes it took, or raises ``ProxyHeaderError`` for anything malformed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's figure)
V2_MAX_BODY = 2048  # addresses and TLVs; HAProxy sends far less (cap what we buffer)


class ProxyHeaderError(ValueError):
    """A header that is not a valid PROXY protocol header of the expected version."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """The connection's real source, or None for a LOCAL/UNKNOWN header (health checks):
    then the transport's own peer address stands."""

    source: tuple[str, int] | None
    version: int


class ProxyProtocolPolicy:
    """Which version the rig port expects, and from which balancers it is believed."""

    __slots__ = ("version", "trusted")

    def __init__(self, version: int, trusted: list[str]) -> None:
        self.version = version
        self.trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted]

    def trusts(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.trusted)


def parse(buffer: bytes, version: int) -> tuple[ProxyHeader, int] | None:
    """(header, bytes consumed), or None while the header is not complete yet."""
    if version == 2:
        return _parse_v2(buffer)
    if version == 1:
        return _parse_v1(buffer)
    raise ValueError(f"PROXY protocol version {version}?")


def _parse_v1(buffer: bytes) -> tuple[ProxyHeader, int] | None:
    if len(buffer) < len(V1_PREFIX):
        if not V1_PREFIX.startswith(buffer):
            raise ProxyHeaderError("not a PROXY protocol v1 header")
        return None
    if not buffer.startswith(V1_PREFIX):
        raise ProxyHeaderError("not a PROXY protocol v1 header")
    end = buffer.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buffer) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        return None
    try:
        fields = buffer[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(None, 1), end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 header malformed: {buffer[:end][:80]!r}")
    family = 4 if fields[1] == "TCP4" else 6
    source = _address(fields[2], fields[4], family)
    _address(fields[3], fields[5], family)  # the destination must be valid too
    return ProxyHeader(source, 1), end + 2


def _address(host: str, port: str, family: int) -> tuple[str, int]:
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ProxyHeaderError(f"PROXY header address malformed: {host[:40]!r} {port[:8]!r}") from None
    if ip.version != family or not port.isdigit() or not 0 <= number <= 65535 or str(ip) != host:
        raise ProxyHeaderError(f"PROXY header address malformed: {host[:40]!r} {port[:8]!r}")
    return str(ip), number


def _parse_v2(buffer: bytes) -> tuple[ProxyHeader, int] | None:
    if len(buffer) < 16:
        if not V2_SIGNATURE.startswith(buffer[:12]):
            raise ProxyHeaderError("not a PROXY protocol v2 header")
        return None
    if buffer[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("not a PROXY protocol v2 header")
    version_command, family, length = buffer[12], buffer[13], struct.unpack_from("!H", buffer, 14)[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    if length > V2_MAX_BODY:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes (at most {V2_MAX_BODY})")
    if len(buffer) < 16 + length:
        return None
    body = buffer[16:16 + length]
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(None, 2), 16 + length
    if command != 1:
        raise ProxyHeaderError(f"PROXY v2 header with command {command}")
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("PROXY v2 IPv4 header too short")
        host = str(ipaddress.IPv4Address(body[:4]))
        port = struct.unpack_from("!H", body, 8)[0]
    elif family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("PROXY v2 IPv6 header too short")
        host = str(ipaddress.IPv6Address(body[:16]))
        port = struct.unpack_from("!H", body, 32)[0]
    elif family == 0x00:  # UNSPEC: keep the transport's address
        return ProxyHeader(None, 2), 16 + length
    else:
        raise ProxyHeaderError(f"PROXY v2 header for an unsupported family 0x{family:02x}")
    return ProxyHeader((host, port), 2), 16 + length


def v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A PROXY v2 header (what HAProxy's send-proxy-v2 writes), for tests and tools."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    family = 0x11 if src.version == 4 else 0x21
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
