"""The status@SYMBOL channel: a snapshot of the released trading status, then one message per
batch that changes it, through the core, the hub, the protocol and the Redis relay."""

from __future__ import annotations

import json

import attr
import pytest

from engine.commands import SetInstrumentStatus
from engine.enums import InstrumentStatus, Side
from engine.events import InstrumentStatusChanged, LevelChanged
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.channels import STATUS, Channel, ChannelError, ErrorCode, parse_channel
from feeds.core import FeedCore
from feeds.encoding import WireFormat
from feeds.hub import FeedHub
from feeds.protocol import ClientSession, Reply, Subscribe
from feeds.redis_keys import BATCH, VERSION, Envelope, Meta, meta_mapping, parse_meta
from feeds.redis_relay import RelayCore, StoredBook, StoredState
from feeds.status import STATUS_NAMES, StatusFeed

INSTRUMENTS = demo_instruments()
SYMBOLS = frozenset(i.symbol for i in INSTRUMENTS)
BTC = "BTC-PERP"
T0 = 1_700_000_000 * 10**9
HALTED = InstrumentStatus.HALTED
TRADING = InstrumentStatus.TRADING


def changed(seq: int, status: InstrumentStatus, symbol: str = BTC) -> InstrumentStatusChanged:
    return InstrumentStatusChanged(seq, T0 + seq, symbol, status)


def status_messages(batch: list) -> list[dict]:
    return [m.payload for m in batch if m.kind == STATUS]


class Collector:
    """A hub subscriber keeping decoded JSON messages."""

    wire_format = WireFormat.JSON

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.messages.append(json.loads(frame))


def test_channel_name_parses_to_its_canonical_form():
    """status@SYMBOL is a channel of its own; a parameter or an unknown symbol is refused."""
    channel = parse_channel("status@BTC-PERP", SYMBOLS)
    assert channel == Channel(STATUS, BTC, None) and channel.name == "status@BTC-PERP"
    with pytest.raises(ChannelError) as exc:
        parse_channel("status@BTC-PERP@5", SYMBOLS)
    assert exc.value.code is ErrorCode.UNKNOWN_CHANNEL
    with pytest.raises(ChannelError) as exc:
        parse_channel("status@DOGE-PERP", SYMBOLS)
    assert exc.value.code is ErrorCode.UNKNOWN_SYMBOL


def test_status_feed_publishes_each_batch_end_state_that_differs():
    """One update per batch whose final status differs from the published one; none for a
    status set again, or changed and changed back within the batch."""
    feed = StatusFeed(BTC, "status@BTC-PERP", TRADING)
    assert feed.snapshot() == {"channel": "status@BTC-PERP", "type": "status",
                               "symbol": BTC, "status": "trading", "u": 0, "ts": 0}
    assert feed.take_update() is None
    feed.on_change(7, T0, HALTED)
    update = feed.take_update()
    assert update is not None and (update["status"], update["u"], update["ts"]) == (
        "halted", 7, T0)
    assert feed.snapshot() == update and feed.take_update() is None
    feed.on_change(8, T0 + 1, HALTED)  # set again: no change
    assert feed.take_update() is None
    feed.on_change(9, T0 + 2, TRADING)
    feed.on_change(10, T0 + 3, HALTED)  # and back, in one batch
    assert feed.take_update() is None
    assert feed.snapshot()["u"] == 7, "the published status keeps the change that set it"
    assert set(STATUS_NAMES.values()) == {"trading", "halted", "cancel-only", "post-only"}


def test_core_starts_from_each_instruments_status():
    """The initial status is the instrument's own (the composition root passes the current one)."""
    instruments = [attr.evolve(i, status=InstrumentStatus.POST_ONLY) if i.symbol == BTC else i
                   for i in INSTRUMENTS]
    core = FeedCore(instruments)
    snap = core.snapshot_message(Channel(STATUS, BTC, None))
    assert snap is not None and snap.payload["status"] == "post-only"
    other = core.snapshot_message(Channel(STATUS, "ETH-PERP", None))
    assert other is not None and other.payload["status"] == "trading"


