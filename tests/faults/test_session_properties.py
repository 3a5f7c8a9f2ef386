"""Property-based: the session state machine under any mix of valid and hostile traffic,
and the message decoder and line framing beneath it.

Hypothesis drives the sans-I/O core (FakeIO, fake clock) with random interleavings of rig
messages (valid handshakes and shares, replays, random JSON-RPC, raw bytes), pool events
(new jobs, difficulty, answers right or wrong, duplicate and unknown-id answers, drops,
redials) and time.  After every step: no exception escaped, every request with an id was
answered exactly once (or its rig was closed), nothing reached the catch-all, and every
counter agrees with every other.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from proxy.core.upstream import ConnState, RequestKind
from proxy.stratum import messages
from proxy.stratum.framing import LineFramer, LineTooLong

from ..core.harness import FakePoolLink, FakeRig, connect, make_core, make_notify

METHODS = ["mining.subscribe", "mining.authorize", "mining.submit", "mining.configure",
           "mining.extranonce.subscribe", "mining.suggest_difficulty", "mining.suggest_target",
           "client.get_version", "mining.unknown", None]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["00000000", "ffffffff", "zz", "1fffe000", "farm.rig1", "1"]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10)
WORKER = "farm.rig1"


def _pending(machine: SessionMachine) -> bool:
    """Answer rules only run when some pool holds shares to answer."""
    return any(p.kind is RequestKind.SHARE for link in machine._live_links()
               for p in link.conn.pending.values())

# What the examples reached, summed over a run: the test fails if the machine never got deep
# enough for its invariants to mean something (shares accepted, forwarded, answered, lost...).
REACHED: Counter[str] = Counter()


class Tracked:
    """A FakeRig plus what the test expects of it."""

    def __init__(self, rig: FakeRig, n: int) -> None:
        self.rig = rig
        self.n = n
        self.expect_one: dict[Any, str] = {}  # id -> method: must be answered exactly once
        self.at_most_one: set[Any] = set()  # ids that may or may not be answered (responses)
        self.submits: set[Any] = set()  # ids of lines the core decodes as mining.submit
        self.idless_submits = 0  # mining.submit without an id: counted, answered only if true
        self.last_share: list[str] | None = None
        self.next_id = 1


class SessionMachine(RuleBasedStateMachine):
    rigs = Bundle("rigs")

    def __init__(self) -> None:
        super().__init__()
        # rate limit out of the way: refused requests are answered in bulk, not by id
        self.core, self.io, self.clock = make_core(max_line_bytes=2048, max_requests_per_s=1e6)
        self.links: dict[int, FakePoolLink] = {}
        self.answered_upstream: dict[int, set[int]] = {}
        self.tracked: list[Tracked] = []
        self.job_no = 0
        for conn in list(self.io.dialed):
            self._bring_up(conn)

    # --- helpers ------------------------------------------------------------------------------

    def _bring_up(self, conn) -> None:
        link = connect(self.core, conn, self.clock)
        self.job_no += 1
        link.handshake(extranonce1=f"{conn.conn_id:08x}", e2_size=8, difficulty=1e-12,
                       notify=make_notify(f"j{self.job_no}", tag=f"{conn.conn_id % 256:02x}"))
        self.links[conn.conn_id] = link
        self.answered_upstream[conn.conn_id] = set()

    def _live_links(self) -> list[FakePoolLink]:
        return [link for link in self.links.values() if link.conn.state is not ConnState.CLOSED]

    def _send(self, t: Tracked, obj: dict[str, Any]) -> None:
        line = json.dumps(obj).encode() + b"\n"
        msg_id, method = obj.get("id"), obj.get("method")
        try:
            decoded: messages.Message | None = messages.decode(line)
        except messages.BadMessage:
            decoded = None
        if msg_id is not None and not t.rig.closed:
            if method is not None or decoded is None:
                t.expect_one[msg_id] = str(method)
            else:
                t.at_most_one.add(msg_id)  # a "response" from the rig: nothing to answer
            if decoded is not None and decoded.method == "mining.submit":
                t.submits.add(msg_id)
        if msg_id is None and decoded is not None and decoded.method == "mining.submit" \
                and not t.rig.closed:
            t.idless_submits += 1
        t.rig.send_raw(line)

    def _take_id(self, t: Tracked, kind: int) -> Any:
        t.next_id += 1
        n = t.n * 100_000 + t.next_id
        return (n, f"s{n}", n + 2**70)[kind]

    def _job(self, t: Tracked) -> list | None:
        notifies = t.rig.notifications("mining.notify")
        return notifies[-1] if notifies else None

    # --- rigs -------------------------------------------------------------------------------

    @initialize(target=rigs, mask=st.booleans())
    def first_rig(self, mask: bool) -> Tracked:
        return self.new_rig(True, mask)

    @rule(target=rigs, setup=st.booleans(), mask=st.booleans())
    def new_rig(self, setup: bool, mask: bool) -> Tracked:
        n = len(self.tracked)
        t = Tracked(FakeRig(self.core, self.clock, peer=f"10.0.{n // 250}.{n % 250}:4000"), n)
        self.tracked.append(t)
        if setup:
            if mask:
                self._send(t, {"id": self._take_id(t, 0), "method": "mining.configure",
                               "params": [["version-rolling"], {"version-rolling.mask": "1fffe000"}]})
            self._send(t, {"id": self._take_id(t, 0), "method": "mining.subscribe",
                           "params": ["prop/1.0"]})
            self._send(t, {"id": self._take_id(t, 0), "method": "mining.authorize",
                           "params": [WORKER, "x"]})
        return t

    @rule(t=rigs, kind=st.integers(0, 2), nonce=st.integers(0, 2**32 - 1),
          e2=st.binary(min_size=4, max_size=4), roll=st.booleans())
    def submit_share(self, t: Tracked, kind: int, nonce: int, e2: bytes, roll: bool) -> None:
        """A well-formed share for the rig's latest job (any hash meets difficulty 1e-12)."""
        job = self._job(t)
        job_id, ntime = (job[0], job[7]) if job else ("0", "00000000")
        params = [WORKER, job_id, e2.hex(), ntime, f"{nonce:08x}"]
        if roll:
            params.append("00002000")
        t.last_share = params
        self._send(t, {"id": self._take_id(t, kind), "method": "mining.submit", "params": params})

    @rule(t=rigs, count=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
    def share_burst(self, t: Tracked, count: int, seed: int) -> None:
        """Several fresh shares at once, as a fast rig sends them."""
        for i in range(count):
            self.submit_share(t, 0, (seed + i) % 2**32, seed.to_bytes(4, "big"), i % 2 == 0)

    @rule(t=rigs, nonce=st.integers(0, 2**32 - 1),
          verdict=st.sampled_from(["reject", "accept", "duplicate", "unknown_id"]))
    def share_and_verdict(self, t: Tracked, nonce: int, verdict: str) -> None:
        """A share, then at once the pools' verdict on everything they hold."""
        self.submit_share(t, 0, nonce, b"\x01\x02\x03\x04", False)
        self._answer_all(["accept"] if verdict == "duplicate" else [verdict])
        if verdict == "duplicate":
            self._answer_all(["duplicate"])

    @rule(t=rigs)
    def replay_share(self, t: Tracked) -> None:
        if t.last_share is not None:
            self._send(t, {"id": self._take_id(t, 0), "method": "mining.submit",
                           "params": t.last_share})

    @rule(t=rigs, method=st.sampled_from(METHODS), params=JSONISH, kind=st.integers(0, 3))
    def random_message(self, t: Tracked, method: str | None, params: Any, kind: int) -> None:
        if method == "mining.submit" and isinstance(params, list) and self._job(t) and kind == 0:
            params = [WORKER, self._job(t)[0], *params[:4]]  # reach deep validation
        msg_id = None if kind == 3 else self._take_id(t, kind)
        self._send(t, {"id": msg_id, "method": method, "params": params})

    @rule(t=rigs, noise=st.binary(max_size=200))
    def raw_bytes(self, t: Tracked, noise: bytes) -> None:
        """Any bytes, as one or more complete lines (a cut line would glue onto the next)."""
        t.rig.send_raw(noise + b"\n")

    @rule(t=consumes(rigs))
    def rig_disconnects(self, t: Tracked) -> None:
        self.core.rig_closed(t.rig.session, self.clock.now)
        t.rig.closed = True

    # --- pools -------------------------------------------------------------------------------

    @rule(clean=st.booleans(), which=st.integers(0, 7))
    def pool_job(self, clean: bool, which: int) -> None:
        live = self._live_links()
        if live:
            link = live[which % len(live)]
            self.job_no += 1
            link.feed({"id": None, "method": "mining.notify",
                       "params": make_notify(f"j{self.job_no}", clean=clean)})

    @rule(diff=st.sampled_from([1e-12, 2e-12, 1e-11]), which=st.integers(0, 7))
    def pool_difficulty(self, diff: float, which: int) -> None:
        live = self._live_links()
        if live:
            live[which % len(live)].feed({"id": None, "method": "mining.set_difficulty",
                                          "params": [diff]})

    @precondition(_pending)
    @rule(verdicts=st.lists(st.sampled_from(["accept", "reject", "duplicate", "unknown_id",
                                              "none"]), min_size=1, max_size=4))
    def pools_answer(self, verdicts: list[str]) -> None:
        """Every live pool answers its unanswered shares (verdicts cycled over them)."""
        self._answer_all(verdicts)

    @precondition(_pending)
    @rule()
    def pools_accept(self) -> None:
        self._answer_all(["accept"])

    @precondition(_pending)
    @rule()
    def pools_reject(self) -> None:
        """A pool that turns against the farm: every unanswered share rejected."""
        self._answer_all(["reject"])

    @precondition(_pending)
    @rule()
    def pools_answer_twice(self) -> None:
        self._answer_all(["reject", "accept"])
        self._answer_all(["duplicate"])  # the same shares answered again (accepted this time)

    @precondition(_pending)
    @rule()
    def pools_answer_unknown_ids(self) -> None:
        self._answer_all(["unknown_id"])

    def _answer_all(self, verdicts: list[str]) -> None:
        for link in self._live_links():
            done = self.answered_upstream[link.conn.conn_id]
            for i, req in enumerate(link.requests("mining.submit")):
                verdict = verdicts[i % len(verdicts)]
                if req["id"] in done and verdict != "duplicate":
                    continue
                done.add(req["id"])
                if link.conn.state is ConnState.CLOSED:
                    break  # an earlier answer made the core drop this pool
                if verdict == "accept" or verdict == "duplicate":
                    link.feed({"id": req["id"], "result": True, "error": None})
                elif verdict == "reject":
                    link.feed({"id": req["id"], "result": None,
                               "error": [23, "Low difficulty", None]})
                elif verdict == "unknown_id":
                    link.feed({"id": req["id"] + 10**6, "result": True, "error": None})

    @rule(how=st.sampled_from(["reset", "refused", b"not json\n", b"x" * 3000 + b"\n",
                               b'{"id":1,"result":[}\n', b'{"id":null,"method":"mining.notify"}\n']),
          which=st.integers(0, 7))
    def pool_fails(self, how: str | bytes, which: int) -> None:
        """A pool connection drops, or sends garbage / an over-long line / a bad notify."""
        live = self._live_links()
        if live:
            conn = live[which % len(live)].conn
            if isinstance(how, bytes):
                self.core.pool_data(conn, how, self.clock.now)
            else:
                self.core.pool_closed(conn, f"connection {how}", self.clock.now)

    @rule(up=st.booleans())
    def redials_complete(self, up: bool) -> None:
        for conn in list(self.io.dialed):
            if conn.state is ConnState.DIALING:
                if up:
                    self._bring_up(conn)
                else:
                    self.core.pool_closed(conn, "connection refused", self.clock.now)

    @rule(dt=st.sampled_from([0.05, 0.5, 2.0, 5.0, 31.0]))
    def time_passes(self, dt: float) -> None:
        self.core.tick(self.clock.advance(dt))

    @rule(t=rigs, nonce=st.integers(0, 2**32 - 1))
    def pool_goes_silent(self, t: Tracked, nonce: int) -> None:
        """A share is forwarded and its pool never answers: past silent_timeout_s it times
        out (and the pool is dropped), in small ticks as the service's loop would."""
        self.submit_share(t, 0, nonce, b"\x05\x06\x07\x08", False)
        for _ in range(9):
            self.core.tick(self.clock.advance(0.5))

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def every_request_answered_once(self) -> None:
        for t in self.tracked:
            answers = Counter(m.get("id") for m in t.rig.received
                              if "method" not in m and m.get("id") is not None)
            internal = [m for m in t.rig.received
                        if m.get("error") and m["error"][1] == "internal error"]
            assert internal == [], internal
            held = t.rig.session.subscribe_held
            for msg_id, method in t.expect_one.items():
                if t.rig.closed:
                    assert answers[msg_id] <= 1, (msg_id, method)
                elif msg_id == held:
                    # a subscribe waits (layout_wait_s at most) until its extranonce layout
                    # is known: a pool usable, or the rig's own connection to a narrow one
                    assert answers[msg_id] == 0 and method == "mining.subscribe"
                    assert t.rig.session in self.core.handshake.held
                    assert self.core.handshake.held[t.rig.session] <= (
                        self.clock.now + self.core.settings.layout_wait_s)
                else:
                    assert answers[msg_id] == 1, (msg_id, method, t.rig.received[-3:])
            for msg_id in t.at_most_one:
                assert answers[msg_id] <= 1
            known = set(t.expect_one) | t.at_most_one
            assert set(answers) <= known, set(answers) - known

    @invariant()
    def sessions_match_connections(self) -> None:
        core = self.core
        live = {t.rig.session.rig_id for t in self.tracked if not t.rig.closed}
        assert set(core.rigs) == live
        for t in self.tracked:
            s = t.rig.session
            assert s.closed == t.rig.closed
            if s.conn is not None:
                assert s.conn.state is not ConnState.CLOSED and s.conn.rigs.get(s.prefix) is s
        prefixes = [r.prefix for r in core.rigs.values() if r.subscribed]
        assert len(prefixes) == len(set(prefixes))  # unique proxy-wide while they last

    @invariant()
    def ledger_balances(self) -> None:
        core = self.core
        t = core.totals
        assert t["submits"] == t["accepted"] + t["rejected"]
        sessions = [x.rig.session for x in self.tracked]
        assert sum(s.accepted for s in sessions) == t["accepted"]
        assert sum(sum(s.rejected.values()) for s in sessions) == t["rejected"]
        forwarded = 0
        for pool in core.pools.values():
            c = pool.counters
            in_flight = sum(1 for conn in pool.connections.values() for p in conn.pending.values()
                            if p.kind is RequestKind.SHARE)
            assert pool.shares_in_flight() == in_flight
            assert c.forwarded == (c.accepted + sum(c.rejected.values()) + c.timeouts
                                   + sum(c.lost.values()) + in_flight), (pool.name, c, in_flight)
            forwarded += c.forwarded
        assert t["accepted"] == forwarded + t["below_pool_target"] + t["outside_pool_mask"]
        # the rigs' view: answers to decoded submits are exactly what the proxy counted
        for x in self.tracked:
            s = x.rig.session
            answers = [m for m in x.rig.received if "method" not in m and m.get("id") in x.submits]
            accepted = sum(1 for m in answers if m.get("result") is True)
            # an id-less submit is answered only when accepted (an error needs an id)
            idless_accepted = sum(1 for m in x.rig.received if "method" not in m
                                  and m.get("id") is None and m.get("result") is True)
            assert accepted + idless_accepted == s.accepted
            assert (len(answers) - accepted) + (x.idless_submits - idless_accepted) \
                == sum(s.rejected.values())

    def teardown(self) -> None:
        t = self.core.totals
        REACHED["rig_accepted"] += t["accepted"]
        REACHED["rig_rejected"] += t["rejected"]
        REACHED["rigs_closed"] += t["rigs_disconnected"]
        REACHED["bad_lines"] += t["bad_lines"]
        for pool in self.core.pools.values():
            c = pool.counters
            REACHED["forwarded"] += c.forwarded
            REACHED["pool_accepted"] += c.accepted
            REACHED["pool_rejected"] += sum(c.rejected.values())
            REACHED["timeouts"] += c.timeouts
            REACHED["lost"] += sum(c.lost.values())
            REACHED["late_answers"] += c.late_answers
        REACHED["examples"] += 1


def test_session_state_machine():
    REACHED.clear()
    run_state_machine_as_test(SessionMachine, settings=settings(
        max_examples=200, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    unreached = [k for k in ("rig_accepted", "rig_rejected", "rigs_closed", "bad_lines",
                             "forwarded", "pool_accepted", "pool_rejected", "timeouts", "lost",
                             "late_answers") if REACHED[k] == 0]
    assert unreached == [], dict(REACHED)


# --- the decoder and the framing on their own ---------------------------------------------------

HUGE = "__HUGE_NUMBER__"  # replaced in the JSON text by a number msgspec cannot hold
IDS = st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(msg_id=IDS, method=st.sampled_from(METHODS), params=JSONISH | st.just([HUGE]),
       extra=st.dictionaries(st.sampled_from(["result", "error", "jsonrpc", "x"]), JSONISH,
                             max_size=2))
def test_decoder_keeps_the_id_of_any_object(msg_id, method, params, extra):
    """Any JSON object with a usable id either decodes, or fails with that id kept, so the
    rig gets an error it can match instead of being closed."""
    text = json.dumps({"id": msg_id, "method": method, "params": params, **extra})
    line = text.replace(json.dumps(HUGE), "1e400").encode()
    try:
        msg = messages.decode(line)
    except messages.BadMessage as exc:
        assert exc.msg_id == msg_id
    else:
        assert msg.id == msg_id and msg.method == method


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_is_total_on_bytes(data):
    """Any bytes: a Message or BadMessage (never another exception); a kept id is usable."""
    try:
        msg = messages.decode(data)
    except messages.BadMessage as exc:
        assert exc.msg_id is None or isinstance(exc.msg_id, (int, str))
        assert not isinstance(exc.msg_id, bool)
    else:
        assert isinstance(msg, messages.Message)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.binary(max_size=48).map(lambda b: b.replace(b"\n", b"")), max_size=8),
       tail=st.binary(max_size=48).map(lambda b: b.replace(b"\n", b"")),
       cuts=st.lists(st.integers(0, 500), max_size=10))
def test_framing_refuses_exactly_the_over_long_lines(lines, tail, cuts):
    """However the stream is cut, the framer yields the same lines, and raises LineTooLong
    if and only if a line (or the unterminated tail) is longer than the cap."""
    cap = 32
    data = b"".join(line + b"\n" for line in lines) + tail
    bounds = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    framer = LineFramer(cap)
    got: list[bytes] = []
    too_long = any(len(x) > cap for x in [*lines, tail])
    try:
        for a, b in zip(bounds, bounds[1:]):
            got.extend(framer.feed(data[a:b]))
    except LineTooLong:
        assert too_long
        return
    assert not too_long
    assert got == [x for x in lines if x.strip()]
    assert framer.pending == len(tail)
