"""Simulators: a validating pool with fault injection, a rig fleet, a raw test client.

Independent of ``proxy.core`` and ``proxy.net`` on purpose (only the wire maths of
``proxy.stratum`` is shared), so that a proxy mistake shows up as a rejected share or a
disconnected rig here rather than being reproduced by the same code on both sides.
"""

from __future__ import annotations

from ._wait import wait_until
from .client import RawClient
from .firmware import PROFILES, RigProfile
from .nut import SimNut
from .pool import SimConnStats, SimPool, SimPoolConfig, SimShare
from .rigs import RigFleet, SimRig
from .vardiff import Vardiff, VardiffConfig

__all__ = ["PROFILES", "RawClient", "RigFleet", "RigProfile", "SimConnStats", "SimNut", "SimPool",
           "SimPoolConfig", "SimRig", "SimShare", "Vardiff", "VardiffConfig", "wait_until"]