def test_core_publishes_a_released_engine_status_change_first_in_its_batch():
    """A SetInstrumentStatus through the engine gives one status message (before the symbol's
    other messages), with the command's seq and ts; the snapshot follows the flushes."""
    engine, core = MatchingEngine(INSTRUMENTS), FeedCore(INSTRUMENTS)
    channel = Channel(STATUS, BTC, None)
    events = engine.process(SetInstrumentStatus(5, T0, BTC, InstrumentStatus.CANCEL_ONLY))
    assert [type(e) for e in events if type(e) is InstrumentStatusChanged]
    core.apply(events)
    before = core.snapshot_message(channel)
    assert before is not None and before.payload["status"] == "trading", "not flushed yet"
    core.apply([LevelChanged(6, BTC, Side.BUY, 600000, 5, 1)])
    batch = core.flush()
    btc = [m for m in batch if m.payload.get("symbol") == BTC]
    assert btc[0].kind == STATUS and btc[0].channel == "status@BTC-PERP"
    assert btc[0].payload == {"channel": "status@BTC-PERP", "type": "status", "symbol": BTC,
                              "status": "cancel-only", "u": 5, "ts": T0}
    assert status_messages(core.flush()) == []
    after = core.snapshot_message(channel)
    assert after is not None and after.payload == btc[0].payload


def test_core_ignores_unknown_symbols_and_keeps_symbols_apart():
    """A change of one symbol publishes on its channel only; unknown symbols are ignored."""
    core = FeedCore(INSTRUMENTS)
    core.apply([changed(3, HALTED, "ETH-PERP"), changed(4, HALTED, "DOGE-PERP")])
    assert [(p["symbol"], p["status"]) for p in status_messages(core.flush())] == [
        ("ETH-PERP", "halted")]


def test_hub_sends_snapshot_on_subscribe_then_each_change():
    """A subscriber gets the current status at once and then every published change."""
    hub = FeedHub(FeedCore(INSTRUMENTS), wall_ns=lambda: 0)
    sub = Collector()
    session = ClientSession(hub.core.symbols)
    actions = session.handle(b'{"op":"subscribe","channels":["status@BTC-PERP"],"id":1}', False)
    assert [type(a) for a in actions] == [Reply, Subscribe]
    assert actions[0].payload == {"event": "subscribed", "channel": "status@BTC-PERP", "id": 1}
    hub.subscribe(sub, actions[1].channel)
    hub.publish([changed(11, HALTED)])
    hub.flush()
    hub.publish([changed(12, TRADING, "ETH-PERP")])  # another symbol's channel
    hub.flush()
    hub.publish([changed(13, TRADING)])
    hub.flush()
    assert [(m["type"], m["status"], m["u"]) for m in sub.messages] == [
        ("status", "trading", 0), ("status", "halted", 11), ("status", "trading", 13)]


def _relay_with(statuses: list[tuple[str, bytes]]) -> RelayCore:
    empty = StoredBook({0: 0, 5: 0, 20: 0}, 0, [], [])
    meta = Meta(VERSION, 1, 4, WireFormat.JSON, tuple(sorted(SYMBOLS)), tuple(statuses))
    relay = RelayCore()
    relay.load(StoredState(meta, {s: empty for s in SYMBOLS}, {}, {}),
               resend=lambda name: name == "status@BTC-PERP")
    return relay


def test_relay_serves_the_stored_status_and_follows_status_messages():
    """A follower's relay snapshots the status stored in the meta hash (resending it after a
    reload) and replaces it with each relayed status message."""
    core = FeedCore(INSTRUMENTS)
    core.apply([changed(3, HALTED)])
    (message,) = [m for m in core.flush() if m.kind == STATUS]
    stored = [(BTC, message.encoded(WireFormat.JSON))]
    relay = _relay_with(stored)
    channel = Channel(STATUS, BTC, None)
    snap = relay.snapshot_message(channel)
    assert snap is not None and snap.payload == message.payload
    assert [m.channel for m in relay.flush()] == ["status@BTC-PERP"], "resent after a reload"
    assert relay.snapshot_message(Channel(STATUS, "ETH-PERP", None)) is None, "none stored"
    core.apply([changed(9, TRADING)])
    update = next(m for m in core.flush() if m.kind == STATUS)
    relay.accept(Envelope(VERSION, 1, 5, BATCH, WireFormat.JSON,
                          [(update.channel, STATUS, update.encoded(WireFormat.JSON))]))
    assert [m.payload for m in relay.flush()] == [update.payload]
    snap = relay.snapshot_message(channel)
    assert snap is not None and snap.payload["status"] == "trading" and snap.payload["u"] == 9


def test_meta_hash_carries_each_symbols_status_message():
    """meta_mapping stores status:SYM fields; parse_meta gives them back, sorted by symbol."""
    fields = meta_mapping(7, 9, WireFormat.JSON, ["BTC-PERP", "ETH-PERP"],
                          [("ETH-PERP", b'{"e":1}'), ("BTC-PERP", b'{"b":1}')])
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    meta = parse_meta(raw)
    assert meta is not None
    assert meta.statuses == (("BTC-PERP", b'{"b":1}'), ("ETH-PERP", b'{"e":1}'))
    assert meta[:5] == (VERSION, 7, 9, WireFormat.JSON, ("BTC-PERP", "ETH-PERP"))
