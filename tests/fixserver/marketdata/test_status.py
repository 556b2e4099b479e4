"""SecurityStatusRequest (e) -> SecurityStatus (f): the released status now, a pushed f for
every released change to subscribers, and BusinessMessageRejects naming the request."""

from __future__ import annotations

import pytest

from engine.commands import SetInstrumentStatus
from engine.enums import InstrumentStatus
from engine.recovery import ProcessedCommand
from fixserver.codec import FixMessage
from fixserver.marketdata.messages import TRADING_STATUS
from fixserver.marketdata.routing import MarketDataRouter
from fixserver.marketdata.status import (
    CONDITIONALLY_REQUIRED_FIELD_MISSING,
    OTHER,
    UNKNOWN_SECURITY,
    StatusRefused,
    StatusRequest,
    StatusUnsubscribe,
    parse_security_status_request,
    security_status_fields,
)
from fixserver.settings import SessionRole
from fixserver.timeutil import format_utc_timestamp
from tests.fixserver.marketdata.harness import Market, RecordingSession, md_request, msg, value

SYMBOLS = {"BTC-PERP", "ETH-PERP"}
HALTED = InstrumentStatus.HALTED
TRADING = InstrumentStatus.TRADING


def status_request(req_id: str, kind: str = "1", symbol: str | None = "BTC-PERP",
                   seq: int = 1) -> FixMessage:
    pairs: list[tuple[int, object]] = [(324, req_id)]
    if symbol is not None:
        pairs.append((55, symbol))
    pairs.append((263, kind))
    return msg("e", *pairs, seq=seq)


def release(market: Market, symbol: str, status: InstrumentStatus) -> int:
    """A SetInstrumentStatus through the engine, released to the application; its ts."""
    market.now += 1_000_000
    command = SetInstrumentStatus(7, market.now, symbol, status)
    market.app.on_released([ProcessedCommand(None, command, market.engine.process(command))])
    return market.now


def tags(fields: list) -> list[int]:
    return [t for t, _ in fields]


def test_parse_reads_request_id_symbol_and_subscription_type():
    """263=0/1 with a listed Symbol are requests; 263=2 needs only the id; the rest refused."""
    parse = parse_security_status_request
    assert parse(status_request("a", "0"), SYMBOLS) == StatusRequest("a", "BTC-PERP", False)
    assert parse(status_request("b", "1"), SYMBOLS) == StatusRequest("b", "BTC-PERP", True)
    assert parse(status_request("c", "2", None), SYMBOLS) == StatusUnsubscribe("c")
    unknown = parse(status_request("d", "1", "DOGE-PERP"), SYMBOLS)
    assert isinstance(unknown, StatusRefused) and unknown.reason == UNKNOWN_SECURITY
    missing = parse(status_request("e", "0", None), SYMBOLS)
    assert isinstance(missing, StatusRefused)
    assert missing.reason == CONDITIONALLY_REQUIRED_FIELD_MISSING
    bad = parse(status_request("f", "7"), SYMBOLS)
    assert isinstance(bad, StatusRefused) and bad.reason == OTHER


def test_status_fields_follow_the_dictionary_order():
    """f: 324, 55, 325, 326, then TransactTime only on a pushed change, then Text."""
    answer = security_status_fields(b"r", b"BTC-PERP", HALTED)
    assert answer == [(324, b"r"), (55, b"BTC-PERP"), (325, b"N"), (326, b"2"),
                      (58, b"halted")]
    pushed = security_status_fields(b"r", b"BTC-PERP", TRADING, 1_700_000_000 * 10**9)
    assert tags(pushed) == [324, 55, 325, 326, 60, 58]
    assert value(pushed, 325) == "Y" and value(pushed, 326) == "17"
    assert value(pushed, 60) == format_utc_timestamp(1_700_000_000 * 10**9).decode()


@pytest.mark.parametrize("status, code, text", [
    (InstrumentStatus.TRADING, "17", "trading"),
    (InstrumentStatus.HALTED, "2", "halted"),
    (InstrumentStatus.CANCEL_ONLY, "18", "cancel-only"),
    (InstrumentStatus.POST_ONLY, "21", "post-only"),
])
def test_every_status_has_its_326_value_and_text(status, code, text):
    """The documented 326 mapping, with the exchange's own name in Text."""
    assert TRADING_STATUS[status] == (code.encode(), text.encode())
    market = Market()
    release(market, "ETH-PERP", status)
    session = RecordingSession()
    market.app.on_message(session, status_request("q", "0", "ETH-PERP"), market.now)
    ((msg_type, fields),) = session.take()
    assert (msg_type, value(fields, 326), value(fields, 58)) == ("f", code, text)


