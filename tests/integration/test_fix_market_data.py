"""A QuickFIX initiator (validating every message with the exchange dictionary) on a
market-data session: security list, snapshots, snapshot plus updates rebuilt into the
engine's book, rejects with their reasons, unsubscribe; QuickFIX rejects nothing."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from engine.matcher import MatchingEngine
from feeds.core import FeedCore
from feeds.hub import FeedHub
from fixserver.application import UnsupportedMessageApplication
from fixserver.config import parse_config
from fixserver.marketdata import build_market_data_application
from fixserver.marketdata.routing import MarketDataRouter
from fixserver.server import FixServer
from tests.feeds.orderflow import OrderFlow
from tests.fixserver.marketdata.harness import (
    INSTRUMENTS,
    ClientBook,
    engine_levels,
    entries,
    market_data_dictionary,
)

from .conftest import server_config_text, wait_until
from .qf_client import SOH, Event

fix = pytest.importorskip("quickfix")
fix44 = pytest.importorskip("quickfix44")

pytestmark = pytest.mark.integration


def field_list(event: Event) -> list[tuple[int, str]]:
    """The raw message's fields in wire order."""
    out = []
    for part in event.raw.split(SOH):
        tag, sep, value = part.partition("=")
        if sep and tag.isdigit():
            out.append((int(tag), value))
    return out


def md_request(req_id: str, kind: str, depth: int, types: str, symbols: list[str],
               **extra: str) -> fix.Message:
    message = fix44.MarketDataRequest()
    message.setField(fix.MDReqID(req_id))
    message.setField(fix.SubscriptionRequestType(kind))
    message.setField(fix.MarketDepth(depth))
    if "update_type" in extra:
        message.setField(fix.MDUpdateType(int(extra["update_type"])))
    for entry_type in types:
        group = fix44.MarketDataRequest.NoMDEntryTypes()
        group.setField(fix.MDEntryType(entry_type))
        message.addGroup(group)
    for symbol in symbols:
        group = fix44.MarketDataRequest.NoRelatedSym()
        group.setField(fix.Symbol(symbol))
        message.addGroup(group)
    return message


class Exchange:
    """An in-process engine and feed hub behind a FixServer whose application is market data
    (plus reject-all for other messages); order flow is driven on the reactor thread."""

    def __init__(self, tmp_path) -> None:
        text = server_config_text(0, str(tmp_path / "store"), "SessionRole=market-data")
        self.engine = MatchingEngine(INSTRUMENTS)
        self.hub = FeedHub(FeedCore(INSTRUMENTS))
        self.flow = OrderFlow(INSTRUMENTS, seed=3)
        self.server = FixServer(parse_config(text, base_dir=str(tmp_path)), reactor,
                                application_factory=self._application)
        self.server.start()

    def _application(self, server: FixServer) -> MarketDataRouter:
        self.md = build_market_data_application(
            INSTRUMENTS, self.hub, now_ns=server.now_ns, flush=lambda s: server.host.flush(s))
        return MarketDataRouter(self.md, UnsupportedMessageApplication())

    def trade(self, commands: int, per_batch: int = 6) -> None:
        """Random order flow through the engine, a feed batch every ``per_batch`` commands."""
        for i, command in enumerate(self.flow.commands(commands, self.server.now_ns(), 1000)):
            self.hub.publish(self.engine.process(command))
            if (i + 1) % per_batch == 0:
                self.hub.flush()
        self.hub.flush()

    @property
    def last_sent_seq(self) -> int:
        return self.server.sessions[0].store.next_sender_seq() - 1


@pytest_twisted.inlineCallbacks
def test_quickfix_market_data_session(tmp_path, quickfix_client):
    """x -> y; V snapshot -> W; V snapshot+updates -> W then X that rebuild the engine book;
    bad requests -> Y with reasons; unsubscribe; nothing rejected by QuickFIX."""
    exchange = Exchange(tmp_path)
    try:
        yield _run_session(exchange, tmp_path, quickfix_client)
    finally:
        yield exchange.server.stop()


