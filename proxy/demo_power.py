"""The demo's power act (``stratum-proxy demo``, after the rented-hashpower act).

The rigs that came back in the rental act hang on a UPS, read over the NUT protocol from
the NUT simulator (``proxy.sim.nut``).  The mains fail: the UPS goes on battery with
``RUNTIME_S`` of runtime, counting down; once the runtime left (less the margin) is within the
order lead, the proxy rents their hashrate; the battery runs out and the rigs die, and the
delivered hashrate does not dip because the rented rigs are already delivering; the mains
come back, the rigs return, and the normal recovery path cancels the order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .rental.units import format_hashrate
from .sim.nut import SimNut

UPS = "rack-c"
RUNTIME_S = 12.0  # on battery: the order comes after 2 s of watching (12 - 2 margin - 8 lead)
MARGIN_S = 2.0
LEAD_S = 8.0  # order lead: rent when the runtime left, less the margin, is this or less
DOWN_S = 3.0  # the rigs stay dark this long before the mains return
MAX_S = 45.0  # the act gives up (and says so) after this long (it takes 20-30 s)


def power_config(nut: SimNut, workers: str) -> dict[str, Any]:
    """[power] for the demo: one UPS feeding the rigs named ``workers`` (a glob)."""
    return {"order_lead_s": LEAD_S, "runtime_margin_s": MARGIN_S, "curtailments_file": "",
            "ups": [{"name": UPS, "nut": nut.target(UPS), "workers": [workers], "poll_s": 0.5,
                     "timeout_s": 1.0}]}


class PowerAct:
    """Step it once a second from the demo loop; ``done`` when the order is cancelled."""

    def __init__(self, nut: SimNut, say: Callable[[str], None]) -> None:
        self.nut = nut
        self.say = say
        self.started_at: float | None = None
        self.dark_at: float | None = None
        self.back_at: float | None = None
        self.ordered_at: float | None = None
        self.cancelled = False
        self.lowest: float | None = None  # delivered hashrate while the act runs
        self.floor = 0.0
        self.gave_up = False
        nut.set(UPS, status="OL CHRG", charge=100, runtime=1800)

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self.done

    @property
    def done(self) -> bool:
        return self.cancelled or self.gave_up

    async def step(self, t: float, service: Any, rigs: Any, back: Callable[[], Any]) -> int:
        """``rigs``: the fleet on the UPS; ``back``: starts the rigs again (awaitable).
        Returns the change in the number of own rigs (they die, they return)."""
        ctl = service.rental
        if self.started_at is None:
            self.started_at = t
            self.floor = ctl.config.target_hs * (1 - ctl.config.trigger_deficit)
            self.say(f">>> the mains fail: UPS {UPS} on battery with {RUNTIME_S:g} s of runtime for "
                     f"{rigs.count} rigs (order lead {LEAD_S:g} s, margin {MARGIN_S:g} s)")
            self.nut.set(UPS, status="OB DISCHRG", charge=60, runtime=RUNTIME_S)
            return 0
        change = 0
        on_battery = t - self.started_at
        if self.ordered_at is None and ctl.order is not None:
            self.ordered_at = t
        # the dip the act is about: from the order delivering until the mains return (after
        # that the rigs are back and the normal recovery path winds the order down)
        if (self.back_at is None and ctl.order is not None and ctl.order.delivered_hs > 0
                and ctl.delivered_hs is not None):
            self.lowest = min(self.lowest or ctl.delivered_hs, ctl.delivered_hs)
        if self.dark_at is None:
            left = max(0.0, RUNTIME_S - on_battery)
            self.nut.set(UPS, status="OB DISCHRG LB" if left <= MARGIN_S + 2 else "OB DISCHRG",
                         charge=max(1, round(60 * left / RUNTIME_S)), runtime=round(left))
            if left <= 0:
                self.dark_at = t
                self.say(f">>> the battery of UPS {UPS} is empty: its {rigs.count} rigs die")
                await rigs.stop()
                change = -rigs.count
        elif self.back_at is None and t - self.dark_at >= DOWN_S:
            self.back_at = t
            self.say(f">>> the mains are back: UPS {UPS} on line, its rigs return")
            self.nut.set(UPS, status="OL CHRG", charge=20, runtime=600)
            await back()
            change = rigs.count
        if self.back_at is not None and ctl.order is None and self.ordered_at is not None:
            self.cancelled = True
            self.say(f"the power act is over: the order was cancelled {t - self.back_at:.0f} s after "
                     "the mains returned")
        if on_battery > MAX_S and not self.done:
            self.gave_up = True
            self.say("the power act ran out of time (see the log)")
        return change

    def summary(self) -> str:
        if self.started_at is None:
            return "power act: did not run"
        ahead = "NO order before the rigs went dark"
        if self.ordered_at is not None and self.dark_at is not None and self.ordered_at < self.dark_at:
            ahead = f"the order came {self.dark_at - self.ordered_at:.0f} s before the rigs went dark"
        if self.lowest is None:
            dip = "no delivered figure while the order ran"
        else:
            dip = (f"delivered hashrate never below {format_hashrate(self.lowest)} from the order "
                   f"delivering to the mains' return (the trigger: {format_hashrate(self.floor)})"
                   + ("" if self.lowest >= self.floor else ", so it DIPPED"))
        return f"power act: {ahead}; {dip}; order {'cancelled' if self.cancelled else 'NOT cancelled'}"

    @property
    def ok(self) -> bool:
        return (self.cancelled and self.ordered_at is not None and self.dark_at is not None
                and self.ordered_at < self.dark_at)
