"""MarketDataApplication on a real engine and feed hub: snapshots, incremental refreshes that
rebuild the engine's book exactly, the shared update ids, rejects, subscription life, and the
security list."""

from __future__ import annotations

import pytest

from engine.commands import NewOrder, SetInstrumentStatus
from engine.enums import InstrumentStatus, Side
from engine.recovery import ProcessedCommand
from fixserver.marketdata.routing import MarketDataRouter
from fixserver.settings import SessionRole
from tests.fixserver.marketdata.harness import (
    ClientBook,
    Market,
    RecordingSession,
    engine_levels,
    entries,
    md_request,
    msg,
    value,
)

SYMBOLS = ("BTC-PERP", "ETH-PERP")


def subscribe(market: Market, session: RecordingSession, request) -> ClientBook:
    """Send ``request``; a ClientBook holding the snapshot(s) it was answered with."""
    market.app.on_message(session, request, market.now)
    book = ClientBook()
    for msg_type, fields in session.take():
        assert msg_type == "W", (msg_type, fields)
        book.apply(msg_type, fields)
    return book


@pytest.mark.parametrize("depth", [0, 5, 20])
def test_snapshot_plus_updates_rebuilds_the_engine_book(depth):
    """W then every X gives, strictly applied, the engine's L2 book at each depth."""
    market = Market(seed=depth + 1)
    market.run(60)
    session = RecordingSession()
    book = subscribe(market, session, md_request("r1", "1", depth, ("0", "1"), SYMBOLS))
    for _ in range(10):
        market.run(150, per_batch=5)
        for msg_type, fields in session.take():
            assert msg_type == "X"
            assert value(fields, 262) == "r1"
            book.apply(msg_type, fields)
        for symbol in SYMBOLS:
            assert book.levels(symbol) == engine_levels(market.engine, symbol, depth)


def test_snapshot_only_answers_once_and_subscribes_nothing():
    """263=0: one W per symbol with the book (to the depth asked), then no X."""
    market = Market(seed=4)
    market.run(200)
    session = RecordingSession()
    book = subscribe(market, session, md_request("s1", "0", 5, ("0", "1"), SYMBOLS))
    for symbol in SYMBOLS:
        assert book.levels(symbol) == engine_levels(market.engine, symbol, 5)
    assert market.app.subscription_count() == 0
    market.run(100)
    assert session.take() == []


def test_update_ids_are_the_feed_update_ids():
    """W and X entries carry RptSeq = the WebSocket feed's update id (u) of the same batch;
    trades carry their command seq."""
    market = Market(seed=5)
    market.run(100)
    session = RecordingSession()
    market.app.on_message(session, md_request("r1", "1", 0, ("0", "1", "2")), market.now)
    (_, w), = session.take()
    snap = market.hub.book_snapshot("BTC-PERP")
    assert {int(e[83]) for e in entries(w)} == {snap.update_id}
    market.run(300, per_batch=10)
    sent = iter(session.take())
    trades_seen = 0
    for batch in market.batches[-31:]:
        by_channel = {m.channel: m.payload for m in batch}
        book = by_channel.get("orderbook@BTC-PERP@full")
        trades = by_channel.get("trades@BTC-PERP")
        if book is None and trades is None:
            continue
        msg_type, fields = next(sent)
        assert msg_type == "X"
        got = entries(fields)
        if trades is not None:
            assert [(int(e[83]), e[278], e[270], e[271]) for e in got if e[269] == "2"] == [
                (t["u"], str(t["id"]), t["price"], t["qty"]) for t in trades["data"]]
            trades_seen += len(trades["data"])
        levels = {int(e[83]) for e in got if e[269] != "2"}
        assert levels == ({book["u"]} if book is not None and levels else set())
    assert trades_seen > 0
    assert next(sent, None) is None


def test_entry_types_filter_what_is_sent():
    """Bids only: no offer or trade entries; trades only: no book entries and an empty W."""
    market = Market(seed=6)
    market.run(50)
    bids_only, trades_only = RecordingSession("A"), RecordingSession("B")
    subscribe(market, bids_only, md_request("b", "1", 0, ("0",)))
    market.app.on_message(trades_only, md_request("t", "1", 0, ("2",)), market.now)
    (msg_type, w), = trades_only.take()
    assert msg_type == "W" and value(w, 268) == "0"
    market.run(400)
    bid_entries = [e for _, f in bids_only.take() for e in entries(f)]
    trade_entries = [e for _, f in trades_only.take() for e in entries(f)]
    assert bid_entries and {e[269] for e in bid_entries} == {"0"}
    assert trade_entries and {e[269] for e in trade_entries} == {"2"}


