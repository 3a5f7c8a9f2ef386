"""The demo as a user runs it: a subprocess whose status lines show the switch and the failback."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_failover_and_failback():
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "--log-level", "WARNING", "demo", "--duration", "14",
         "--hold", "3", "--rigs", "20", "--api-port", "0"],
        capture_output=True, text=True, timeout=90)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "killing the primary pool" in out
    assert "active=backup" in out and "active=primary" in out
    summary = [line for line in out.splitlines() if line.startswith("demo summary: switches")][0]
    assert "primary -> backup" in summary and "backup -> primary" in summary
    assert "disconnects 0" in out and "unanswered 0" in out
    assert "invalid shares at pools 0" in out
