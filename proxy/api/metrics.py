"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``, written by hand.

No client library at run time: the numbers come from the core's read-only view (the same ones
the REST API serves) plus each pool's since-start latency histogram.  Every sample carries
``instance``; label values are escaped (backslash, double quote, newline).  Nothing secret
(pool passwords, the API token, URL credentials) is ever a label or a value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ..core.view import CoreView
from ..store.history import lost_without_timeouts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "stratum_proxy_"

# the "hashprice" figures of a pool view -> (metric name without prefix, help)
HASHPRICE_GAUGES = (
    ("hashprice_btc_per_ph_day", "btc_per_ph_day",
     "What a PH/s earns a day on the pool's current job: block value / (difficulty x 2^32) x "
     "86400 x 1e15 (BTC, before pool fee and luck)"),
    ("network_difficulty", "network_difficulty",
     "Network difficulty from the nbits of the pool's current job"),
    ("block_value_btc", "block_value_btc",
     "Sum of the coinbase outputs of the pool's current job: subsidy plus fees (BTC)"),
    ("hashprice_age_seconds", "age_s", "Seconds since the job the pool's hashprice comes from"),
    ("expected_earnings_btc_per_day", "expected_btc_per_day",
     "The pool's hashrate times its hashprice (BTC per day)"),
)

# core.totals key -> (metric name without prefix, help)
TOTALS: dict[str, tuple[str, str]] = {
    "submits": ("submits_total", "mining.submit requests received from rigs"),
    "accepted": ("rig_shares_accepted_total", "Shares accepted locally (answered true to the rig)"),
    "rejected": ("rig_shares_rejected_total", "Shares rejected locally (answered with an error)"),
    "forwarded": ("forwarded_total", "Shares forwarded to a pool"),
    "outside_pool_mask": ("outside_pool_mask_total",
                          "Locally valid shares not forwarded: version bits the pool's mask does not "
                          "allow, from rigs that never negotiated a mask"),
    "below_pool_target": ("below_pool_target_total",
                          "Locally valid shares not forwarded because they miss the pool's target"),
    "rigs_connected_total": ("rig_connections_total", "Rig TCP connections accepted"),
    "rigs_disconnected": ("rig_disconnections_total", "Rig connections closed (either side)"),
    "bad_lines": ("bad_lines_total", "Malformed or over-long lines received from rigs"),
    "pool_switches": ("pool_switches_total", "Changes of the active pool group"),
    "split_moves": ("split_moves_total", "Rigs moved to keep a weighted split on target"),
}

POOL_STATES = ("healthy", "suspect", "degraded", "down", "disabled")


