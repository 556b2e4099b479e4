"""RelayCore (pure) follows envelopes exactly and asks for a resync on any break in the chain."""

from __future__ import annotations

import json
import random

import msgpack
import pytest

from engine.matcher import MatchingEngine
from feeds.channels import ORDERBOOK, Channel
from feeds.core import FeedCore
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat
from feeds.redis_keys import BATCH, SYNC, VERSION, Envelope, Meta, StoredLevel
from feeds.redis_relay import RelayCore, RelayedMessage, ResyncNeeded, StoredBook, StoredState
from tests.feeds.orderflow import OrderFlow
from tests.feeds.redisutil import INSTRUMENTS, T0

FMT = WireFormat.MSGPACK
EPOCH = 99
SYMBOLS = tuple(i.symbol for i in INSTRUMENTS)


def state_of(core: FeedCore, seq: int) -> StoredState:
    """What the sink's sync would store for ``core`` at batch ``seq``."""
    books, tickers = {}, {}
    for sym in SYMBOLS:
        full = core.snapshot_message(Channel(ORDERBOOK, sym, FULL_DEPTH)).payload
        ids = {FULL_DEPTH: full["u"], 5: core.book_snapshot(sym, 5).update_id,
               20: core.book_snapshot(sym, 20).update_id}
        books[sym] = StoredBook(ids, full["ts"], [StoredLevel(*lv) for lv in full["bids"]],
                                [StoredLevel(*lv) for lv in full["asks"]])
        tickers[sym] = core.snapshot_message(Channel("ticker", sym, None)).encoded(FMT)
    return StoredState(Meta(VERSION, EPOCH, seq, FMT, SYMBOLS), books, tickers, {})


class Primary:
    """Engine and feed core producing envelopes from random order flow."""

    def __init__(self, seed: int = 3) -> None:
        self.engine = MatchingEngine(INSTRUMENTS)
        self.core = FeedCore(INSTRUMENTS)
        self.flow = OrderFlow(INSTRUMENTS, seed=seed)
        self.rng = random.Random(seed)
        self.seq = 0
        self.ts = T0

    def envelope(self) -> Envelope:
        for _ in range(self.rng.randint(1, 8)):
            self.ts += 1_000_000
            self.core.apply(self.engine.process(self.flow.next_command(self.ts)))
        self.seq += 1
        items = [(m.channel, m.kind, m.encoded(FMT)) for m in self.core.flush()]
        return Envelope(VERSION, EPOCH, self.seq, BATCH, FMT, items)


def loaded(primary: Primary) -> RelayCore:
    relay = RelayCore()
    relay.load(state_of(primary.core, primary.seq))
    return relay


def assert_same_books(relay: RelayCore, core: FeedCore) -> None:
    for sym in SYMBOLS:
        for depth in (FULL_DEPTH, 5, 20):
            channel = Channel(ORDERBOOK, sym, depth)
            mine = relay.snapshot_message(channel).payload
            theirs = core.snapshot_message(channel).payload
            assert mine == theirs, (sym, depth)


def test_relay_follows_envelopes_to_the_cores_books():
    """Loaded mid-stream, the relay's snapshots equal the core's after every envelope."""
    primary = Primary()
    for _ in range(30):
        primary.envelope()
    relay = loaded(primary)
    assert_same_books(relay, primary.core)
    for _ in range(200):
        env = primary.envelope()
        assert relay.accept(env)
        assert [m.channel for m in relay.flush()] == [c for c, _, _ in env.messages]
        assert_same_books(relay, primary.core)
    assert relay.seq == primary.seq


def test_envelopes_already_in_the_state_are_skipped():
    """Envelopes at or below the state's seq change nothing and relay nothing."""
    primary = Primary()
    early = [primary.envelope() for _ in range(10)]
    relay = loaded(primary)
    for env in early:
        assert relay.accept(env) is False
    assert relay.flush() == []
    assert_same_books(relay, primary.core)


@pytest.mark.parametrize("breakage,reason", [
    ("gap", "gap"), ("epoch", "epoch"), ("sync", "sync"), ("pu", "pu"),
    ("checksum", "checksum"),
])
def test_broken_chain_asks_for_resync(breakage, reason):
    """A gap, another epoch, a SYNC, a wrong pu or a wrong checksum raise ResyncNeeded."""
    primary = Primary(seed=8)
    for _ in range(10):
        primary.envelope()
    relay = loaded(primary)
    env = primary.envelope()
    while not any(k == ORDERBOOK for _, k, _ in env.messages):
        relay.accept(env)
        env = primary.envelope()
    if breakage == "gap":
        env = primary.envelope()
    elif breakage == "epoch":
        env = env._replace(epoch=EPOCH + 1)
    elif breakage == "sync":
        env = env._replace(kind=SYNC, messages=[])
    else:
        items = []
        for channel, kind, data in env.messages:
            if kind == ORDERBOOK and channel.endswith("@full"):
                payload = msgpack.unpackb(data, raw=False)
                key = "pu" if breakage == "pu" else "checksum"
                payload[key] += 1
                data = msgpack.packb(payload, use_bin_type=True)
            items.append((channel, kind, data))
        env = env._replace(messages=items)
    with pytest.raises(ResyncNeeded) as info:
        relay.accept(env)
    assert info.value.reason == reason
    assert relay.flush() == [], "nothing of a broken envelope is relayed"


def test_reload_queues_snapshots_for_subscribed_channels_only():
    """After a reload, exactly the channels named by ``resend`` get a snapshot message."""
    primary = Primary()
    for _ in range(20):
        primary.envelope()
    relay = loaded(primary)
    wanted = {f"orderbook@{SYMBOLS[0]}@5", f"ticker@{SYMBOLS[1]}"}
    relay.load(state_of(primary.core, primary.seq), resend=wanted.__contains__)
    out = relay.flush()
    assert {m.channel for m in out} == wanted
    book = next(m for m in out if m.kind == ORDERBOOK)
    assert book.payload["type"] == "snapshot"


def test_relayed_message_reuses_bytes_and_encodes_the_other_format_the_same():
    """The original bytes are returned as is; the other format encodes the same payload."""
    payload = {"channel": "ticker@X", "type": "ticker", "last": "1.5", "trades": 3}
    data = msgpack.packb(payload, use_bin_type=True)
    msg = RelayedMessage("ticker@X", "ticker", payload, 0, WireFormat.MSGPACK, data)
    assert msg.encoded(WireFormat.MSGPACK) is data
    assert json.loads(msg.encoded(WireFormat.JSON)) == payload
    assert msg.encoded(WireFormat.JSON) is msg.encoded(WireFormat.JSON)
