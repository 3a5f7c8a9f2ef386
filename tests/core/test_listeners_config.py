"""[[listeners]] and the protocol fields: a wrong-protocol pool and every bad listener are
config errors naming the field; the main listener serves the pools no listener names."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import ConfigError, load_dict
from proxy.listeners import resolve


def _cfg(pools: list[dict[str, Any]], listeners: list[dict[str, Any]] | None = None, **proxy: Any):
    entries = [{"url": f"stratum+tcp://127.0.0.1:{i + 1}", "user": "u", **p} for i, p in enumerate(pools)]
    return load_dict({"proxy": proxy, "pools": entries, "listeners": listeners or []})


GPU = {"name": "gpu", "listen": "127.0.0.1:4444", "protocol": "ethstratum", "pools": ["eth-a", "eth-b"]}


def test_asic_and_gpu_listeners_side_by_side():
    cfg = _cfg(
        [
            {"name": "btc-a"},
            {"name": "eth-a", "protocol": "ethstratum"},
            {"name": "eth-b"},
            {"name": "btc-b", "protocol": "sv1"},
        ],
        [GPU],
    )
    main, gpu = resolve(cfg)
    assert (main.name, main.protocol, [p.name for p in main.pools]) == ("main", "sv1", ["btc-a", "btc-b"])
    assert (gpu.name, gpu.protocol, [p.name for p in gpu.pools]) == ("gpu", "ethstratum", ["eth-a", "eth-b"])


@pytest.mark.parametrize(
    "pools, listeners, proxy, field",
    [
        (
            [{"name": "a"}, {"name": "eth-a", "protocol": "sv1"}, {"name": "eth-b"}],
            [GPU],
            {},
            "pools[1].protocol",
        ),
        ([{"name": "a", "protocol": "ethstratum"}], [], {}, "pools[0].protocol"),
        ([{"name": "a", "protocol": "sv1"}], [], {"protocol": "ethstratum"}, "pools[0].protocol"),
        ([{"name": "a"}, {"name": "eth-a"}], [GPU], {}, "listeners[0].pools[1]"),
        ([{"name": "eth-a"}, {"name": "eth-b"}], [GPU], {}, "proxy.listen"),
        (
            [{"name": "a"}, {"name": "eth-a"}, {"name": "eth-b"}],
            [{**GPU, "name": "main"}],
            {},
            "listeners[0].name",
        ),
        (
            [{"name": "a"}, {"name": "eth-a"}, {"name": "eth-b"}],
            [{**GPU, "listen": "nowhere"}],
            {},
            "listeners[0].listen",
        ),
        (
            [{"name": "a"}, {"name": "eth-a"}, {"name": "eth-b"}],
            [GPU, {**GPU, "name": "gpu2", "listen": "127.0.0.1:5555", "pools": ["eth-a"]}],
            {},
            "listeners[1].pools[0]",
        ),
        (
            [{"name": "a"}, {"name": "b"}],
            [{"name": "asic2", "listen": "127.0.0.1:5555", "protocol": "sv1", "pools": ["b"]}],
            {},
            "listeners[0].protocol",
        ),
        ([{"name": "a"}], [{**GPU, "protocol": "stratum2"}], {}, "listeners[0].protocol"),
        # a port for both GPU dialects: its pools must say which they speak
        (
            [{"name": "a"}, {"name": "eth-a", "protocol": "ethproxy"}, {"name": "eth-b"}],
            [{**GPU, "protocol": "eth"}],
            {},
            "pools[2].protocol",
        ),
        # a getwork pool on an EthereumStratum listener: its rigs could never mine under it
        (
            [{"name": "a"}, {"name": "eth-a", "protocol": "ethproxy"}, {"name": "eth-b"}],
            [GPU],
            {},
            "pools[1].protocol",
        ),
    ],
)
def test_bad_listener_configs_name_the_field(pools, listeners, proxy, field):
    with pytest.raises(ConfigError) as err:
        _cfg(pools, listeners, **proxy)
    assert str(err.value).startswith(field), str(err.value)


def test_the_shipped_asic_and_gpu_example_is_valid():
    from pathlib import Path

    from proxy.config import load

    cfg = load(Path(__file__).resolve().parents[2] / "configs" / "asic-gpu.toml")
    assert [(x.name, x.protocol, [p.name for p in x.pools]) for x in resolve(cfg)] == [
        ("main", "sv1", ["btc-primary", "btc-backup"]),
        ("gpu", "ethstratum", ["etc-primary", "etc-backup"]),
    ]
