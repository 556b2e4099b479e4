"""The markPrice@SYMBOL channel and the ticker's mark and index: core, hub, protocol, relay."""

from __future__ import annotations

import json

import pytest

from engine.commands import SetIndexPrice, Tick
from engine.events import IndexPriceUpdated, MarkPriceUpdated
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.channels import MARK_PRICE, TICKER, Channel, ChannelError, ErrorCode, parse_channel
from feeds.core import FeedCore
from feeds.encoding import WireFormat
from feeds.hub import FeedHub
from feeds.mark import MarkFeed
from feeds.numbers import UnitFormatter
from feeds.protocol import ClientSession, Reply, Subscribe
from feeds.redis_keys import BATCH, VERSION, Envelope, Meta
from feeds.redis_relay import RelayCore, StoredBook, StoredState

INSTRUMENTS = demo_instruments()
BY_SYMBOL = {i.symbol: i for i in INSTRUMENTS}
SYMBOLS = frozenset(BY_SYMBOL)
BTC, ETH = "BTC-PERP", "ETH-PERP"
T0 = 1_700_000_000 * 10**9
SECOND = 10**9
MARK_BTC = Channel(MARK_PRICE, BTC, None)
#: the funding fields of an instrument without funding (these demo instruments are not
#: margined: the engine's marks carry rate 0 and next funding 0): null, never invented
NO_FUNDING = {"funding_rate": None, "next_funding_ts": None, "last_funding_rate": None,
              "last_funding_ts": None}
TICKER_BTC = Channel(TICKER, BTC, None)


def mark(seq: int, index: int, mark: int, symbol: str = BTC) -> MarkPriceUpdated:
    return MarkPriceUpdated(seq, T0 + seq, symbol, index, mark)


def marks_of(batch: list) -> list[dict]:
    return [m.payload for m in batch if m.kind == MARK_PRICE]


def tickers_of(batch: list) -> list[dict]:
    return [m.payload for m in batch if m.kind == TICKER]


def price(symbol: str, ticks: int) -> str:
    return BY_SYMBOL[symbol].ticks_to_price(ticks)


class Collector:
    """A hub subscriber keeping the frames it got (raw bytes objects) and their decoding."""

    def __init__(self, wire_format: WireFormat = WireFormat.JSON) -> None:
        self.wire_format = wire_format
        self.frames: list[bytes] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def messages(self) -> list[dict]:
        return [json.loads(f) for f in self.frames]


def test_channel_name_parses_and_bad_names_get_the_usual_errors():
    """markPrice@SYMBOL is canonical as given; an unknown symbol is UNKNOWN_SYMBOL, a parameter
    or another spelling of the kind UNKNOWN_CHANNEL, as for the other channels."""
    channel = parse_channel("markPrice@BTC-PERP", SYMBOLS)
    assert channel == MARK_BTC and channel.name == "markPrice@BTC-PERP"
    for name, code in (("markPrice@DOGE-PERP", ErrorCode.UNKNOWN_SYMBOL),
                       ("markPrice@", ErrorCode.UNKNOWN_SYMBOL),
                       ("markPrice@BTC-PERP@1s", ErrorCode.UNKNOWN_CHANNEL),
                       ("markprice@BTC-PERP", ErrorCode.UNKNOWN_CHANNEL),
                       ("markPrice", ErrorCode.UNKNOWN_CHANNEL)):
        with pytest.raises(ChannelError) as exc:
            parse_channel(name, SYMBOLS)
        assert exc.value.code is code, name
    with pytest.raises(ChannelError) as exc:
        parse_channel("nope@BTC-PERP", SYMBOLS)
    assert "markPrice@SYMBOL" in exc.value.message, "the error lists the channel kinds"


def test_protocol_answers_a_bad_symbol_with_an_error_and_keeps_the_good_channel():
    """A subscribe naming a bad and a good markPrice channel: error 5 for the bad one (with the
    channel), ack and subscription for the good one; the session keeps working."""
    session = ClientSession(SYMBOLS)
    actions = session.handle(
        b'{"op":"subscribe","channels":["markPrice@XBT","markPrice@BTC-PERP"],"id":7}', False)
    assert [type(a) for a in actions] == [Reply, Reply, Subscribe]
    assert actions[0].payload == {"event": "error", "code": 5, "message": "unknown symbol 'XBT'",
                                  "id": 7, "channel": "markPrice@XBT"}
    assert actions[1].payload == {"event": "subscribed", "channel": "markPrice@BTC-PERP",
                                  "id": 7}
    assert actions[2] == Subscribe(MARK_BTC)
    (again,) = session.handle(b'{"op":"subscribe","channels":["markPrice@BTC-PERP"]}', False)
    assert again.payload["code"] == ErrorCode.ALREADY_SUBSCRIBED


