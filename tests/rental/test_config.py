"""[rental] validation: typed fields, units, decimal strings, clear field paths."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.config import ConfigError, load_dict
from proxy.rental.units import format_btc, format_hashrate, format_price, parse_hashrate, price_decimals

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


def test_money_reads_to_the_marketplace_precision():
    # NiceHash's price step of 0.0001 BTC/PH/day: prices show 4 decimals, more only where the value has them
    step = price_decimals(Decimal("-0.0001"))
    assert step == 4
    assert format_price(Decimal("0.05"), step) == "0.0500"
    assert format_price("0.00045", step) == "0.00045"  # a configured price is never rounded to the step
    # the simulated market quotes per H/s: its step is 1e11 BTC/PH/day, prices are whole numbers
    assert price_decimals(Decimal("1E+11")) == 0
    assert format_price("2000.000000000000", 0) == "2000"
    assert format_price(Decimal("0.123456789"), None) == "0.12345679"  # a satoshi at most
    assert price_decimals(None) is None and price_decimals(Decimal(0)) is None
    assert format_btc("0.00420000") == "0.0042" and format_btc(Decimal("1E+1")) == "10"
    assert format_btc(None) == "unknown"


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ({"target_hashrate": "120 TH"}, "rental.target_hashrate"),
        ({"target_hashrate": "120 ZH/s"}, "rental.target_hashrate"),
        ({"target_hashrate": "0 TH/s"}, "rental.target_hashrate"),
        ({"max_price": "cheap"}, "rental.max_price"),
        ({"max_price": 0.0005}, "rental.max_price"),  # a float: money must be a decimal string
        ({"max_price": "Hashprice"}, "rental.max_price"),
        ({"max_premium": 0.05}, "rental.max_premium"),  # a premium needs max_price = "hashprice"
        ({"max_price": "hashprice", "max_premium": -1.0}, "rental.max_premium"),
        ({"max_price": "hashprice", "max_premium": float("nan")}, "rental.max_premium"),
        ({"max_price": "hashprice", "max_premium": "5%"}, "rental.max_premium"),
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


def test_max_price_may_follow_the_hashprice():
    r = load(max_price="hashprice", max_premium=0.05).rental
    assert r.follows_hashprice and r.max_price_btc is None and r.max_premium == 0.05
    fixed = load().rental
    assert not fixed.follows_hashprice and fixed.max_price_btc == Decimal("0.00050")
    assert load(max_price="hashprice").rental.max_premium == 0.0


def test_proxy_target_and_relative_ledger(tmp_path):
    cfg = load(pool="@proxy", public_address="203.0.113.5:3333", ledger="ledger.db")
    assert cfg.rental.pool == "@proxy"
    data = {**BASE, "rental": {**RENTAL, "ledger": "ledger.db"}}
    from proxy.config import load_dict as ld

    assert ld(data, str(tmp_path / "proxy.toml")).rental.ledger == str(tmp_path / "ledger.db")
