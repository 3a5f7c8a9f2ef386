"""The PROXY protocol header parser (v1 and v2), on the spec's formats, and fuzzed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.net.proxyproto import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyProtocolPolicy,
    parse,
    v2_header,
)


def test_v1_tcp4_and_tcp6_and_unknown():
    line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 3333\r\n"
    header, used = parse(line + b'{"id":1}\n', 1)
    assert header.source == ("192.0.2.10", 56324) and used == len(line)
    header, _ = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 3333\r\n", 1)
    assert header.source == ("2001:db8::7", 4000)
    header, used = parse(b"PROXY UNKNOWN\r\n", 1)
    assert header.source is None and used == 15


def test_v2_ipv4_ipv6_local_with_trailing_bytes():
    raw = v2_header(("10.1.2.3", 4567), ("127.0.0.1", 3333))
    header, used = parse(raw + b"rest", 2)
    assert header.source == ("10.1.2.3", 4567) and used == len(raw) == 28
    header, _ = parse(v2_header(("2001:db8::5", 9), ("::1", 3333)), 2)
    assert header.source == ("2001:db8::5", 9)
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    header, used = parse(local, 2)
    assert header.source is None and used == 16
    # TLVs after the addresses are skipped with them
    tlv = b"\x04\x00\x03abc"
    body = v2_header(("10.0.0.9", 1), ("10.0.0.1", 2))[16:] + tlv
    header, used = parse(V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body, 2)
    assert header.source == ("10.0.0.9", 1) and used == 16 + len(body)


@pytest.mark.parametrize("version,data", [
    (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 1"), (1, b"PROX"), (2, V2_SIGNATURE[:7]),
    (2, v2_header(("10.1.2.3", 1), ("10.1.2.4", 2))[:20]),
])
def test_incomplete_headers_wait_for_more(version, data):
    assert parse(data, version) is None


@pytest.mark.parametrize("version,data", [
    (1, b'{"id":1,"method":"mining.subscribe"}\n'),
    (1, b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"),
    (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n"),
    (1, b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
    (1, b"PROXY TCP4 " + b"1" * 120),
    (2, b'{"id":1,"method":"mining.subscribe","params":[]}\n'),
    (2, V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12)),  # version 3
    (2, V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + bytes(12)),  # command 2
    (2, V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 4) + bytes(4)),  # too short
    (2, V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + bytes(216)),  # unix socket
    (2, V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000)),  # absurd length
])
def test_malformed_headers_are_refused(version, data):
    with pytest.raises(ProxyHeaderError):
        parse(data, version)


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([1, 2]), data=st.binary(max_size=300),
       prefix=st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"]))
def test_any_bytes_give_a_header_more_to_wait_for_or_a_clear_error(version, data, prefix):
    buffer = prefix + data
    try:
        result = parse(buffer, version)
    except ProxyHeaderError:
        return
    if result is not None:
        header, used = result
        assert 0 < used <= len(buffer)
        assert header.source is None or 0 <= header.source[1] <= 65535


def test_only_trusted_balancers_are_believed():
    policy = ProxyProtocolPolicy(2, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"])
    assert policy.trusts("127.0.0.1") and policy.trusts("10.9.8.7") and policy.trusts("::1")
    assert policy.trusts("::ffff:10.0.0.5")  # IPv4 on a dual-stack socket
    assert not policy.trusts("127.0.0.2") and not policy.trusts("192.168.1.1")
    assert not policy.trusts("not-an-address")