def test_one_body_per_shape_shared_by_subscribers():
    """Subscribers with the same depth and entry types get the same encoded group object;
    only the MDReqID differs."""
    market = Market(seed=7)
    market.run(50)
    a, b = RecordingSession("A"), RecordingSession("B")
    subscribe(market, a, md_request("ra", "1", 0, ("0", "1", "2")))
    subscribe(market, b, md_request("rb", "1", 0, ("2", "1", "0")))
    market.run(200)
    raw_a, raw_b = a.raw_fields, b.raw_fields
    sent_a, sent_b = a.take(), b.take()
    assert len(sent_a) == len(sent_b) > 0
    for (_, fa), (_, fb) in zip(sent_a, sent_b):
        assert (fa[0], fb[0]) == ((262, b"ra"), (262, b"rb"))
        assert fa[1:] == fb[1:]
    for fa, fb in zip(raw_a, raw_b):
        assert len(fa) == len(fb) == 2
        assert fa[1] is fb[1]  # one encoded group, shared


def test_flush_is_called_once_per_session_written_to():
    """Sending from a batch (outside a socket pump) flushes each touched session once."""
    market = Market(seed=8)
    a, idle = RecordingSession("A"), RecordingSession("I")
    subscribe(market, a, md_request("ra", "1", 0, ("0", "1", "2"), SYMBOLS))
    subscribe(market, idle, md_request("ri", "1", 0, ("0",), ("ETH-PERP",)))
    market.process(NewOrder(1, market.now, "acct", "BTC-PERP", Side.BUY, 3, price=599_000))
    market.process(NewOrder(2, market.now, "acct", "BTC-PERP", Side.SELL, 3, price=601_000))
    market.flush()
    assert market.flushed == [a]
    assert [value(f, 268) for _, f in a.take()] == ["2"]
    assert idle.take() == []


@pytest.mark.parametrize(
    ("request_msg", "role", "reason"),
    [
        (md_request("r", "1", 0, ("0",), ("NOPE",)), SessionRole.MARKET_DATA, "0"),
        (md_request("r", "1", 7), SessionRole.MARKET_DATA, "5"),
        (md_request("r", "1", 0, ("0",), ("BTC-PERP",), (265, 0)), SessionRole.MARKET_DATA, "6"),
        (md_request("r", "1", 0, ("0",), ("BTC-PERP",), (266, "N")), SessionRole.MARKET_DATA,
         "7"),
        (md_request("r", "1", 0, ("0", "B")), SessionRole.MARKET_DATA, "8"),
        (md_request("r", "1"), SessionRole.ORDER_ENTRY, "3"),
        (md_request("r", "0"), SessionRole.DROP_COPY, "3"),
    ],
    ids=["symbol", "depth", "update-type", "aggregated", "entry-type", "order-entry",
         "drop-copy"],
)
def test_refused_requests_get_a_reject_with_the_reason(request_msg, role, reason):
    """A request the exchange does not serve is answered with Y carrying MDReqID, reason, text."""
    market = Market()
    session = RecordingSession(role=role)
    market.app.on_message(session, request_msg, market.now)
    (msg_type, fields), = session.take()
    assert msg_type == "Y"
    assert (value(fields, 262), value(fields, 281)) == ("r", reason)
    assert value(fields, 58)
    assert market.app.subscription_count() == 0


def test_duplicate_md_req_id_and_stream_limit():
    """An MDReqID in use is refused (281=1); past the per-session stream limit 281=2."""
    market = Market(max_streams_per_session=3)
    session = RecordingSession()
    subscribe(market, session, md_request("r1", "1", 0, ("0",), SYMBOLS))
    market.app.on_message(session, md_request("r1", "1", 0, ("1",)), market.now)
    market.app.on_message(session, md_request("r2", "1", 0, ("1",), SYMBOLS), market.now)
    assert [(t, value(f, 262), value(f, 281)) for t, f in session.take()] == [
        ("Y", "r1", "1"), ("Y", "r2", "2")]
    subscribe(market, session, md_request("r3", "1", 0, ("1",)))
    assert market.app.subscription_count(session) == 3


def test_unsubscribe_stops_updates_and_unknown_ids_are_rejected():
    """263=2 ends the subscription silently; an MDReqID with no subscription gets Y (no 281)."""
    market = Market(seed=9)
    session = RecordingSession()
    subscribe(market, session, md_request("r1", "1", 5, ("0", "1", "2"), SYMBOLS))
    market.run(50)
    assert session.take()
    market.app.on_message(session, md_request("r1", "2"), market.now)
    assert session.take() == []
    market.run(100)
    assert session.take() == []
    market.app.on_message(session, md_request("r1", "2"), market.now)
    (msg_type, fields), = session.take()
    assert (msg_type, value(fields, 262), value(fields, 281)) == ("Y", "r1", None)
    assert market.app.subscription_count() == 0
    assert market.app._channels == {}


def test_logout_and_lost_connection_end_subscriptions():
    """on_logout drops a session's streams; a batch finding a session logged off drops them."""
    market = Market(seed=10)
    a, b = RecordingSession("A"), RecordingSession("B")
    subscribe(market, a, md_request("ra", "1", 0, ("0", "1", "2"), SYMBOLS))
    subscribe(market, b, md_request("rb", "1", 20, ("0", "1", "2"), SYMBOLS))
    market.app.on_logout(a, market.now)
    assert market.app.subscription_count(a) == 0
    b.connection = None
    market.run(100)
    assert a.take() == [] and b.take() == []
    assert market.app.subscription_count() == 0
    assert market.app._channels == {}


