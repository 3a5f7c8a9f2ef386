"""The firmware quirks corpus: named ways real mining firmware speaks Stratum V1.

A ``RigFleet(..., profile="cgminer")`` runs rigs that behave like that firmware, so a proxy
(or a pool) is tested against what real rigs do rather than against what our own sim rig
happens to do.  Each profile isolates one family's behaviour that has broken proxies or
pools before, and its ``doc`` says where the behaviour was learned: a public source file or
issue thread (read, re-expressed here, never copied).

Values that are real-world large (a 90 s silence limit, a suggested difficulty of 1000) are
kept as the firmware has them; tests scale them with ``dataclasses.replace`` when they need
to run in seconds on rigs that hash in Python.

``PROFILES`` is the registry: name -> profile, and ``profile.summary`` is the one line that
says what the profile tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BIP320_MASK", "PROFILES", "USER_AGENT", "RigProfile", "get_profile"]

BIP320_MASK = 0x1FFFE000  # the 16 header-version bits BIP320 leaves to miners
USER_AGENT = "simrig/1.0"

# when a mining.set_difficulty starts counting on the rig:
#   "now"          at once, for the job in hand too (most firmware)
#   "next_notify"  from the next mining.notify on, with the latest value (NerdQAxe, ESP-Miner)
#   "stacked"      one difficulty per notify, queued (cgminer: two set_difficulty before one
#                  notify apply to that notify and the next one)
DifficultyApplies = Literal["now", "next_notify", "stacked"]


@dataclass(frozen=True)
class RigProfile:
    """How one firmware family speaks Stratum V1: the knobs the quirks corpus turns.

    ``pipeline``, ``version_rolling`` and ``extranonce_subscribe`` left at None take the
    fleet's arguments (the default profile); the named profiles fix them.
    """

    name: str
    summary: str  # one line: what this profile tests
    doc: str = ""  # the profile's docstring: the behaviour and its public source
    user_agent: str = USER_AGENT
    pipeline: bool | None = None  # configure/subscribe/authorize in one write
    version_rolling: bool | None = None  # sends mining.configure with version-rolling
    extranonce_subscribe: bool | None = None  # sends mining.extranonce.subscribe
    requested_mask: int = BIP320_MASK  # version-rolling.mask asked for in mining.configure
    min_bit_count: int | None = 2  # version-rolling.min-bit-count (None: not sent)
    rollable_mask: int = BIP320_MASK  # what the hardware can roll: it rolls granted & this
    unnegotiated_mask: int = 0  # rolls these bits on every share with no mining.configure
    minimum_difficulty: float | None = None  # sent as minimum-difficulty.value; a hard floor
    configure_subscribe_extranonce: bool = False  # subscribe-extranonce in mining.configure
    configure_answer_is_next_line: bool = False  # takes the next line as configure's answer
    requires_version_rolling: bool = False  # drops a pool that does not grant a mask
    suggest_difficulty: float | None = None  # mining.suggest_difficulty value
    suggest_first: bool = False  # ... sent before mining.subscribe (else after authorize)
    extranonce2_sizes: tuple[int, int] = (0, 32)  # accepted extranonce2_size, else drops
    difficulty_applies: DifficultyApplies = "now"
    silence_timeout_s: float | None = None  # nothing received this long: pool dead, redial


def _profiles(*profiles: RigProfile) -> dict[str, RigProfile]:
    return {p.name: p for p in profiles}


def _firmware(name: str, summary: str, doc: str, **quirks: Any) -> RigProfile:
    """A named profile: firmware that pipelines its handshake, negotiates version rolling and
    does not subscribe to extranonce changes, unless ``quirks`` say otherwise."""
    base: dict[str, Any] = {"pipeline": True, "version_rolling": True,
                            "extranonce_subscribe": False}
    return RigProfile(name, summary, doc, **{**base, **quirks})


PROFILES: dict[str, RigProfile] = _profiles(
    RigProfile(
        "default",
        "this simulator's own rig: the baseline every other profile differs from",
        doc="Pipelined configure (mask 1fffe000) + subscribe + authorize, a new difficulty "
            "counts at once, set_extranonce followed from the next notify when the fleet "
            "subscribes to it. Stratum V1 and BIP310 as most firmware speaks them.",
    ),
    _firmware(
        "cgminer",
        "sequential handshake that reads the line after mining.configure as its answer, "
        "extranonce2 2..16, one difficulty per notify, a pool silent 90 s is dead",
        "Learned from ckolivas/cgminer: util.c configure_stratum_mining sends "
        "mining.configure alone with mask ffffffff and parses the very next line as the "
        "answer (no id check: a notification there fails the session), and with version "
        "rolling built in (USE_VMASK) initiate_stratum gives up unless version-rolling is "
        "true with a non-zero mask; initiate_stratum refuses extranonce2 sizes outside "
        "2..16 (n2size check); parse_diff queues difficulties (next_diff, diff_after) "
        "that parse_notify applies one per notify; parse_method knows no "
        "mining.set_extranonce; cgminer.c stratum_thread treats 90 s without a line "
        "(select timeout) as a dead pool and reconnects.",
        user_agent="cgminer/4.12.1",
        pipeline=False,
        requested_mask=0xFFFFFFFF,
        min_bit_count=None,
        rollable_mask=0xFFFFFFFF,
        configure_answer_is_next_line=True,
        requires_version_rolling=True,
        extranonce2_sizes=(2, 16),
        difficulty_applies="stacked",
        silence_timeout_s=90.0,
    ),
    _firmware(
        "s21_bits_without_configure",
        "submits a 6th version-bits parameter on every share without ever sending "
        "mining.configure",
        "Some Antminer S21 firmware (seen behind MiningRigRentals) rolls version bits and "
        "sends them as the 6th mining.submit parameter with no BIP310 negotiation: "
        "OCEAN-xyz/datum_gateway#214 and PR #215 (the gateway ignored the bits and the "
        "shares failed; the PR rejects them with a distinct error). It rolls inside the "
        "BIP320 bits, 1fffe000. A pool or proxy that accepts bits inside its own mask "
        "keeps this rig; one that rejects them loses every rolled share.",
        user_agent="Antminer S21/bmminer",
        version_rolling=False,
        unnegotiated_mask=BIP320_MASK,
    ),
    _firmware(
        "mask_ffffffff_rolls_1fffe000",
        "requests version-rolling.mask ffffffff but its hardware rolls only 1fffe000",
        "Bitaxe's ESP-Miner (skot/ESP-Miner components/stratum/stratum_api.c "
        "STRATUM_V1_configure_version_rolling) asks for mask \"ffffffff\" with no "
        "min-bit-count, while the BM1366 driver (components/asic/bm1366.c) loads "
        "mask >> 13 into a 16-bit register and the result task shifts the rolled field "
        "back << 13: only bits 1fffe000 ever move (bitaxeorg/ESP-Miner#54, #1169). Its "
        "6th submit parameter is only the bits it changed (main/tasks/"
        "asic_result_task.c: rolled version ^ job version). A proxy must grant from what "
        "the pool allows, and accept a rig that uses less than it was granted.",
        user_agent="bitaxe/BM1366/v2.0",
        requested_mask=0xFFFFFFFF,
        min_bit_count=None,
        rollable_mask=BIP320_MASK,
    ),
    _firmware(
        "configure_min_diff_and_extranonce",
        "sends minimum-difficulty and subscribe-extranonce in mining.configure and holds "
        "the server to what it answered",
        "Real requests logged in OCEAN-xyz/datum_gateway src/datum_stratum.c "
        "(client_mining_configure): [\"version-rolling\",\"minimum-difficulty\","
        "\"subscribe-extranonce\"] with version-rolling.min-bit-count 16 and "
        "minimum-difficulty.value 2048; DATUM answers minimum-difficulty false. "
        "FutureBit Apollo logs \"Min difficulty not accepted\" on a false answer "
        "(jstefanop/Apollo-Miner-Binaries#19); a Braiins Pool endpoint froze 20 s on this "
        "request (braiins/farm-proxy#31). Per the stratum extensions spec (BIP310), true "
        "for minimum-difficulty is a promise never to send a lower difficulty, and true "
        "for subscribe-extranonce allows mining.set_extranonce; the rig counts a broken "
        "promise as a violation. Its minimum is a hard limit: it never works below it.",
        user_agent="Apollo-BTC/2.0.6",
        min_bit_count=16,
        minimum_difficulty=2.0 ** -26,  # 2048 on a real rig; scaled to the sims' difficulties
        configure_subscribe_extranonce=True,
    ),
    _firmware(
        "suggest_before_subscribe",
        "sends mining.suggest_difficulty as its very first line, before mining.subscribe",
        "\"The whatsminer starts out with a mining.suggest_difficulty message\": the SRI "
        "translator errored on it and dropped the connection until "
        "stratum-mining/stratum#505 (see also #511). A proxy or pool must answer it (or "
        "ignore it) whatever the session state, and may use it as a floor.",
        user_agent="whatsminer/v1.1",
        suggest_difficulty=2.0 ** -22,  # thousands on a real rig; scaled to the sims
        suggest_first=True,
    ),
    _firmware(
        "difficulty_next_notify",
        "applies a new difficulty only from the next mining.notify on",
        "NerdQAxe++ acknowledges mining.set_difficulty but works at the old difficulty "
        "until the next mining.notify (shufps/ESP-Miner-NerdQAxePlus#511, "
        "shufps/qaxe#33); ESP-Miner's stratum_task.c stamps each notify with the "
        "difficulty in force when it arrives. Pools credit such shares at the lower of "
        "the old and new difficulty (ckpool 3a6da1f); public-pool rejected them "
        "(benjamin-wilson/public-pool#39).",
        user_agent="NerdQAxe++/BM1370/v1.0.36",
        difficulty_applies="next_notify",
    ),
    _firmware(
        "refuses_e2_over_8",
        "drops the connection when given an extranonce2_size above 8",
        "WhatsMiners cannot operate with extranonce2_size > 8, \"probably due to running "
        "cgminer internally\" (stratum-mining/stratum#1861); the SRI translator capped "
        "it at 8 for them. The rig checks the subscribe answer (and any "
        "mining.set_extranonce, were it to follow one) and disconnects, then redials, "
        "on a size it cannot use.",
        user_agent="whatsminer/v1.1",
        extranonce2_sizes=(2, 8),
    ),
    _firmware(
        "extranonce_subscribe",
        "sends mining.extranonce.subscribe and follows mining.set_extranonce from the next "
        "notify",
        "NiceHash's extranonce subscription spec (nicehash.com, \"Patches for "
        "extranonce.subscription\"): sent after mining.subscribe; whatever the answer, "
        "the miner then takes mining.set_extranonce and starts using the new extranonce1 "
        "when the next mining.notify arrives. NerdQAxe++ sends it in its handshake "
        "(shufps/qaxe#33). A proxy that moves rigs without extranonce changes should "
        "never need to send one.",
        user_agent="NerdQAxe++/BM1370/v1.0.36",
        extranonce_subscribe=True,
    ),
)


def get_profile(name_or_profile: str | RigProfile) -> RigProfile:
    """Look a profile up by name (a RigProfile is returned as is)."""
    if isinstance(name_or_profile, RigProfile):
        return name_or_profile
    try:
        return PROFILES[name_or_profile]
    except KeyError:
        raise ValueError(f"unknown rig profile {name_or_profile!r}; known: "
                         f"{', '.join(PROFILES)}") from None