@pytest_twisted.inlineCallbacks
def _run_session(exchange: Exchange, tmp_path, quickfix_client):
    exchange.trade(120)
    dictionary = market_data_dictionary(str(tmp_path))
    client = quickfix_client(exchange.server.fix_port.getHost().port, heartbeat=5,
                             extra={"DataDictionary": dictionary})
    client.start()
    yield wait_until(lambda: client.find("logon"), "the QuickFIX logon")

    def send(message: fix.Message) -> None:
        fix.Session.sendToTarget(message, client._app.session_id)

    def answer(msg_type: str, tag: int, value: str) -> Event:
        return client.find("from_app", lambda e: e.msg_type == msg_type
                           and e.fields.get(tag) == value)

    # SecurityList
    request = fix44.SecurityListRequest()
    request.setField(fix.SecurityReqID("sl1"))
    request.setField(fix.SecurityListRequestType(4))
    send(request)
    security_list = yield wait_until(lambda: answer("y", 320, "sl1"), "the SecurityList")
    listed = {e[55]: e for e in entries(field_list(security_list), 146)}
    assert set(listed) == {"BTC-PERP", "ETH-PERP"}
    assert (listed["ETH-PERP"][969], listed["ETH-PERP"][561], listed["ETH-PERP"][326]) == (
        "0.01", "0.01", "17")

    # Snapshot only
    send(md_request("snap", "0", 5, "01", ["ETH-PERP"]))
    snapshot = yield wait_until(lambda: answer("W", 262, "snap"), "the snapshot W")
    book = ClientBook()
    book.apply("W", field_list(snapshot))
    assert book.levels("ETH-PERP") == engine_levels(exchange.engine, "ETH-PERP", 5)

    # Bad requests, each with its reason
    send(md_request("bad-depth", "1", 7, "01", ["BTC-PERP"]))
    send(md_request("bad-symbol", "1", 0, "01", ["DOGE-PERP"]))
    send(md_request("bad-type", "1", 0, "0B", ["BTC-PERP"]))
    send(md_request("bad-update", "1", 0, "0", ["BTC-PERP"], update_type="0"))
    for req_id, reason in (("bad-depth", "5"), ("bad-symbol", "0"), ("bad-type", "8"),
                           ("bad-update", "6")):
        reject = yield wait_until(lambda r=req_id: answer("Y", 262, r), f"Y for {req_id}")
        assert reject.fields[281] == reason

    # Snapshot plus updates on both symbols, then live flow
    send(md_request("live", "1", 0, "012", ["BTC-PERP", "ETH-PERP"]))
    def live_snapshots() -> int:
        client.poll()
        return sum(1 for e in client.history if e.kind == "from_app" and e.msg_type == "W"
                   and e.fields.get(262) == "live")

    yield wait_until(lambda: live_snapshots() == 2, "two W for the live subscription")
    send(md_request("live", "1", 0, "0", ["BTC-PERP"]))
    duplicate = yield wait_until(lambda: answer("Y", 262, "live"), "Y for the duplicate")
    assert duplicate.fields[281] == "1"
    for _ in range(5):
        exchange.trade(200)
        yield wait_until(lambda: client.find("from_app", lambda e: e.seq == exchange.last_sent_seq),
                         "the last X of the round")
    live = ClientBook()
    for event in client.history:
        if event.kind == "from_app" and event.fields.get(262) == "live" and event.msg_type in "WX":
            live.apply(event.msg_type, field_list(event))
    for symbol in ("BTC-PERP", "ETH-PERP"):
        assert live.levels(symbol) == engine_levels(exchange.engine, symbol)
    assert live.trades, "no trade entries arrived"

    # Unsubscribe: no more X
    send(md_request("live", "2", 0, "0", ["BTC-PERP"]))
    yield wait_until(lambda: exchange.md.subscription_count() == 0, "the unsubscribe")
    before = exchange.last_sent_seq
    exchange.trade(100)
    assert exchange.last_sent_seq == before

    yield threads.deferToThread(client.stop)
    assert client.rejects() == [], f"QuickFIX sent or received a Reject: {client.rejects()}"
    assert client.logged_rejects() == [], f"QuickFIX logged rejects: {client.logged_rejects()}"
