"""The ledger's fence against a real etcd: a write succeeds only while the leader key carries
this instance's election, and a money-moving call is never sent without its intent durable."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from proxy.cluster.etcd import EtcdClient, compare_create, put_op
from proxy.cluster.ledger import EtcdLedger, Fenced, FencedProvider
from proxy.rental.provider import ProviderError


class CountingProvider:
    """Records the calls that reach the marketplace (none may, once fenced)."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def place_order(self, **kwargs):
        self.calls.append("place")
        raise AssertionError("a fenced leader reached the marketplace")


async def elect(etcd: EtcdClient, key: str, lease: int, name: str) -> int:
    ok, revision, _ = await etcd.txn([compare_create(key, 0)], [put_op(key, name, lease)])
    assert ok, f"{name} could not take {key}"
    return revision


async def test_a_replaced_leader_writes_nothing_and_sends_nothing(etcd):
    root = f"/fence-{uuid.uuid4().hex[:6]}"
    client = EtcdClient(etcd.endpoints, timeout_s=1.0)
    try:
        old_lease = await client.grant(2)
        election = await elect(client, f"{root}/leader", old_lease, "old")
        ledger = EtcdLedger(client, f"{root}/ledger", f"{root}/leader", lambda: election)
        ledger.begin("intent-1", "place", {"limit_hs": 1.0, "price": Decimal("0.001")})
        await ledger.flush()
        kvs, _ = await client.range(f"{root}/ledger/", prefix=True)
        assert [kv.key for kv in kvs] == [f"{root}/ledger/intents/intent-1"]
        assert json.loads(kvs[0].value)["state"] == "pending"
        # a new leader reads the old one's intents back
        reader = EtcdLedger(client, f"{root}/ledger", f"{root}/leader", lambda: 0)
        assert await reader.load() == 1
        assert [i["id"] for i in reader.pending_intents()] == ["intent-1"]
        # more rows than one etcd transaction may carry: written in several, all fenced
        for n in range(250):
            ledger.finish("intent-1", "done", {"n": n})
            ledger.begin(f"bulk-{n}", "cancel", {"reason": "bulk"}, order_id="o")
        await ledger.flush()
        bulk = EtcdLedger(client, f"{root}/ledger", f"{root}/leader", lambda: 0)
        assert await bulk.load() == 251 and bulk.pending_intents()[0]["id"] == "bulk-0"

        # the old leader's lease ends (as after a stall past its TTL) and another instance leads
        await client.revoke(old_lease)
        new_lease = await client.grant(2)
        await elect(client, f"{root}/leader", new_lease, "new")
        ledger.begin("intent-2", "place", {"limit_hs": 1.0, "price": Decimal("0.001")})
        with pytest.raises(Fenced):
            await ledger.flush()
        assert await client.get(f"{root}/ledger/intents/intent-2") is None
        # its marketplace calls are refused before they leave, even if its own clock still
        # trusted the lease (leading() says None): the intent cannot be made durable
        market = CountingProvider()
        fenced = FencedProvider(market, ledger, lambda: None)
        with pytest.raises(ProviderError, match="not sent"):
            await fenced.place_order(limit_hs=1.0, pool_id="p", price=Decimal("0.001"),
                                     amount=Decimal("0.01"), idempotency_key="intent-3")
        assert market.calls == [] and fenced.refused == 1
        # and one whose own clock says the lease lapsed does not even ask etcd
        stale = FencedProvider(market, ledger, lambda: "lease last renewed 3s ago")
        with pytest.raises(ProviderError, match="lease last renewed"):
            await stale.place_order(limit_hs=1.0, pool_id="p", price=Decimal("0.001"),
                                    amount=Decimal("0.01"), idempotency_key="intent-4")
        assert market.calls == []
        await client.revoke(new_lease)
    finally:
        await client.close()


async def test_an_unreachable_etcd_is_named_and_the_next_member_answers(etcd):
    from proxy.cluster.etcd import EtcdUnavailable
    from tests.etcd_fixture import free_port

    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = EtcdClient(dead, timeout_s=0.5)
    try:
        with pytest.raises(EtcdUnavailable, match="cannot connect") as err:
            await client.get("/x")
        assert all(url in str(err.value) for url in dead)
        # a dead member first in the list: the next one answers
        client.endpoints = [dead[0], etcd.endpoints[1]]
        assert await client.put("/unreachable-test", "ok") > 0
        assert (await client.get("/unreachable-test")).value == b"ok"
    finally:
        await client.close()


async def test_etcd_over_tls_with_a_client_certificate(tmp_path, certs):
    from proxy.cluster.etcd import EtcdUnavailable, client_for
    from proxy.config import ClusterSection
    from tests.etcd_fixture import TlsEtcd

    (server_cert, server_key), (client_cert, client_key) = certs["good"], certs["bad"]
    # etcd's own JSON gateway dials the member with the member's certificate: trust both
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(client_cert.read_bytes() + server_cert.read_bytes())
    member = TlsEtcd(tmp_path, server_cert, server_key, client_ca=trusted)
    member.start()
    try:
        section = ClusterSection(etcd=[member.url], timeout_s=2.0, ca_file=str(server_cert),
                                 cert_file=str(client_cert), key_file=str(client_key))
        client = client_for(section)
        try:
            await wait_for_answer(client)
            assert (await client.get("/tls-test")).value == b"ok"
        finally:
            await client.close()
        # without a client certificate etcd refuses the connection; without the CA the proxy
        # refuses etcd's certificate: both are "unreachable", with the reason
        for bad in (ClusterSection(etcd=[member.url], timeout_s=2.0, ca_file=str(server_cert)),
                    ClusterSection(etcd=[member.url], timeout_s=2.0, cert_file=str(client_cert),
                                   key_file=str(client_key))):
            client = client_for(bad)
            try:
                with pytest.raises(EtcdUnavailable):
                    await client.get("/tls-test")
            finally:
                await client.close()
    finally:
        member.close()


async def wait_for_answer(client: EtcdClient) -> None:
    """Until the new member takes a write (it elects itself a moment after it listens)."""
    import asyncio

    from proxy.cluster.etcd import EtcdError

    for _ in range(100):
        try:
            await client.put("/tls-test", "ok")
            return
        except EtcdError:
            await asyncio.sleep(0.1)
    raise AssertionError("the TLS etcd member never took a write")
