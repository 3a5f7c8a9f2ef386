"""[power] validation: every error names the field."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_dict

POOLS = [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}]
UPS = {"name": "a", "nut": "ups1@127.0.0.1:3493", "workers": ["farm.*"]}
WINDOW = {"workers": ["farm.*"], "from": "2030-01-01T00:00:00Z", "until": "2030-01-01T01:00:00Z"}


@pytest.mark.parametrize(("power", "field"), [
    ({"ups": [{**UPS, "nut": "ups1"}]}, "power.ups[0].nut"),
    ({"ups": [{**UPS, "nut": "ups1@h:99999"}]}, "power.ups[0].nut"),
    ({"ups": [{"name": "a", "nut": "u@h"}]}, "power.ups[0].workers"),
    ({"ups": [{**UPS, "addresses": ["10.0.0.0/8", "nope"]}]}, "power.ups[0].addresses[1]"),
    ({"ups": [{**UPS, "workers": [""]}]}, "power.ups[0].workers[0]"),
    ({"ups": [UPS, UPS]}, "power.ups[1].name"),
    ({"ups": [{**UPS, "name": "a b"}]}, "power.ups[0].name"),
    ({"ups": [{**UPS, "poll_s": 0}]}, "power.ups[0].poll_s"),
    ({"ups": [{**UPS, "timeout_s": 0}]}, "power.ups[0].timeout_s"),
    ({"ups": [{**UPS, "user_env": "1X"}]}, "power.ups[0].user_env"),
    ({"ups": [{**UPS, "ca_file": "/nonexistent.pem", "tls": True}]}, "power.ups[0].ca_file"),
    ({"ups": [{**UPS, "tls_verify": False}]}, "power.ups[0].tls"),
    ({"ups": [{**UPS, "colour": "red"}]}, "power.ups[0]"),
    ({"order_lead_s": -1}, "power.order_lead_s"),
    ({"curtail": [{**WINDOW, "until": "2029-12-31T00:00:00Z"}]}, "power.curtail[0].until"),
    ({"curtail": [{**WINDOW, "from": "2030-01-01T00:00:00"}]}, "power.curtail[0].from"),
    ({"curtail": [{**WINDOW, "workers": []}]}, "power.curtail[0].workers"),
])
def test_errors_name_the_field(power, field):
    with pytest.raises(ConfigError) as err:
        load_dict({"pools": POOLS, "power": power})
    assert str(err.value).startswith(field), str(err.value)


def test_a_good_section(tmp_path):
    cfg = load_dict({"pools": POOLS, "power": {"ups": [{**UPS, "addresses": ["10.1.0.0/16", "::1"]}],
                                              "curtail": [WINDOW]}}, str(tmp_path / "proxy.toml"))
    assert cfg.power is not None and cfg.power.ups[0].poll_s == 5.0
    assert cfg.power.curtailments_file == str(tmp_path / "power-curtailments.json")  # next to the file
    assert cfg.power.curtail[0].until.timestamp() - cfg.power.curtail[0].start.timestamp() == 3600
