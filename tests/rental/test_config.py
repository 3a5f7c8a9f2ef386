"""[rental] validation: typed fields, units, decimal strings, clear field paths."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.config import ConfigError, load_dict
from proxy.rental.units import format_hashrate, parse_hashrate

BASE = {"pools": [{"name": "primary", "url": "stratum+tcp://127.0.0.1:3333", "user": "acct"}]}
RENTAL = {
    "provider": "nicehash",
    "target_hashrate": "120 TH/s",
    "max_price": "0.00050",
    "daily_budget_btc": "0.0100",
}


def load(**rental):
    return load_dict({**BASE, "rental": {**RENTAL, **rental}})


def test_defaults_and_units():
    cfg = load()
    r = cfg.rental
    assert (
        r.target_hs == 120e12 and r.max_price_btc == Decimal("0.00050") and r.daily_budget == Decimal("0.01")
    )
    assert r.pool == "primary"  # defaults to the first pool
    assert r.band == pytest.approx(0.025)
    assert load_dict(BASE).rental is None
    assert parse_hashrate("1.5 EH/s") == Decimal("1.5e18") and parse_hashrate("10 H/s") == 10
    assert format_hashrate(120e12) == "120 TH/s"


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ({"target_hashrate": "120 TH"}, "rental.target_hashrate"),
        ({"target_hashrate": "120 ZH/s"}, "rental.target_hashrate"),
        ({"target_hashrate": "0 TH/s"}, "rental.target_hashrate"),
        ({"max_price": "cheap"}, "rental.max_price"),
        ({"max_price": 0.0005}, "rental.max_price"),  # a float: money must be a decimal string
        ({"daily_budget_btc": "-1"}, "rental.daily_budget_btc"),
        ({"trigger_deficit": 1.5}, "rental.trigger_deficit"),
        ({"recover_band": 0.2}, "rental.recover_band"),
        ({"pool": "nope"}, "rental.pool"),
        ({"pool": "@proxy"}, "rental.public_address"),
        ({"provider": "acme"}, "rental.provider"),
        ({"api_url": "http://api2.nicehash.com"}, "rental.api_url"),
        ({"key_env": "not an env var"}, "rental.key_env"),
        ({"surprise": 1}, "rental"),
    ],
)
def test_bad_fields_name_their_path(override, path):
    with pytest.raises(ConfigError) as info:
        load(**override)
    assert str(info.value).startswith(path), str(info.value)


def test_proxy_target_and_relative_ledger(tmp_path):
    cfg = load(pool="@proxy", public_address="203.0.113.5:3333", ledger="ledger.db")
    assert cfg.rental.pool == "@proxy"
    data = {**BASE, "rental": {**RENTAL, "ledger": "ledger.db"}}
    from proxy.config import load_dict as ld

    assert ld(data, str(tmp_path / "proxy.toml")).rental.ledger == str(tmp_path / "ledger.db")
