"""A GPU rig speaking the getwork dialect (eth_submitLogin / eth_getWork / eth_submitWork).

The same lifecycle and placement as an EthereumStratum rig (``EthRigSession``), without an
extranonce: the login is the "subscribe" the core places, the work is pushed on every new
job and on a switch, and a share goes back to the pool whose work it was found for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..stratum import errors, ethproxy, ethstratum
from ..stratum.errors import StratumError
from ..stratum.messages import Message
from .eth_rig import EthRigSession
from .rig_base import RigState
from .rig_requests import RigRequest, SubmitRequest, SubscribeRequest

if TYPE_CHECKING:
    from .eth_jobs import EthJob


class EthProxyRigSession(EthRigSession):
    """One getwork-dialect rig (see the module docstring)."""

    __slots__ = ()

    def answer_subscribe(self, extranonce: bytes) -> None:
        """Placed: the login was answered already; the rig mines from the next push."""
        self.subscribe_held = None
        self.extranonce = extranonce  # always b"": getwork pools give none
        self._handshake_done()

    def set_extranonce(self, extranonce: bytes) -> None:
        """Never needed: every getwork pool's extranonce is empty."""
        raise RuntimeError("a getwork rig has no extranonce")

    def send_job(self, job: EthJob, clean: bool) -> None:
        """Push the work (its target says the difficulty): the same bytes for every rig."""
        if self.state is RigState.ACTIVE:
            self.last_job = job
            self.send(job.push_line())

    def _request(self, msg: Message) -> RigRequest | None:
        method = msg.method
        if method == "eth_submitWork":
            return SubmitRequest(msg)
        if method == "eth_getWork":
            if self.last_job is None:
                raise StratumError(errors.NOT_SUBSCRIBED, "no work yet")
            self.reply(msg, ethproxy.work_result(self.last_job.notify))
        elif method == "eth_submitLogin":
            if self.extranonce is not None or self.subscribe_held is not None:
                self.reply(msg, True)
                return None
            self._authorize(msg)  # the account (or account.worker) as the worker name
            self.subscribe_held = msg.id if msg.id is not None else 0
            return SubscribeRequest(msg)
        elif method == "eth_submitHashrate":
            self.reply(msg, True)
        elif method is None:
            pass
        elif method.startswith("mining."):
            raise StratumError(errors.METHOD_NOT_FOUND, f"this port speaks the getwork dialect "
                                                        f"(eth_submitLogin), not {ethstratum.PROTOCOL}")
        else:
            raise StratumError(errors.METHOD_NOT_FOUND, f"unknown method {method[:64]!r}")
        return None
