"""The NUT protocol, pure: quoting, answers, the variable list, the power state."""

from __future__ import annotations

import pytest

from proxy.power.nutproto import (
    NutError,
    Power,
    VarListParser,
    check_ok,
    command,
    decode_line,
    login_commands,
    parse_get_var,
    parse_target,
    reading_from,
    split_words,
)


def test_target_forms():
    assert str(parse_target("ups1@10.0.0.5")) == "ups1@10.0.0.5:3493"
    assert parse_target("ups1@[::1]:3500").host == "::1"
    assert parse_target("ups1@[::1]:3500").port == 3500
    for bad in ("ups1", "@host", "ups1@", "ups1@h:0", "ups1@h:x", "u p@h", "ups1@[::1"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_commands_quote_and_refuse_line_breaks():
    assert command("LIST", "VAR", "ups1") == b"LIST VAR ups1\n"
    assert command("PASSWORD", 'pa ss"\\') == b'PASSWORD "pa ss\\"\\\\"\n'
    assert login_commands(None, None) == []
    assert login_commands("mon", "x") == [b"USERNAME mon\n", b"PASSWORD x\n"]
    with pytest.raises(ValueError):
        command("PASSWORD", "a\nLOGOUT")


def test_words_and_errors():
    assert split_words('VAR ups1 ups.status "OB DISCHRG"') == ["VAR", "ups1", "ups.status", "OB DISCHRG"]
    assert split_words(r'VAR u d "say \"hi\" \\ now"') == ["VAR", "u", "d", 'say "hi" \\ now']
    check_ok("OK")
    check_ok("OK Goodbye")
    with pytest.raises(NutError) as err:
        check_ok("ERR ACCESS-DENIED")
    assert err.value.code == "ACCESS-DENIED"
    with pytest.raises(NutError):
        split_words('VAR u d "unterminated')
    with pytest.raises(NutError):
        decode_line(b"\xff\xfe\n")
    with pytest.raises(NutError):
        decode_line(b"x" * 5000)
    assert parse_get_var('VAR ups1 battery.charge "87"', "ups1", "battery.charge") == "87"
    with pytest.raises(NutError) as err:
        parse_get_var("ERR VAR-NOT-SUPPORTED", "ups1", "x")
    assert err.value.code == "VAR-NOT-SUPPORTED"


def test_var_list():
    p = VarListParser("ups1")
    for line in ("BEGIN LIST VAR ups1", 'VAR ups1 ups.status "OL CHRG"', 'VAR ups1 battery.charge "98"',
                 "END LIST VAR ups1"):
        assert not p.done
        p.feed(line)
    assert p.done and p.variables == {"ups.status": "OL CHRG", "battery.charge": "98"}
    with pytest.raises(NutError) as err:
        VarListParser("ups1").feed("ERR DATA-STALE")
    assert err.value.code == "DATA-STALE"
    q = VarListParser("ups1")
    q.feed("BEGIN LIST VAR ups1")
    with pytest.raises(NutError):  # a variable of another UPS in this list
        q.feed('VAR ups2 ups.status "OB"')
    with pytest.raises(NutError):
        VarListParser("ups1").feed("BEGIN LIST VAR ups2")


@pytest.mark.parametrize(("status", "power"), [
    ("OL", Power.ONLINE), ("OL CHRG", Power.ONLINE), ("OB DISCHRG", Power.BATTERY),
    ("OB LB", Power.CRITICAL), ("FSD OB", Power.CRITICAL), ("OFF", Power.CRITICAL),
    ("OL LB", Power.CRITICAL), ("WAIT", Power.UNKNOWN), ("", Power.UNKNOWN), ("OB BANANA", Power.UNKNOWN),
])
def test_power_state(status, power):
    r = reading_from({"ups.status": status, "battery.charge": "50", "battery.runtime": "120"})
    assert r.power is power
    if power is not Power.UNKNOWN:
        assert (r.charge, r.runtime_s) == (50.0, 120.0)
    else:
        assert r.reason


def test_bad_figures_are_unknown():
    assert reading_from({}).power is Power.UNKNOWN
    r = reading_from({"ups.status": "OB", "battery.runtime": "soon"})
    assert r.power is Power.UNKNOWN and "battery.runtime" in r.reason
    assert reading_from({"ups.status": "OB", "battery.runtime": "-5"}).power is Power.UNKNOWN
    r = reading_from({"ups.status": "OB"})
    assert r.power is Power.BATTERY and r.runtime_s is None
