"""The shipped Grafana board as a document: panels, variables, the figures issue 15 asks for.
Its queries run against a real Prometheus in test_live.py."""

from __future__ import annotations

import json

from tests.prometheus.conftest import GRAFANA_BOARD, board_queries


def test_board_is_a_grafana_dashboard():
    board = json.loads(GRAFANA_BOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "instance", "pool"}
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for wanted in ("farm hashrate vs rental target", "hashrate by pool", "latency p50 / p99", "shares",
                   "switches", "rigs", "rented hashpower"):
        assert wanted in titles, wanted
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    exprs = [e for _, e in board_queries(board)]
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e for e in exprs)
