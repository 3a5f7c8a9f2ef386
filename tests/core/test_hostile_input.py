"""Property-based: any bytes from a rig leave the core consistent and other rigs untouched."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import FakeRig, connect, make_core

METHODS = ["mining.subscribe", "mining.authorize", "mining.submit", "mining.configure",
           "mining.extranonce.subscribe", "mining.suggest_difficulty", "mining.suggest_target",
           "client.get_version", "mining.unknown", None]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(["00000000", "ffffffff", "zz", "1fffe000", "deadbeef" * 5]),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=12)
MESSAGE = st.fixed_dictionaries({
    "id": st.none() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2),
    "method": st.sampled_from(METHODS),
    "params": JSONISH,
})


def _line(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode() + b"\n"


def _world():
    core, io, clock = make_core(max_line_bytes=2048)
    connect(core, io.dialed[0], clock).handshake(extranonce1="aabbccdd", e2_size=8)
    good = FakeRig(core, clock, peer="10.0.0.1:1")
    good.setup()
    return core, clock, good


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MESSAGE, max_size=8), st.binary(max_size=300), st.booleans())
def test_any_messages_and_bytes_leave_the_core_consistent(messages, noise, set_up_first):
    core, clock, good = _world()
    bad = FakeRig(core, clock, peer="10.0.0.2:1")
    before = 0
    if set_up_first:  # reach submit validation, not just "not subscribed"
        bad.setup()
        job_id = bad.notifications("mining.notify")[-1][0]
        for msg in messages:
            if msg["method"] == "mining.submit" and isinstance(msg["params"], list):
                msg["params"] = ["farm.rig1", job_id, *msg["params"][:4]]
    before = len(bad.received)
    for msg in messages:
        bad.send_raw(_line(msg))  # must never raise
    bad.send_raw(noise)
    bad.send_raw(b"\n")
    # no input reached the catch-all: every bad request got a deliberate error
    internal = [m for m in bad.received[before:] if m.get("error") and m["error"][1] == "internal error"]
    assert internal == []
    # every request with a usable id got exactly one answer (unless the rig was closed)
    if not bad.closed:
        answered = [m for m in bad.received[before:] if "method" not in m]
        assert len(answered) <= len(messages) + 1
    # the well-behaved rig still works: subscribe state intact, a share is answered
    job_id = good.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    for nonce in range(200_000):
        digest = job.header_hash(good.session.prefix, b"\7\7\7\7", job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            break
    mid = good.request("mining.submit", ["farm.rig1", job_id, "07070707", f"{job.ntime:08x}",
                                         f"{nonce:08x}"])
    assert good.answer(mid)["result"] is True
    assert not good.closed
    # the closed rig released what it held
    if bad.closed:
        assert bad.session.rig_id not in core.rigs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=30))
def test_framing_any_chunking_gives_the_same_lines(chunks):
    from proxy.stratum.framing import LineFramer, LineTooLong

    data = b"".join(chunks)
    framer = LineFramer(4096)
    got = []
    try:
        for chunk in chunks:
            got.extend(framer.feed(chunk))
    except LineTooLong:
        return
    whole = [line for line in data.split(b"\n")[:-1] if line.strip()]
    assert got == whole
