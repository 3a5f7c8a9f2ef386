"""``python -m proxy.sim ethpool`` / ``ethrigs``: the GPU sims from a shell, as a user pokes a
proxy by hand (here the rigs mine on the sim pool directly)."""

from __future__ import annotations

import re
import subprocess
import sys


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "proxy.sim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_eth_pool_and_rigs_from_the_shell() -> None:
    pool = _start("ethpool", "--port", "0", "--name", "cli-etc", "--job-interval", "0.5")
    try:
        assert pool.stdout is not None
        first = pool.stdout.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert found, f"no listening line from ethpool: {first!r}"
        rigs = subprocess.run([sys.executable, "-m", "proxy.sim", "ethrigs", "--port", found.group(1),
                               "--count", "3", "--share-interval", "0.1", "--duration", "1.5"],
                              capture_output=True, text=True, timeout=30)
        assert rigs.returncode == 0, rigs.stdout + rigs.stderr
        done = re.search(r"done: accepted=(\d+) rejected=(\d+) disconnects=(\d+) unanswered=(\d+)",
                         rigs.stdout)
        assert done, rigs.stdout
        accepted, rejected, disconnects, unanswered = map(int, done.groups())
        assert accepted > 0 and rejected == 0 and disconnects == 0 and unanswered == 0, rigs.stdout
    finally:
        pool.terminate()
        pool.wait(timeout=10)

