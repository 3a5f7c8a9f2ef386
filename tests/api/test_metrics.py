"""/metrics: Prometheus text 0.0.4 that parses, and numbers that agree with the REST views."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.api.metrics import escape_label, render_metrics
from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until

pytestmark = pytest.mark.timeout(60)


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples, name, **labels) -> float:
    found = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def _metrics(api) -> str:
    assert api.http is not None
    async with api.http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return await resp.text()


async def test_metrics_agree_with_the_pool_views(api):
    await api.pool("primary")
    await api.pool("backup")
    svc = await api.start()
    fleet = await api.fleet(4)
    await wait_until(lambda: api.view("primary")["accepted"] >= 40, 20, what="40 shares accepted")
    await fleet.drain(10)
    await wait_until(lambda: api.view("primary")["in_flight"] == 0, 5, what="no share in flight")

    text = await _metrics(api)
    pools = {p["name"]: p for p in (await api.get("/api/v1/pools"))["pools"]}
    status = await api.get("/api/v1/status")
    samples = _samples(text)

    for name, view in pools.items():
        assert _value(samples, "stratum_proxy_shares_total", pool=name, result="accepted") == view["accepted"]
        assert _value(samples, "stratum_proxy_pool_rigs", pool=name) == view["rigs"]
        assert _value(samples, "stratum_proxy_pool_active", pool=name) == (1 if view["active"] else 0)
        assert _value(samples, "stratum_proxy_pool_up", pool=name) == (1 if view["state"] == "healthy" else 0)
        assert _value(samples, "stratum_proxy_pool_forwarded_total", pool=name) == view["forwarded"]
        assert _value(samples, "stratum_proxy_shares_total", pool=name, result="timeout") == view["timeouts"]
        # histogram: cumulative buckets ending in +Inf == _count == the view's since-start count
        buckets = [s for s in samples["stratum_proxy_share_latency_seconds_bucket"]
                   if s.labels["pool"] == name]
        bounds, _, view_sum, _ = svc.view.latency_histogram(name)
        assert [float(b.labels["le"]) for b in buckets] == [*bounds, float("inf")]
        counts = [b.value for b in buckets]
        assert counts == sorted(counts)
        count = _value(samples, "stratum_proxy_share_latency_seconds_count", pool=name)
        assert counts[-1] == count == view["latency_ms_since_start"]["count"]
        # _sum is in seconds and lies within what the buckets allow: every sample counted in
        # (previous bound, bound]; a sum in ms, or one not fed by the samples, falls outside
        total = _value(samples, "stratum_proxy_share_latency_seconds_sum", pool=name)
        per_bucket = [c - p for c, p in zip(counts, [0.0, *counts[:-1]])]
        low = sum(n * b for n, b in zip(per_bucket, [0.0, *bounds]))
        high = (sum(n * b for n, b in zip(per_bucket, bounds)) if per_bucket[-1] == 0
                else float("inf"))
        assert low <= total <= high * (1 + 1e-9), (name, low, total, high)
        assert (total > 0) == (count > 0), (name, total, count)
        assert total == view_sum  # the figure the view holds, unrounded
    assert pools["primary"]["accepted"] >= 40
    assert _value(samples, "stratum_proxy_rigs_connected") == status["rigs_connected"] == 4
    assert _value(samples, "stratum_proxy_pool_switches_total") == status["counters"]["pool_switches"]
    assert _value(samples, "stratum_proxy_submits_total") == status["counters"]["submits"]
    assert _value(samples, "stratum_proxy_uptime_seconds") > 0
    assert _value(samples, "stratum_proxy_pool_hashrate_hashes_per_second", pool="primary") > 0
    assert _value(samples, "stratum_proxy_pool_state", pool="backup", state="healthy") == 1
    # every sample carries the instance label; every metric name has the prefix, HELP and TYPE
    for name, items in samples.items():
        assert name.startswith("stratum_proxy_"), name
        assert all(s.labels.get("instance") == "test-proxy" for s in items), name
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helps == set(types)
    assert types["stratum_proxy_share_latency_seconds"] == "histogram"
    assert types["stratum_proxy_shares_total"] == "counter"
    assert types["stratum_proxy_rigs_connected"] == "gauge"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            base = line.split("{")[0]
            assert any(base == t or base.startswith(t + "_") for t in types), line


async def test_rejected_shares_are_exported_by_reason(api):
    await api.pool("primary", reject_ratio=1.0)
    await api.start(max_reject_ratio=1.0)
    fleet = await api.fleet(2)
    await wait_until(lambda: api.view("primary")["rejected_total"] >= 5, 20, what="rejects")
    await fleet.drain(10)
    await wait_until(lambda: api.view("primary")["in_flight"] == 0, 5, what="no share in flight")
    view = api.view("primary")
    samples = _samples(await _metrics(api))
    exported = {s.labels["result"]: s.value for s in samples["stratum_proxy_shares_total"]
                if s.labels["pool"] == "primary" and s.labels["result"].startswith("rejected_")}
    assert exported == {f"rejected_{reason}": n for reason, n in view["rejected"].items()}
    assert sum(exported.values()) == view["rejected_total"] >= 5


async def test_label_values_are_escaped():
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    instance = 'farm "north"\\rack\n2'
    cfg = load_dict({
        "proxy": {"instance": instance, "listen": "127.0.0.1:0"},
        "api": {"enabled": False},
        "pools": [{"name": "p.1-x", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
    })
    svc = ProxyService(cfg)  # its one pool is on a port nothing listens on: never up
    await svc.start()
    try:
        assert svc.view is not None
        text = render_metrics(svc.view, svc.now(), "0.0.0")
    finally:
        await svc.stop()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert samples and all(s.labels["instance"] == instance for s in samples)
    assert "\n2\"" not in text  # the raw newline never reaches the output
    pool_up = [s for s in samples if s.name == "stratum_proxy_pool_up"]
    assert pool_up[0].labels["pool"] == "p.1-x" and pool_up[0].value == 0
