"""What earlier runs of the proxy left in the history database that a restart needs before
any pool answers: each pool's last known extranonce2_size (see ``ProxyCore`` layout)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("proxy.store")


def remembered_extranonce2_sizes(path: str) -> dict[str, int]:
    """Each pool's last known extranonce2_size, from the ``pool_extranonce`` events of earlier
    runs: the layout a restart picks must fit a pool that happens to be down.  Missing or
    unreadable history: nothing remembered (the proxy waits for the pools instead)."""
    if not path or path == ":memory:" or not Path(path).exists():
        return {}
    sizes: dict[str, int] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT data FROM events WHERE kind = 'pool_extranonce' ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("cannot read remembered pool extranonce sizes from %s: %s", path, exc)
        return {}
    for (data,) in rows:
        try:
            event = json.loads(data)
            sizes[str(event["pool"])] = int(event["extranonce2_size"])
        except (ValueError, KeyError, TypeError):
            continue
    return sizes