def test_a_late_subscriber_joins_existing_channel_consistently():
    """A second subscriber to a channel already followed gets a W that its X chain onto."""
    market = Market(seed=11)
    first = RecordingSession("A")
    book_a = subscribe(market, first, md_request("ra", "1", 0, ("0", "1")))
    market.run(300)
    second = RecordingSession("B")
    book_b = subscribe(market, second, md_request("rb", "1", 0, ("0", "1")))
    market.run(300)
    for session, book in ((first, book_a), (second, book_b)):
        for msg_type, fields in session.take():
            book.apply(msg_type, fields)
        assert book.levels("BTC-PERP") == engine_levels(market.engine, "BTC-PERP")


def test_reseeded_book_resends_a_snapshot():
    """If the hub's book is reseeded (updates no longer chain on), subscribers get a fresh W."""
    market = Market(seed=12)
    market.run(100)
    session = RecordingSession()
    book = subscribe(market, session, md_request("r", "1", 0, ("0", "1")))
    market.hub.core.seed_book("BTC-PERP", [(590_000, 5, 1)], [(610_000, 7, 2)], 10_000)
    market.process(NewOrder(10_001, market.now, "acct", "BTC-PERP", Side.BUY, 1, price=589_000))
    market.flush()
    (msg_type, fields), = session.take()
    assert msg_type == "W"
    book.apply(msg_type, fields)
    assert book.levels("BTC-PERP") == [[("59000.0", "0.005", 1), ("58900.0", "0.001", 1)],
                                       [("61000.0", "0.007", 2)]]
    assert {e[83] for e in entries(fields)} == {"10001"}


def test_security_list_carries_tick_lot_multiplier_limits_and_status():
    """y lists every instrument as a FUT with 969 tick, 561 lot, 231, 562/1140 and 326."""
    market = Market()
    session = RecordingSession(role=SessionRole.ORDER_ENTRY)
    market.app.on_message(session, msg("x", (320, "q1"), (559, 4)), market.now)
    (msg_type, fields), = session.take()
    assert msg_type == "y"
    assert (value(fields, 320), value(fields, 560), value(fields, 893)) == ("q1", "0", "Y")
    got = {e[55]: e for e in entries(fields, 146)}
    assert set(got) == set(SYMBOLS)
    btc = got["BTC-PERP"]
    assert (btc[167], btc[969], btc[561], btc[231], btc[562], btc[1140], btc[326]) == (
        "FUT", "0.1", "0.001", "1", "0.001", "1000.000", "17")
    assert value(fields, 393) == "2"


def test_security_list_follows_released_status_changes():
    """A released SetInstrumentStatus shows in the next SecurityList (326=2 halted)."""
    market = Market()
    command = SetInstrumentStatus(5, market.now, "ETH-PERP", InstrumentStatus.HALTED)
    market.app.on_released([ProcessedCommand(None, command, market.engine.process(command))])
    session = RecordingSession()
    market.app.on_message(session, msg("x", (320, "q"), (559, 0), (55, "ETH-PERP")), market.now)
    (_, fields), = session.take()
    (eth,) = entries(fields, 146)
    assert (eth[55], eth[326], eth[58]) == ("ETH-PERP", "2", "halted")


def test_security_list_refusals_have_no_entries():
    """Unknown symbol: 560=2; unsupported request type: 560=1; neither carries a list."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, msg("x", (320, "a"), (559, 0), (55, "NOPE")), market.now)
    market.app.on_message(session, msg("x", (320, "b"), (559, 2)), market.now)
    got = session.take()
    assert [(t, value(f, 320), value(f, 560), value(f, 146)) for t, f in got] == [
        ("y", "a", "2", None), ("y", "b", "1", None)]


def test_other_message_types_get_a_business_reject():
    """A message type the application does not serve is a BusinessMessageReject 380=3."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, msg("D", (11, "c")), market.now)
    (msg_type, fields), = session.take()
    assert (msg_type, value(fields, 380), value(fields, 372)) == ("j", "3", "D")


def test_router_sends_market_data_messages_to_the_market_data_application():
    """V and x go to market data, other types to the other application; logout reaches both;
    other attributes are the other application's."""

    class Other:
        host_class = "custom host"

        def __init__(self):
            self.messages, self.logouts = [], []

        def on_message(self, session, message, now_ns):
            self.messages.append(message.msg_type)

        def on_logout(self, session, now_ns):
            self.logouts.append(session)

    market = Market()
    other = Other()
    router = MarketDataRouter(market.app, other)
    session = RecordingSession()
    router.on_message(session, msg("D", (11, "c")), market.now)
    router.on_message(session, md_request("r", "1"), market.now)
    router.on_message(session, msg("x", (320, "q"), (559, 4)), market.now)
    assert other.messages == [b"D"]
    assert [t for t, _ in session.take()] == ["W", "y"]
    router.on_logout(session, market.now)
    assert other.logouts == [session] and market.app.subscription_count() == 0
    assert router.host_class == "custom host"
    with pytest.raises(AttributeError):
        router.no_such_thing  # noqa: B018