def test_mark_feed_publishes_each_mark_event_once_and_never_an_index_alone():
    """Snapshot with nulls before any mark; a mark event publishes once with its own index, seq
    and ts; an index alone changes the ticker's fields but publishes nothing on the channel."""
    feed = MarkFeed(BTC, "markPrice@BTC-PERP", UnitFormatter("0.1"))
    assert feed.snapshot() == {"channel": "markPrice@BTC-PERP", "type": "markPrice",
                               "symbol": BTC, "index": None, "mark": None, "u": 0, "ts": 0,
                               **NO_FUNDING}
    assert feed.take_update() is None and feed.ticker_fields() == (None, None)
    assert feed.on_index(600_100) is True and feed.on_index(600_100) is False
    assert feed.take_update() is None, "an index alone is not a mark event"
    assert feed.ticker_fields() == (None, "60010.0")
    assert feed.on_mark(9, T0, 600_100, 600_050) is True
    update = feed.take_update()
    assert update == {"channel": "markPrice@BTC-PERP", "type": "markPrice", "symbol": BTC,
                      "index": "60010.0", "mark": "60005.0", "u": 9, "ts": T0, **NO_FUNDING}
    assert feed.take_update() is None and feed.snapshot() == update
    assert feed.on_index(600_300) is True
    assert feed.ticker_fields() == ("60005.0", "60030.0")
    assert feed.snapshot()["index"] == "60010.0", "the channel keeps the mark's own index"


def test_core_publishes_engine_marks_and_index_with_the_instruments_price_strings():
    """SetIndexPrice then Tick through the engine: the index alone updates the ticker; the
    mark gives one markPrice message (prices as Instrument.ticks_to_price renders them, the
    tick's seq and ts) and a ticker carrying both; the snapshot follows the flushes."""
    engine, core = MatchingEngine(INSTRUMENTS), FeedCore(INSTRUMENTS)
    core.apply(engine.process(SetIndexPrice(1, T0, BTC, 600_123)))
    batch = core.flush()
    assert marks_of(batch) == []
    (ticker,) = tickers_of(batch)
    assert (ticker["index"], ticker["mark"]) == (price(BTC, 600_123), None)
    events = engine.process(Tick(2, T0 + 5))
    assert [type(e) for e in events] == [MarkPriceUpdated]
    core.apply(events)
    pending = core.snapshot_message(MARK_BTC)
    assert pending is not None and pending.payload["mark"] is None, "not flushed yet"
    batch = core.flush()
    (update,) = marks_of(batch)
    assert update == {"channel": "markPrice@BTC-PERP", "type": "markPrice", "symbol": BTC,
                      "index": "60012.3", "mark": "60012.3", "u": 2, "ts": T0 + 5, **NO_FUNDING}
    assert update["mark"] == price(BTC, events[0].mark)
    (ticker,) = tickers_of(batch)
    assert (ticker["mark"], ticker["index"]) == ("60012.3", "60012.3")
    snap = core.snapshot_message(MARK_BTC)
    assert snap is not None and snap.payload == update
    assert snap is core.snapshot_message(MARK_BTC), "one message object (and encoding) shared"
    eth = core.snapshot_message(Channel(MARK_PRICE, ETH, None))
    assert eth is not None and (eth.payload["index"], eth.payload["mark"]) == (None, None)
    ticker_snap = core.snapshot_message(TICKER_BTC)
    assert ticker_snap is not None and ticker_snap.payload["mark"] == "60012.3"
    # the next index moves the ticker's index at once; the mark channel waits for the tick
    core.apply(engine.process(SetIndexPrice(3, T0 + 10, BTC, 600_500)))
    batch = core.flush()
    assert marks_of(batch) == []
    assert [(t["mark"], t["index"]) for t in tickers_of(batch)] == [("60012.3", "60050.0")]
    core.apply(engine.process(Tick(4, T0 + 5 + SECOND)))  # one mark interval later
    (moved,) = marks_of(core.flush())
    assert moved["index"] == "60050.0" and moved["u"] == 4
    assert float(moved["mark"]) > 60012.3, "the mark follows the index up"


