"""The demo as a user runs it: a subprocess whose terminal tells the story, the log in a file."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

from proxy.demo import describe_event, setup_logging

STAMPED = re.compile(r"^\[\s*(\d+\.\d)s\] (.*)$")
STATUS = re.compile(r"^\d+/20 rigs, \d+(\.\d+)? [kMGTPE]?H/s, mining on (\w+)")


def test_demo_shows_failover_and_failback_in_words():
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--duration", "14", "--hold", "3", "--rigs", "20",
         "--api-port", "0"],
        capture_output=True, text=True, timeout=90)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    # the terminal has the story only: no log record (the INFO default of --log-level) on either stream
    assert not re.search(r"\b(INFO|WARNING|ERROR)\b|\{\"", out + proc.stderr), (out + proc.stderr)[-3000:]
    log = Path(re.search(r"^  full log: (\S+)", out, re.M).group(1))
    try:
        text = log.read_text()
        assert re.search(r"INFO proxy\.events: pool_switch \{.*\"to_pools\": \[\"backup\"\]", text)
    finally:
        log.unlink()

    stamped = [STAMPED.match(line) for line in out.splitlines() if line.startswith("[")]
    assert stamped and all(stamped)
    times = [float(m.group(1)) for m in stamped]
    # in the order things happened (events carry their own time; a status line may be printed a
    # few milliseconds before an event of the same instant)
    assert all(b >= a - 0.5 for a, b in zip(times, times[1:])), times
    lines = [m.group(2) for m in stamped]
    kill = next(i for i, line in enumerate(lines) if "killing the primary pool" in line)
    status = [(i, STATUS.match(line)) for i, line in enumerate(lines) if STATUS.match(line)]
    assert len(status) >= 12  # one a second
    assert {m.group(2) for i, m in status if i < kill} == {"primary"}
    after = [m.group(2) for i, m in status if i > kill]
    assert after[0] == "backup" and after[-1] == "primary", after
    assert any("mining on backup (primary down)" in line for line in lines)
    assert any(line.startswith("event: switch primary -> backup: primary: connection reset")
               for line in lines)
    assert any(line.startswith("event: switch backup -> primary: failback") for line in lines)
    assert re.search(r"every rig had the backup's job \d+\.\d ms after the reset \(0 disconnected\)", out)
    # human units and rounded figures: no long decimals anywhere on the terminal
    assert not re.search(r"\d\.\d{4,}", out), re.findall(r".*\d\.\d{4,}.*", out)

    summary = [line for line in out.splitlines() if line.startswith("summary: switches")][0]
    assert "primary -> backup" in summary and "backup -> primary" in summary
    assert "0 disconnects" in out and "0 unanswered" in out
    assert "0 invalid shares at the pools" in out
    assert out.rstrip().splitlines()[-1].startswith("summary: no rig noticed")


def test_demo_log_goes_to_a_file_and_verbose_brings_it_back(tmp_path, capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.setLevel(logging.INFO)
    try:
        for verbose in (False, True):
            for h in list(root.handlers):
                root.removeHandler(h)
            terminal = logging.StreamHandler(sys.stderr)  # what main()'s basicConfig installs
            root.addHandler(terminal)
            path = Path(setup_logging(str(tmp_path / f"demo-{verbose}.log"), verbose))
            logging.getLogger("proxy.events").info("pool_switch %s", '{"to_pools": ["backup"]}')
            for h in root.handlers:
                h.flush()
            assert "pool_switch" in path.read_text()
            assert ("pool_switch" in capsys.readouterr().err) is verbose
            for h in list(root.handlers):
                if h is not terminal:
                    h.close()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_rental_events_read_in_words_and_rounded():
    placed = {"kind": "rental_order_placed", "order_id": "3f2c9a1e-77aa-4c1b-9d2e-1b2c3d4e5f60",
              "limit_hs": 16201.400563584757, "price": "2000.000000000000", "amount_btc": "0.00135012",
              "reason": "deficit 16.2 kH/s (31.6%) for 3s: renting 16.2 kH/s at 2000 BTC/PH/day"}
    line = describe_event(placed, 0)
    assert line == ("rental: order 3f2c9a1e placed, 0.00135012 BTC in escrow: deficit 16.2 kH/s (31.6%) "
                    "for 3s: renting 16.2 kH/s at 2000 BTC/PH/day")
    resized = {"kind": "rental_order_resized", "order_id": "3f2c9a1e-77aa", "limit_hs": 8100.7,
               "price": "2000.000000000000", "reason": "deficit now 8.1 kH/s"}
    assert describe_event(resized, 0) == ("rental: order 3f2c9a1e now 8.1 kH/s at 2000 BTC/PH/day: "
                                          "deficit now 8.1 kH/s")
    cancelled = {"kind": "rental_order_cancelled", "order_id": "3f2c9a1e-77aa", "spent_btc": "0.00012000",
                 "reason": "rigs recovered"}
    assert describe_event(cancelled) == "rental: order 3f2c9a1e cancelled, 0.00012 BTC spent: rigs recovered"
    assert describe_event({"kind": "pool_changed", "pool": "backup"}) is None  # not part of the story