def test_snapshot_request_answers_once_and_subscribes_nothing():
    """263=0: one f (325=N) with the status now; a later change pushes nothing."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, status_request("s", "0"), market.now)
    ((msg_type, fields),) = session.take()
    assert msg_type == "f"
    assert (value(fields, 324), value(fields, 55), value(fields, 325), value(fields, 326)) == (
        "s", "BTC-PERP", "N", "17")
    assert market.app.status_subscriptions.count() == 0
    release(market, "BTC-PERP", HALTED)
    assert session.take() == []


def test_subscription_pushes_every_released_change_and_nothing_else():
    """263=1: f now, then an unsolicited f (325=Y, TransactTime = the change's time) for each
    released change of that symbol only; a status set again pushes nothing; flushed."""
    market = Market()
    session, other = RecordingSession("MD1"), RecordingSession("MD2")
    market.app.on_message(session, status_request("live"), market.now)
    market.app.on_message(other, status_request("eth", "1", "ETH-PERP"), market.now)
    assert [value(f, 325) for _, f in session.take() + other.take()] == ["N", "N"]
    halted_at = release(market, "BTC-PERP", HALTED)
    ((msg_type, fields),) = session.take()
    assert msg_type == "f"
    assert [(t, value(fields, t)) for t in (324, 55, 325, 326, 58)] == [
        (324, "live"), (55, "BTC-PERP"), (325, "Y"), (326, "2"), (58, "halted")]
    assert value(fields, 60) == format_utc_timestamp(halted_at).decode()
    assert market.flushed == [session]
    release(market, "BTC-PERP", HALTED)  # no change
    assert session.take() == []
    release(market, "BTC-PERP", TRADING)
    assert [value(f, 326) for _, f in session.take()] == ["17"]
    assert other.take() == [], "ETH-PERP did not change"
    market.app.on_message(session, msg("x", (320, "q"), (559, 0), (55, "BTC-PERP")), market.now)
    ((_, security_list),) = session.take()
    assert value(security_list, 326) == "17", "the SecurityList tells the same status"


def test_unsubscribe_and_logout_end_subscriptions():
    """263=2 ends a subscription without an answer; logout ends the rest."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, status_request("a"), market.now)
    market.app.on_message(session, status_request("b", "1", "ETH-PERP"), market.now)
    session.take()
    market.app.on_message(session, status_request("a", "2", None), market.now)
    assert session.take() == []
    assert market.app.status_subscriptions.count(session) == 1
    release(market, "BTC-PERP", HALTED)
    assert session.take() == []
    market.app.on_logout(session, market.now)
    assert market.app.status_subscriptions.count() == 0
    release(market, "ETH-PERP", HALTED)
    assert session.take() == []


def test_a_session_found_gone_is_dropped():
    """A subscriber whose connection is gone gets nothing and loses its subscriptions."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, status_request("a"), market.now)
    market.app.on_message(session, md_request("m", "1"), market.now)
    session.take()
    session.connection = None
    release(market, "BTC-PERP", HALTED)
    assert session.take() == []
    assert market.app.status_subscriptions.count() == 0 and market.app.subscription_count() == 0


def reject(session: RecordingSession) -> tuple[str | None, ...]:
    ((msg_type, fields),) = session.take()
    assert msg_type == "j"
    assert tags(fields) == [45, 372, 379, 380, 58]
    return (value(fields, 372), value(fields, 379), value(fields, 380))


def test_refused_requests_get_a_business_reject_naming_the_request():
    """Unknown symbol 380=2, no Symbol 380=5, unknown id to end 380=1, duplicate id 380=0,
    not a market-data session 380=6: each a j with RefMsgType e and 379 = the request id."""
    market = Market()
    session = RecordingSession()
    market.app.on_message(session, status_request("u", "1", "DOGE-PERP"), market.now)
    assert reject(session) == ("e", "u", "2")
    market.app.on_message(session, status_request("n", "0", None), market.now)
    assert reject(session) == ("e", "n", "5")
    market.app.on_message(session, status_request("x", "2", None), market.now)
    assert reject(session) == ("e", "x", "1")
    market.app.on_message(session, status_request("d"), market.now)
    session.take()
    market.app.on_message(session, status_request("d", "1", "ETH-PERP"), market.now)
    assert reject(session) == ("e", "d", "0")
    order_entry = RecordingSession("OE1", role=SessionRole.ORDER_ENTRY)
    market.app.on_message(order_entry, status_request("o"), market.now)
    ((_, fields),) = order_entry.sent
    assert "market-data sessions only" in (value(fields, 58) or "")
    assert reject(order_entry) == ("e", "o", "6")
    assert market.app.status_subscriptions.count() == 1


def test_status_and_market_data_subscriptions_share_the_session_limit():
    """The per-session limit counts V symbol streams and e subscriptions together."""
    market = Market(max_streams_per_session=3)
    session = RecordingSession()
    market.app.on_message(session, md_request("m", "1", 0, ("0",), ("BTC-PERP", "ETH-PERP")),
                          market.now)
    market.app.on_message(session, status_request("a"), market.now)
    session.take()
    market.app.on_message(session, status_request("b", "1", "ETH-PERP"), market.now)
    assert reject(session) == ("e", "b", "0")
    market.app.on_message(session, md_request("m2", "1", 0, ("0",), ("BTC-PERP",)), market.now)
    ((msg_type, fields),) = session.take()
    assert (msg_type, value(fields, 281)) == ("Y", "2")
    market.app.on_message(session, status_request("c", "0"), market.now)
    assert [t for t, _ in session.take()] == ["f"], "a snapshot needs no room"


def test_router_sends_security_status_requests_to_market_data():
    """e goes to the market-data application like V and x."""

    class Other:
        def __init__(self):
            self.messages = []

        def on_message(self, session, message, now_ns):
            self.messages.append(message.msg_type)

    market = Market()
    other = Other()
    router = MarketDataRouter(market.app, other)
    session = RecordingSession()
    router.on_message(session, status_request("r", "0"), market.now)
    assert other.messages == [] and [t for t, _ in session.take()] == ["f"]