def test_mark_channel_is_bounded_by_mark_events():
    """Ticks that recompute no mark publish nothing; one message per mark event, and several
    events of one symbol within one batch publish only the latest (one message per channel)."""
    engine, core = MatchingEngine(INSTRUMENTS), FeedCore(INSTRUMENTS)
    core.apply(engine.process(SetIndexPrice(1, T0, BTC, 600_000)))
    seq, sent, events = 1, 0, 0
    for i in range(1, 40):  # a tick every 100 ms: a mark at most every 1,000 ms
        seq += 1
        evs = engine.process(Tick(seq, T0 + i * SECOND // 10))
        events += sum(type(e) is MarkPriceUpdated for e in evs)
        if i % 7 == 0:
            seq += 1
            evs += engine.process(SetIndexPrice(seq, T0 + i * SECOND // 10, BTC, 600_000 + i))
        core.apply(evs)
        sent += len(marks_of(core.flush()))
    assert 1 <= events <= 4 and sent == events
    core.apply([mark(100, 600_010, 600_020), mark(101, 600_011, 600_021),
                mark(102, 3000, 3001, ETH), mark(103, 1, 1, "DOGE-PERP")])
    batch = marks_of(core.flush())
    assert [(p["symbol"], p["u"], p["mark"]) for p in batch] == [
        (BTC, 101, "60002.1"), (ETH, 102, "30.01")]
    assert marks_of(core.flush()) == []


def test_seed_mark_is_state_not_news():
    """A recovered engine's index and mark seed the snapshot and the ticker (u and ts 0) and
    publish nothing by themselves; the next mark event publishes as usual."""
    core = FeedCore(INSTRUMENTS)
    first = core.snapshot_message(MARK_BTC)
    core.seed_mark(BTC, 600_100, 600_090)
    snap = core.snapshot_message(MARK_BTC)
    assert snap is not None and snap is not first
    assert snap.payload == {"channel": "markPrice@BTC-PERP", "type": "markPrice", "symbol": BTC,
                            "index": "60010.0", "mark": "60009.0", "u": 0, "ts": 0, **NO_FUNDING}
    ticker = core.snapshot_message(TICKER_BTC)
    assert ticker is not None and (ticker.payload["mark"], ticker.payload["index"]) == (
        "60009.0", "60010.0")
    assert marks_of(core.flush()) == []
    core.seed_mark(ETH, 300_000, 0)  # an index but no mark yet
    eth = core.snapshot_message(Channel(MARK_PRICE, ETH, None))
    assert eth is not None and (eth.payload["index"], eth.payload["mark"]) == (None, None)
    core.apply([mark(5, 600_200, 600_150)])
    assert [p["mark"] for p in marks_of(core.flush())] == ["60015.0"]


def test_hub_sends_snapshot_then_each_mark_encoded_once_for_all_subscribers():
    """Subscribers get the snapshot at once, then every published mark; all subscribers of a
    format get the very same bytes object (encoded once per format, not per subscriber)."""
    hub = FeedHub(FeedCore(INSTRUMENTS), wall_ns=lambda: 0)
    subs = [Collector() for _ in range(3)]
    packed = Collector(WireFormat.MSGPACK)
    for sub in [*subs, packed]:
        hub.subscribe(sub, MARK_BTC)
    hub.publish([mark(3, 600_000, 600_010)])
    hub.flush()
    hub.publish([mark(4, 3000, 3001, ETH)])  # another symbol's channel
    hub.flush()
    hub.publish([IndexPriceUpdated(5, T0 + 5, BTC, 600_500)])  # ticker news only
    hub.flush()
    hub.publish([mark(6, 600_500, 600_020)])
    hub.flush()
    assert [(m["u"], m["mark"]) for m in subs[0].messages] == [
        (0, None), (3, "60001.0"), (6, "60002.0")]
    for i in range(1, 3):
        assert all(a is b for a, b in zip(subs[0].frames, subs[i].frames))
    assert len(packed.frames) == 3 and packed.frames[1] is not subs[0].frames[1]


def _relay(marks: dict[str, bytes], resend: str = "") -> RelayCore:
    empty = StoredBook({0: 0, 5: 0, 20: 0}, 0, [], [])
    meta = Meta(VERSION, 1, 4, WireFormat.JSON, tuple(sorted(SYMBOLS)))
    relay = RelayCore()
    relay.load(StoredState(meta, {s: empty for s in SYMBOLS}, {}, {}, marks),
               resend=lambda name: name == resend)
    return relay


def test_relay_serves_the_stored_mark_and_follows_mark_messages():
    """A follower's relay snapshots the stored markPrice message (resent after a reload to
    channels with subscribers) and replaces it with each relayed one; none stored: none."""
    core = FeedCore(INSTRUMENTS)
    core.apply([mark(3, 600_000, 600_010)])
    (message,) = [m for m in core.flush() if m.kind == MARK_PRICE]
    relay = _relay({BTC: message.encoded(WireFormat.JSON)}, resend="markPrice@BTC-PERP")
    snap = relay.snapshot_message(MARK_BTC)
    assert snap is not None and snap.payload == message.payload
    assert [m.channel for m in relay.flush()] == ["markPrice@BTC-PERP"], "resent after reload"
    assert relay.snapshot_message(Channel(MARK_PRICE, ETH, None)) is None
    assert _relay({}).snapshot_message(MARK_BTC) is None, "a sink without marks stored none"
    core.apply([mark(9, 600_100, 600_090)])
    (update,) = [m for m in core.flush() if m.kind == MARK_PRICE]
    data = update.encoded(WireFormat.JSON)
    assert relay.accept(Envelope(VERSION, 1, 5, BATCH, WireFormat.JSON,
                                 [(update.channel, MARK_PRICE, data)]))
    (relayed,) = relay.flush()
    assert relayed.payload == update.payload and relayed.encoded(WireFormat.JSON) is data
    snap = relay.snapshot_message(MARK_BTC)
    assert snap is not None and (snap.payload["u"], snap.payload["mark"]) == (9, "60009.0")
