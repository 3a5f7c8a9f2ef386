"""The getwork dialect's core ("stratum1" / eth-proxy: eth_submitLogin, eth_getWork,
eth_submitWork) for one listener of ``protocol = "ethproxy"``.

It is ``EthCore`` with the dialect's session and connection types: the same placement,
routing, health, silence, failback and operator machinery.  What differs: no extranonce
and no prefix (a getwork miner picks the whole nonce, so getwork rigs go only to getwork
pools, where a switch is nothing but new work pushed), and a share names its work by the
header hash, looked up among the rig's own (recent) connections."""

from __future__ import annotations

from ..stratum import errors, ethproxy, messages
from ..stratum.errors import StratumError
from .eth_core import EthCore
from .eth_jobs import check_work
from .eth_rig import EthRigSession
from .ethproxy_rig import EthProxyRigSession
from .ethproxy_upstream import EthProxyPoolConnection
from .rig_base import RigState


class EthProxyCore(EthCore):
    """One getwork-dialect listener's decisions (see the module docstring)."""

    PROTOCOL = ethproxy.DIALECT
    SESSION = EthProxyRigSession
    CONNECTION = EthProxyPoolConnection

    def _prefix(self) -> bytes:
        return b""  # getwork rigs choose their whole nonce

    def moves_in_place(self, rig: EthRigSession) -> bool:
        """A getwork rig always does: a move is the other pool's work, pushed."""
        return True

    def connections_wanted(self) -> int:
        """One connection per pool carries every rig (no prefixes to run out of)."""
        return 1

    def _submit(self, rig: EthRigSession, msg: messages.Message, now: float) -> None:
        if msg.method != "eth_submitWork":
            raise StratumError(errors.METHOD_NOT_FOUND, "getwork port: use eth_submitWork")
        if rig.state is not RigState.ACTIVE:
            raise StratumError(errors.UNAUTHORIZED, "log in first (eth_submitLogin)")
        work = ethproxy.parse_submit(msg.params)
        job = None
        for conn in (rig.conn, *reversed(rig.recent_conns)):
            if conn is not None:
                job = self.jobs.by_header.get((work.header_hash, conn.conn_id))
                if job is not None:
                    break
        self.forward(rig, msg, job, check_work(rig, job, work.nonce), work, now)
