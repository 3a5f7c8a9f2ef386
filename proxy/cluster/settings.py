"""Pool settings (priority, weight, enabled, drained) kept in etcd for the whole farm.

One key per pool, ``/<farm>/pools/<name>``, a JSON object with the fields an operator set
(a field never set keeps the value from the instance's config file).  A write through any
instance's API is one compare-and-swap transaction on that key (read, merge, write if
nobody wrote in between; retried on a race), so two operators never lose each other's
change.  Every instance watches the prefix and hands each change to ``core.operator``;
an instance that was stopped reads the whole prefix when it starts, and after any break in
the watch, so it has every change made while it was away.  No retry queue: etcd is the
queue.

The data path never waits on any of this: a watch runs in its own task, and while etcd is
unreachable the instance keeps the last settings it applied.  A write while etcd is
unreachable raises ``EtcdUnavailable`` (the API answers 503 with the reason) and changes
nothing anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from .etcd import EtcdClient, EtcdError, EtcdUnavailable, compare_mod, put_op

log = logging.getLogger("proxy.cluster.settings")

FIELDS = ("priority", "weight", "enabled", "drained")
WRITE_ATTEMPTS = 5
REWATCH_S = 0.5


class PoolSettings:
    """The farm's pool settings: writes (compare-and-swap), the watch, and applying them."""

    def __init__(self, etcd: EtcdClient, prefix: str, service: Any) -> None:
        self.etcd = etcd
        self.prefix = prefix.rstrip("/") + "/pools/"
        self.service = service
        self.known: dict[str, dict[str, Any]] = {}  # last settings read from etcd, per pool
        self.revision = 0  # the etcd revision the settings are known up to
        self.key_revision: dict[str, int] = {}  # per pool: the mod revision of what was applied
        self.applied = 0  # changes handed to the core (tests and the status read it)
        self._task: asyncio.Task[None] | None = None

    # --- writes -----------------------------------------------------------------------------

    async def write(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the pool's settings in etcd, then apply them here at once
        (the watch brings the same change to every other instance)."""
        merged, revision = await write_pool_setting(self.etcd, self.prefix, name, changes)
        self._take(name, merged, revision)
        return merged

    # --- reading and watching ---------------------------------------------------------------

    async def load(self) -> int:
        """Read every pool's settings and apply what changed; returns the etcd revision.  The
        node calls it every beat too, so an instance whose watch went quiet (its etcd member
        cut off from the others) still converges."""
        kvs, revision = await self.etcd.range(self.prefix, prefix=True)
        for kv in kvs:
            self._take(kv.key[len(self.prefix):], kv.value, kv.mod_revision)
        self.revision = max(self.revision, revision)
        return revision

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="cluster-settings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _watch(self) -> None:
        """Read everything, then follow the changes; on any break, again (changes made while
        the watch was down are in the read)."""
        while True:
            try:
                await self.load()
                async for revision, events in self.etcd.watch(self.prefix, self.revision + 1):
                    for event in events:
                        name = event.kv.key[len(self.prefix):]
                        if event.kind == "put":
                            self._take(name, event.kv.value, event.kv.mod_revision)
                        else:
                            self.known.pop(name, None)  # back to the config file's values on reload
                            self.key_revision.pop(name, None)
                    self.revision = max(self.revision, revision)
            except asyncio.CancelledError:
                raise
            except (EtcdError, ValueError) as exc:
                log.info("settings watch: %s; reading again in %gs", exc, REWATCH_S)
            except Exception:
                log.exception("settings watch failed")
            await asyncio.sleep(REWATCH_S)

    # --- applying ---------------------------------------------------------------------------

    def _take(self, name: str, raw: bytes | dict[str, Any], revision: int) -> None:
        """Apply one pool's settings unless something newer was applied already (a full read
        and the watch may deliver the same key in either order).  A value that is not valid
        settings (written around the API, e.g. with etcdctl) is refused with an event and
        changes nothing."""
        self.revision = max(self.revision, revision)
        if revision <= self.key_revision.get(name, 0):
            return  # applied (or refused) already
        self.key_revision[name] = revision
        try:
            settings = raw if isinstance(raw, dict) else decode_settings(raw)
        except ValueError as exc:
            log.warning("pool settings for %s in etcd refused: %s", name, exc)
            self.service.events.emit("cluster_setting_refused", time.time(), pool=name, revision=revision,
                                     reason=f"{self.prefix}{name} in etcd: {exc}; the settings in force stay")
            return
        self.known[name] = settings
        self.apply(name, settings)

    def reapply(self) -> None:
        """After a config reload: the farm's settings win over the file's."""
        for name, settings in self.known.items():
            self.apply(name, settings)

    def apply(self, name: str, settings: dict[str, Any]) -> None:
        """Hand what differs from the core's current value to ``core.operator``."""
        svc = self.service
        view, core = svc.view, svc.core
        if view is None or core is None:
            return
        if not view.has_pool(name):
            log.info("settings for pool %s: not in this instance's config, ignored", name)
            return
        now = svc.now()
        current = view.pool(name, now)
        changes = {k: settings[k] for k in ("priority", "weight", "enabled")
                   if k in settings and settings[k] != current.get(k)}
        if changes:
            core.operator.set_pool(name, now, **changes)
            self.applied += 1
        drained = settings.get("drained")
        if drained is not None and bool(drained) != bool(view.pool(name, now).get("draining")):
            (core.operator.drain if drained else core.operator.undrain)(name, now)
            self.applied += 1


async def write_pool_setting(etcd: EtcdClient, prefix: str, name: str,
                             changes: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """One compare-and-swap on ``<prefix><name>``: (the merged settings, the write's revision)."""
    key = prefix + name
    for _ in range(WRITE_ATTEMPTS):
        kv = await etcd.get(key)
        try:
            current = decode_settings(kv.value) if kv is not None else {}
        except ValueError:
            current = {}  # not valid settings: the write replaces it
        merged = {**current, **changes}
        ok, revision, _ = await etcd.txn([compare_mod(key, kv.mod_revision if kv else 0)],
                                         [put_op(key, json.dumps(merged))])
        if ok:
            return merged, revision
    raise EtcdError(f"pools/{name}: {WRITE_ATTEMPTS} concurrent writes raced this one; try again")


def decode_settings(raw: bytes) -> dict[str, Any]:
    """One pool's settings from etcd, checked as the API checks a PATCH; ValueError naming the
    field when they are not valid."""
    from ..api.app import ApiError, validate_patch

    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"not JSON: {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    unknown = [k for k in value if k not in FIELDS]
    if unknown:
        raise ValueError(f"{str(unknown[0])[:64]}: unknown field (allowed: {', '.join(FIELDS)})")
    if "drained" in value and type(value["drained"]) is not bool:
        raise ValueError(f"drained: must be true or false, got {value['drained']!r}")
    patch = {k: v for k, v in value.items() if k != "drained"}
    try:
        checked = validate_patch(patch) if patch else {}
    except ApiError as exc:
        raise ValueError(exc.message) from None
    return {**checked, **({"drained": value["drained"]} if "drained" in value else {})}


__all__ = ["FIELDS", "EtcdUnavailable", "PoolSettings", "write_pool_setting"]
