"""The shipped Prometheus files as promtool sees them: valid, and every alert unit-tested both ways."""

from __future__ import annotations

import re

import pytest

from tests.prometheus.conftest import PROMETHEUS_DIR, RULE_TESTS, RULES, alert_rules, load_yaml, promtool

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-farm.yml"])
def test_scrape_configs_are_valid_and_load_the_rules(config):
    result = promtool("check", "config", str(PROMETHEUS_DIR / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    data = load_yaml(PROMETHEUS_DIR / config)
    assert data["rule_files"] == ["alerts.yml"]
    # the proxy's own instance label (its [proxy] instance name) must survive the scrape
    assert all(job["honor_labels"] for job in data["scrape_configs"])


def test_alert_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rule_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case_and_a_runbook():
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)), names
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load_yaml(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(names) - firing == set(), "alerts without a case where they fire"
    assert set(names) - quiet == set(), "alerts without a case where they must not fire"
    assert firing | quiet <= set(names), "unit tests of alerts that do not exist"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["runbook"].split()) >= 30, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_issue_list_of_alerts_is_covered():
    """Issue 15's list: pool down or degraded, on a backup for long, below the rental target,
    rejected or lost shares, rigs dropping, budget nearly spent, an order at max price."""
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    wanted = {
        "StratumProxyPoolDown": 'state="down"', "StratumProxyPoolDegraded": 'state="degraded"',
        "StratumProxyOnBackupPool": "stratum_proxy_pool_priority",
        "StratumProxyHashrateBelowTarget": "stratum_proxy_rental_target_hashrate",
        "StratumProxySharesRejected": 'result=~"rejected_.*"',
        "StratumProxySharesLost": 'result=~"lost|timeout"',
        "StratumProxyRigsDropped": "stratum_proxy_rigs_connected",
        "StratumProxyRentalBudgetLow": "stratum_proxy_rental_budget_left_btc",
        "StratumProxyRentalAtMaxPrice": "stratum_proxy_rental_max_price_btc",
    }
    for alert, needle in wanted.items():
        assert needle in exprs[alert], (alert, exprs[alert])