def escape_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _reason_label(reason: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", reason.lower()).strip("_") or "other"


class MetricsWriter:
    """Samples with the same base labels (``instance`` on a proxy, ``farm`` on the control plane)."""

    def __init__(self, **base: object) -> None:
        self.lines: list[str] = []
        self.base = ",".join(f'{k}="{escape_label(v)}"' for k, v in base.items())

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float | int | None, **labels: object) -> None:
        parts = [self.base]
        parts.extend(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{PREFIX}{name}{{{','.join(parts)}}} {format_value(value)}")

    def metric(self, name: str, kind: str, help_text: str, value: float | int | None,
               **labels: object) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


RENTAL_GAUGES = (
    ("rental_target_hashrate", "target_hashrate", "Hashrate the backfill controller keeps delivered (H/s)"),
    ("rental_farm_hashrate", "farm_hashrate",
     "Hashrate delivered to the pool, own rigs plus rented, as the backfill controller measures it "
     "over its window (H/s); absent while unknown"),
    ("rental_ordered_hashrate", "ordered_hashrate", "Speed limit of the open backfill order (H/s)"),
    ("rental_delivered_hashrate", "delivered_hashrate", "Hashrate the open backfill order delivers (H/s)"),
    ("rental_order_price_btc", "order_price_btc",
     "Price of the open backfill order (BTC per PH/s per day); absent without an open order"),
    ("rental_max_price_btc", "max_price_btc",
     "The price cap in force (BTC per PH/s per day): max_price, or the hashprice plus max_premium "
     "when max_price = \"hashprice\"; absent while that is unknown"),
    ("rental_hashprice_btc", "hashprice_btc",
     "The hashprice the controller decided with (BTC per PH/s per day); absent while unknown"),
    ("rental_market_price_btc", "market_price_btc",
     "The marketplace's price for hashpower now (BTC per PH/s per day); absent before a quote"),
    ("rental_spent_btc_total", "spent_btc_total", "BTC spent on backfill orders, as the ledger knows"),
    ("rental_budget_btc", "budget_btc", "Configured daily backfill budget (BTC)"),
    ("rental_budget_left_btc", "budget_left_btc", "Daily backfill budget not yet spent or committed (BTC)"),
)


def render_rental(w: MetricsWriter, rental: Any) -> None:
    """The backfill controller's gauges (one proxy's, or the farm control plane's)."""
    values = rental.metrics()
    for name, key, help_text in RENTAL_GAUGES:
        w.family(name, "counter" if name.endswith("_total") else "gauge", help_text)
        if values.get(key) is not None:
            w.sample(name, values[key])


UPS_STATES = ("online", "battery", "critical", "unknown")


def render_power(w: MetricsWriter, power: Any) -> None:
    """The power monitor's gauges: each UPS's state and figures, the hashrate at risk."""
    doc = power.view()
    w.family("ups_status", "gauge", "1 for the UPS's power state now: online (OL), battery (OB), critical "
             "(LB, FSD or OFF), unknown (upsd unreachable, slow or garbled)")
    for u in doc["ups"]:
        for state in UPS_STATES:
            w.sample("ups_status", 1 if u["power"] == state else 0, ups=u["name"], status=state)
    for name, key, help_text in (
        ("ups_battery_charge_percent", "charge", "battery.charge as upsd reports it; absent while unknown"),
        ("ups_battery_runtime_seconds", "runtime_s", "battery.runtime as upsd last reported it"),
        ("ups_rigs", "rig_count", "Connected rigs fed by the UPS"),
    ):
        w.family(name, "gauge", help_text)
        for u in doc["ups"]:
            if u.get(key) is not None:
                w.sample(name, u[key], ups=u["name"])
    w.family("hashrate_at_risk_hashes_per_second", "gauge",
             "Measured hashrate of the rigs on a UPS on battery (kind ups) or in a curtailment window "
             "or its order lead (kind curtailment); source is the UPS's or the curtailment's name")
    for u in doc["ups"]:
        w.sample("hashrate_at_risk_hashes_per_second", u["hashrate_at_risk_hs"], kind="ups", source=u["name"])
    for c in doc["curtailments"]:
        w.sample("hashrate_at_risk_hashes_per_second", c.get("hashrate_at_risk_hs", 0.0), kind="curtailment",
                 source=c["name"] or c["id"])
    w.metric("power_rent_now_hashes_per_second", "gauge",
             "Hashrate the power planner asks the backfill controller to rent now", doc["rent_now_hs"])
    w.metric("power_order_lead_seconds", "gauge",
             "How long an order is expected to take to deliver: order_lead_s, raised by what was seen",
             doc["order_lead_s"])


def render_metrics(view: CoreView, now: float, version: str, rental: Any = None,
                   cluster: Any = None, gpu: Sequence[Any] = (), power: Any = None) -> str:
    """The Prometheus text; ``gpu`` (GPU listeners' ``EthView``s) adds their pools to every
    pool family and their rigs and switch counters per listener."""
    status = view.status(now)
    pools = view.pools(now)
    histograms: dict[str, Any] = {}  # pool name -> the view that holds its latency histogram
    for extra in gpu:
        for p in extra.pools(now):
            pools.append(p)
            histograms[p["name"]] = extra
    w = MetricsWriter(instance=status["instance"])

    w.metric("info", "gauge", "Proxy build information (always 1)", 1, version=version)
    w.metric("uptime_seconds", "gauge", "Seconds since the proxy core started", status["uptime_s"])
    w.metric("rigs_connected", "gauge", "Rigs currently connected", status["rigs_connected"])
    w.metric("rigs_working", "gauge", "Rigs on a ready upstream connection", status["rigs_working"])
    w.metric("rigs_stalled", "gauge", "Rigs with no share for 6 share intervals (at least 60 s)",
             status["rigs_stalled"])
    w.metric("stalled_hashrate_hashes_per_second", "gauge",
             "What the stalled rigs delivered before they went quiet", status["stalled_hashrate"])
    w.metric("hashrate_hashes_per_second", "gauge",
             "Hashrate of all rigs, from locally accepted share difficulty", status["hashrate"])
    counters = status["counters"]
    for key, (name, help_text) in TOTALS.items():
        if key in counters:
            w.metric(name, "counter", help_text, counters[key])
    others = {k: v for k, v in counters.items() if k not in TOTALS}
    if others:
        w.family("core_events_total", "counter", "Other core counters, by name")
        for key, value in sorted(others.items()):
            w.sample("core_events_total", value, counter=key)

    w.family("pool_active", "gauge", "1 when the pool is in the active group (gets hashrate)")
    for p in pools:
        w.sample("pool_active", p["active"], pool=p["name"])
    w.family("pool_up", "gauge", "1 when the pool is healthy")
    for p in pools:
        w.sample("pool_up", p["state"] == "healthy", pool=p["name"])
    w.family("pool_state", "gauge", "Pool health state (1 for the current state)")
    for p in pools:
        states = POOL_STATES if p["state"] in POOL_STATES else (*POOL_STATES, p["state"])
        for state in states:
            w.sample("pool_state", p["state"] == state, pool=p["name"], state=state)
    gauges = [
        ("pool_enabled", "1 when the pool is enabled", "enabled"),
        ("pool_draining", "1 while the operator drains the pool", "draining"),
        ("pool_priority", "Configured priority (lower is preferred)", "priority"),
        ("pool_weight", "Configured weight among pools of equal priority", "weight"),
        ("pool_rigs", "Rigs placed on the pool", "rigs"),
        ("pool_hashrate_hashes_per_second", "Hashrate of the rigs placed on the pool", "hashrate"),
        ("pool_connections", "Upstream connections held to the pool", "connections"),
        ("pool_connections_ready", "Upstream connections subscribed, authorized, with a job",
         "connections_ready"),
        ("pool_in_flight_shares", "Forwarded shares awaiting the pool's answer", "in_flight"),
        ("pool_difficulty", "Difficulty the pool set on its ready connection", "difficulty"),
        ("pool_last_job_age_seconds", "Seconds since the pool's last new job", "last_job_age_s"),
    ]
    for name, help_text, key in gauges:
        w.family(name, "gauge", help_text)
        for p in pools:
            if p.get(key) is not None:
                w.sample(name, p[key], pool=p["name"])

    for name, key, help_text in HASHPRICE_GAUGES:  # absent while unknown
        w.family(name, "gauge", help_text)
        for p in pools:
            if p["hashprice"][key] is not None:
                w.sample(name, p["hashprice"][key], pool=p["name"])
    farm = status["hashprice"]
    w.family("farm_hashprice_btc_per_ph_day", "gauge",
             "The farm's hashprice: the active pool's (BTC per PH/s per day); absent while unknown")
    w.family("farm_expected_earnings_btc_per_day", "gauge",
             "The farm's hashrate times its hashprice (BTC per day); absent while unknown")
    if farm["btc_per_ph_day"] is not None:
        w.sample("farm_hashprice_btc_per_ph_day", farm["btc_per_ph_day"], pool=farm["pool"])
        w.sample("farm_expected_earnings_btc_per_day", farm["expected_btc_per_day"], pool=farm["pool"])

    w.family("shares_total", "counter",
             "Forwarded shares by the pool's verdict: accepted, rejected_<reason>, timeout "
             "(no answer in time) or lost (never delivered, connection gone)")
    for p in pools:
        name = p["name"]
        w.sample("shares_total", p["accepted"], pool=name, result="accepted")
        rejected: dict[str, int] = {}
        for reason, n in p["rejected"].items():
            label = f"rejected_{_reason_label(reason)}"
            rejected[label] = rejected.get(label, 0) + n
        for label, n in sorted(rejected.items()):
            w.sample("shares_total", n, pool=name, result=label)
        w.sample("shares_total", p["timeouts"], pool=name, result="timeout")
        w.sample("shares_total", lost_without_timeouts(p), pool=name, result="lost")
    w.family("pool_forwarded_total", "counter", "Shares forwarded to the pool")
    for p in pools:
        w.sample("pool_forwarded_total", p["forwarded"], pool=p["name"])
    w.family("pool_accepted_difficulty_total", "counter",
             "Sum of the difficulty of shares the pool accepted")
    for p in pools:
        w.sample("pool_accepted_difficulty_total", p["accepted_difficulty"], pool=p["name"])

    w.family("pool_latency_window_seconds", "gauge",
             "Share answer latency quantiles over the health window")
    for p in pools:
        for q in ("p50", "p90", "p99"):
            ms = p["latency_ms"][q]
            if ms is not None:
                w.sample("pool_latency_window_seconds", ms / 1000, pool=p["name"],
                         quantile=str(int(q[1:]) / 100))

    w.family("share_latency_seconds", "histogram",
             "Time from forwarding a share to the pool's answer, since start")
    for p in pools:
        bounds, counts, total, count = histograms.get(p["name"], view).latency_histogram(p["name"])
        cumulative = 0
        for i, n in enumerate(counts):
            cumulative += n
            le = repr(float(bounds[i])) if i < len(bounds) else "+Inf"
            w.sample("share_latency_seconds_bucket", cumulative, pool=p["name"], le=le)
        w.sample("share_latency_seconds_sum", total, pool=p["name"])
        w.sample("share_latency_seconds_count", count, pool=p["name"])
    if gpu:
        w.family("listener_rigs_connected", "gauge",
                 "GPU rigs (EthereumStratum/1.0.0) connected, per listener")
        for extra in gpu:
            w.sample("listener_rigs_connected", extra.rig_count(), listener=extra.listener)
        w.family("listener_events_total", "counter",
                 "GPU listener counters (submits, accepted, rejected, forwarded, lost, pool_switches, "
                 "set_extranonce, client_reconnect ...), per listener")
        for extra in gpu:
            for key, value in sorted(extra.totals().items()):
                w.sample("listener_events_total", value, listener=extra.listener, counter=key)
    if rental is not None:
        render_rental(w, rental)
    render_cluster(w, cluster)
    if power is not None:
        render_power(w, power)
    return w.text()


CLUSTER_GAUGES = (
    ("cluster_etcd_up", "1 while etcd answers this instance (with quorum)"),
    ("cluster_leader", "1 while this instance leads the farm's backfill controller"),
    ("cluster_members", "Instances registered in etcd (as this instance last read it)"),
)


def render_cluster(w: MetricsWriter, node: Any) -> None:
    """An instance of a [cluster]: etcd reachable, leadership, the farm's registered members.
    Without [cluster] the families are declared with no sample (no alert fires on them)."""
    values = ((int(node.etcd_ok is True), int(node.leading() is None), len(node.members))
              if node is not None else (None, None, None))
    for (name, help_text), value in zip(CLUSTER_GAUGES, values):
        w.family(name, "gauge", help_text)
        if value is not None:
            w.sample(name, value)

