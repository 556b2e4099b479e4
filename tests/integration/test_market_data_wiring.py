"""Market data wired into the exchange process: trades from QuickFIX order entry reach the
WebSocket feed, FIX market data and Redis with one update id, books equal to the engine's,
update ids carry on across a restart, and an instrument halt reaches all three."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from engine.commands import SetInstrumentStatus
from engine.enums import InstrumentStatus
from feeds.redis_keys import parse_book_hash, status_field
from feeds.replica import BookReplica
from fixserver.config import parse_config
from fixserver.dictionary import spec_path
from fixserver.server import FixServer
from tests.feeds.redisutil import (
    decode,
    delete_prefix,
    shared_redis_or_skip,
    sorted_levels,
    unique_keys,
)
from tests.feeds.wsclient import FeedClientFactory
from tests.fixserver.marketdata.harness import ClientBook, engine_levels, entries

from .conftest import free_port, wait_until
from .qf_client import QuickFixClient
from .test_fix_market_data import field_list, md_request
from .test_order_entry import clean, er, order

fix = pytest.importorskip("quickfix")
fix44 = pytest.importorskip("quickfix44")

pytestmark = pytest.mark.integration
SYMBOL = "BTC-PERP"
TIMEOUT = 30.0

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort={fix_port}
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=2
LogonTimeout=5
WebSocketAddress=127.0.0.1
WebSocketPort=0
FeedBatchInterval=5
RedisURL=redis://127.0.0.1:6379/0
RedisKeyPrefix={prefix}
[FIRM]
Firm=ACME
Accounts=A1
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
[SESSION]
TargetCompID=MDCLIENT
SessionRole=market-data
"""


class Rig:
    """The exchange's config under a unique Redis prefix, its servers, and its clients."""

    def __init__(self, tmp_path, redis_client, quickfix_client) -> None:
        self.tmp_path = tmp_path
        self.redis = redis_client
        self.keys = unique_keys()
        self.fix_port = free_port()  # fixed: the QuickFIX initiators reconnect after a restart
        self.servers: list[FixServer] = []
        self.ws_factories: list[FeedClientFactory] = []
        self._quickfix_client = quickfix_client

    def start_server(self) -> FixServer:
        text = CONFIG.format(fix_port=self.fix_port, tmp=self.tmp_path, prefix=self.keys.prefix)
        server = FixServer(parse_config(text, base_dir=str(self.tmp_path)), reactor)
        server.start()
        self.servers.append(server)
        return server

    def client(self, name: str, **extra: str) -> QuickFixClient:
        c = self._quickfix_client(self.fix_port, sender=name, heartbeat=5, extra=extra or None)
        c.start()
        return c

    def md_client(self) -> QuickFixClient:
        # The exchange's own dictionary: it has the market-data messages and RptSeq (83).
        return self.client("MDCLIENT", DataDictionary=spec_path())

    def ws_connect(self, server: FixServer, channels: list[str]):
        """A WebSocket client subscribed to ``channels``; a Deferred firing with its factory
        once every subscription is acknowledged."""
        port = server.feeds.websocket_port.getHost().port
        factory = FeedClientFactory(f"ws://127.0.0.1:{port}/")
        self.ws_factories.append(factory)
        reactor.connectTCP("127.0.0.1", port, factory, timeout=TIMEOUT)
        factory.opened.addTimeout(TIMEOUT, reactor)

        def subscribe(client):
            client.send_json({"op": "subscribe", "channels": channels, "id": 1})
            return wait_until(
                lambda: sum(m.get("event") == "subscribed" for m in client.messages)
                == len(channels), "the WebSocket subscriptions", TIMEOUT)

        factory.opened.addCallback(subscribe)
        factory.opened.addCallback(lambda _: factory)
        return factory.opened

    def redis_book(self) -> tuple[dict, list, list]:
        """(ids, bids, asks) of the stored full book of SYMBOL, levels best first."""
        ids, bids, asks = parse_book_hash(self.redis.hgetall(self.keys.book(SYMBOL)))
        return ids, sorted_levels(bids, True), sorted_levels(asks, False)

    def redis_trades(self) -> list[dict]:
        return [decode(t) for t in self.redis.lrange(self.keys.trades(SYMBOL), 0, -1)]


@pytest_twisted.async_yield_fixture
async def rig(tmp_path, quickfix_client):
    redis_client = shared_redis_or_skip()
    r = Rig(tmp_path, redis_client, quickfix_client)
    yield r
    for factory in r.ws_factories:
        if factory.client is not None and factory.client.close_info is None:
            factory.client.dropConnection(abort=True)
    for server in r.servers:
        await server.stop()
    delete_prefix(redis_client, r.keys)
    redis_client.close()


def engine_book(server: FixServer) -> list:
    return engine_levels(server.application.pipeline.engine, SYMBOL)


def ws_book(messages: list[dict]) -> BookReplica:
    """The full-depth book rebuilt from the order-book messages (gaps and checksums checked)."""
    replica = BookReplica()
    for m in messages:
        if m.get("channel") == f"orderbook@{SYMBOL}@full" and "type" in m:
            replica.apply(m)
    return replica


def ws_trades(messages: list[dict]) -> list[dict]:
    return [t for m in messages if m.get("type") == "trades" for t in m["data"]]


def body_fields(event) -> list[tuple[int, str]]:
    """The message's fields without the trailer (an empty W ends its group at the CheckSum)."""
    return [(tag, value) for tag, value in field_list(event) if tag != 10]


def fix_book(client: QuickFixClient, md_req_id: str) -> ClientBook:
    """The client's book rebuilt strictly from the W and X of one subscription."""
    book = ClientBook()
    client.poll()
    for event in client.history:
        if (event.kind == "from_app" and event.msg_type in ("W", "X")
                and event.fields.get(262) == md_req_id):
            book.apply(event.msg_type, body_fields(event))
    return book


def w_update_id(client: QuickFixClient, md_req_id: str) -> int | None:
    """The RptSeq (83) of the subscription's W (None before it arrives, or for an empty book)."""
    w = client.find("from_app", lambda e: e.msg_type == "W" and e.fields.get(262) == md_req_id)
    return None if w is None or 83 not in w.fields else int(w.fields[83])


@pytest_twisted.inlineCallbacks
def rest_orders(acme: QuickFixClient):
    """ACME rests a sell of 0.010 at 60000 and a bid of 0.003 at 59900."""
    order(acme, "S1", "2", "0.010", "60000")
    order(acme, "P1", "1", "0.003", "59900")
    yield wait_until(lambda: acme.find("from_app", er(t11="P1", t150="0")), "the bid", TIMEOUT)
    yield wait_until(lambda: acme.find("from_app", er(t11="S1", t150="0")), "the ask", TIMEOUT)


@pytest_twisted.inlineCallbacks
def buy(acme: QuickFixClient, beta: QuickFixClient, cl_ord_id: str, start: int = 0):
    """BETA buys 0.004 at 60000 from ACME's resting ask: one trade; fires once both fills
    (those after ``start`` in ACME's history) have arrived."""
    order(beta, cl_ord_id, "1", "0.004", "60000", "B1")
    yield wait_until(lambda: beta.find("from_app", er(t11=cl_ord_id, t150="F")),
                     "the taker fill", TIMEOUT)
    yield wait_until(lambda: acme.find("from_app", er(t11="S1", t150="F"), start=start),
                     "the maker fill", TIMEOUT)


@pytest_twisted.inlineCallbacks
def test_a_trade_reaches_websocket_fix_and_redis_with_one_update_id(rig):
    """A trade between two QuickFIX firms appears on the WebSocket, in a FIX X and in Redis
    with the same update id; the WebSocket and FIX books equal the engine's L2 book."""
    server = rig.start_server()
    feed = yield rig.ws_connect(server, [f"orderbook@{SYMBOL}@full", f"trades@{SYMBOL}"])
    ws = feed.client
    acme, beta, md = rig.client("ACME1"), rig.client("BETA1"), rig.md_client()
    for c in (acme, beta, md):
        yield wait_until(lambda c=c: c.find("logon"), f"the logon of {c._app.session_id}",
                         TIMEOUT)
    fix.Session.sendToTarget(md_request("live", "1", 0, "012", [SYMBOL]),
                             md._app.session_id)
    yield wait_until(lambda: md.find("from_app", lambda e: e.msg_type == "W"), "the W", TIMEOUT)

    yield rest_orders(acme)
    yield buy(acme, beta, "B1")
    (ws_trade,) = yield wait_until(lambda: ws_trades(ws.messages), "the WebSocket trade",
                                   TIMEOUT)
    update_id = ws_trade["u"]
    assert (ws_trade["price"], ws_trade["qty"], ws_trade["side"]) == ("60000.0", "0.004", "buy")

    def fix_trade():
        x = md.find("from_app", lambda e: e.msg_type == "X" and "\x01269=2\x01" in e.raw)
        return x and [e for e in entries(body_fields(x)) if e[269] == "2"]

    (fix_entry,) = yield wait_until(fix_trade, "the trade in a FIX X", TIMEOUT)
    assert int(fix_entry[83]) == update_id
    assert (fix_entry[270], fix_entry[271], fix_entry[278]) == ("60000.0", "0.004",
                                                               str(ws_trade["id"]))
    stored = yield wait_until(lambda: rig.redis_trades(), "the trade in Redis", TIMEOUT)
    assert [(t["id"], t["u"]) for t in stored] == [(ws_trade["id"], update_id)]

    # The trade's command is the last change of the book: every outlet names it.
    expected = engine_book(server)
    assert expected == [[("59900.0", "0.003", 1)], [("60000.0", "0.006", 1)]]
    replica = yield wait_until(
        lambda: (r := ws_book(ws.messages)).update_id == update_id and r, "the WS book")
    assert [replica.levels("bids"), replica.levels("asks")] == expected
    fix_copy = yield wait_until(
        lambda: (b := fix_book(md, "live")).rpt_seqs and b.rpt_seqs[-1] == update_id and b,
        "the FIX book at the trade's update id")
    assert fix_copy.levels(SYMBOL) == expected
    _ids, bids, asks = yield wait_until(
        lambda: (s := rig.redis_book())[0].get(b"u") == update_id and s,
        "the Redis book at the trade's update id", TIMEOUT)
    assert [bids, asks] == expected
    assert server.feeds.hub.book_snapshot(SYMBOL).update_id == update_id

    clean(acme, beta, md)
    for c in (acme, beta, md):
        yield threads.deferToThread(c.stop)


@pytest_twisted.inlineCallbacks
def test_update_ids_carry_on_across_a_restart(rig):
    """After a clean restart the books start at the last journaled seq (never below an id
    already published) with the same levels, and the next trade's ids are higher still."""
    server = rig.start_server()
    acme, beta, md = rig.client("ACME1"), rig.client("BETA1"), rig.md_client()
    for c in (acme, beta, md):
        yield wait_until(lambda c=c: c.find("logon"), "a logon", TIMEOUT)
    yield rest_orders(acme)
    yield buy(acme, beta, "B1")
    feed = yield rig.ws_connect(server, [f"orderbook@{SYMBOL}@full", f"trades@{SYMBOL}"])
    before = ws_book(feed.client.messages).update_id
    (first_trade,) = yield wait_until(rig.redis_trades, "the first trade in Redis", TIMEOUT)
    assert first_trade["u"] <= before
    book_before = engine_book(server)
    last_seq = server.application.pipeline.sequencer.position()[0] - 1
    assert before <= last_seq

    marks = [len(c.history) for c in (acme, beta, md)]
    yield server.stop()
    yield wait_until(lambda: feed.closed.called, "the WebSocket close at shutdown")
    assert feed.client.close_info[1] == 1000
    server = rig.start_server()
    assert server.feeds.start_update_id >= last_seq >= before
    assert engine_book(server) == book_before
    for c, mark in zip((acme, beta, md), marks):
        yield wait_until(lambda c=c, mark=mark: c.find("logon", start=mark),
                         "a logon after the restart", TIMEOUT)

    feed = yield rig.ws_connect(server, [f"orderbook@{SYMBOL}@full", f"trades@{SYMBOL}"])
    snapshot = ws_book(feed.client.messages)
    assert snapshot.update_id == server.feeds.start_update_id
    assert [snapshot.levels("bids"), snapshot.levels("asks")] == book_before
    _ids, bids, asks = yield wait_until(
        lambda: (s := rig.redis_book())[0].get(b"u") == snapshot.update_id and s,
        "Redis rewritten at the seeded update id", TIMEOUT)
    assert [bids, asks] == book_before
    fix.Session.sendToTarget(md_request("again", "1", 0, "012", [SYMBOL]),
                             md._app.session_id)
    yield wait_until(lambda: w_update_id(md, "again"), "the W after the restart", TIMEOUT)
    assert w_update_id(md, "again") == snapshot.update_id

    yield buy(acme, beta, "B2", start=marks[0])
    (second,) = yield wait_until(lambda: ws_trades(feed.client.messages), "the next trade",
                                 TIMEOUT)
    assert second["u"] > snapshot.update_id
    assert second["id"] > first_trade["id"] and second["u"] > first_trade["u"]
    replica = yield wait_until(
        lambda: (r := ws_book(feed.client.messages)).update_id == second["u"] and r,
        "the WebSocket book at the new trade")
    assert [replica.levels("bids"), replica.levels("asks")] == engine_book(server)
    fix_copy = yield wait_until(
        lambda: (b := fix_book(md, "again")).rpt_seqs and b.rpt_seqs[-1] == second["u"] and b,
        "the FIX book at the new trade")
    assert fix_copy.levels(SYMBOL) == engine_book(server)
    clean(acme, beta, md)
    for c in (acme, beta, md):
        yield threads.deferToThread(c.stop)


def status_request(req_id: str, kind: str, symbol: str) -> fix.Message:
    """A SecurityStatusRequest (e)."""
    message = fix44.SecurityStatusRequest()
    message.setField(fix.SecurityStatusReqID(req_id))
    message.setField(fix.Symbol(symbol))
    message.setField(fix.SubscriptionRequestType(kind))
    return message


def redis_status(rig: Rig) -> str | None:
    """The status Redis holds for SYMBOL (in the meta hash), if any."""
    data = rig.redis.hget(rig.keys.meta, status_field(SYMBOL))
    return None if data is None else decode(data)["status"]


def ws_statuses(messages: list[dict]) -> list[dict]:
    """The data messages of the status channel (not its subscribe ack)."""
    return [m for m in messages
            if m.get("channel") == f"status@{SYMBOL}" and m.get("type") == "status"]


@pytest_twisted.inlineCallbacks
def test_a_halt_reaches_fix_security_status_websocket_and_redis(rig):
    """A SetInstrumentStatus through the order pipeline: a QuickFIX market-data client that
    subscribed with e gets an unsolicited f with 326=2, a WebSocket status@ subscriber an update
    "halted" with the command's seq, Redis stores it; the resume follows the same way."""
    server = rig.start_server()
    pipeline = server.application.pipeline
    md = rig.md_client()
    yield wait_until(lambda: md.find("logon"), "the market-data logon", TIMEOUT)
    feed = yield rig.ws_connect(server, [f"status@{SYMBOL}"])
    ws = feed.client
    (snapshot,) = yield wait_until(lambda: ws_statuses(ws.messages),
                                   "the WebSocket status snapshot", TIMEOUT)
    assert (snapshot["type"], snapshot["symbol"], snapshot["status"]) == (
        "status", SYMBOL, "trading")

    def send(message: fix.Message) -> None:
        fix.Session.sendToTarget(message, md._app.session_id)

    def status(req_id: str, unsolicited: str, start: int = 0):
        return md.find("from_app", lambda e: e.msg_type == "f" and e.fields.get(324) == req_id
                       and e.fields.get(325) == unsolicited, start=start)

    send(status_request("st1", "1", SYMBOL))
    answer = yield wait_until(lambda: status("st1", "N"), "the f answering the e", TIMEOUT)
    assert (answer.fields[55], answer.fields[326], answer.fields[58]) == (
        SYMBOL, "17", "trading")
    send(status_request("nope", "0", "DOGE-PERP"))
    refused = yield wait_until(
        lambda: md.find("from_app", lambda e: e.msg_type == "j" and e.fields.get(379) == "nope"),
        "the BusinessMessageReject of the e for an unknown symbol", TIMEOUT)
    assert (refused.fields[372], refused.fields[380]) == ("e", "2")

    before = pipeline.sequencer.position()[0] - 1
    pipeline.submit(("", "A"), SetInstrumentStatus(0, 0, SYMBOL, InstrumentStatus.HALTED))
    pipeline.tick()
    pushed = yield wait_until(lambda: status("st1", "Y"), "the pushed f of the halt", TIMEOUT)
    assert (pushed.fields[55], pushed.fields[326], pushed.fields[58]) == (SYMBOL, "2", "halted")
    assert 60 in pushed.fields, "a pushed change carries its TransactTime"
    halted = yield wait_until(lambda: ws_statuses(ws.messages)[1:],
                              "the WebSocket status update of the halt", TIMEOUT)
    assert (halted[0]["type"], halted[0]["status"]) == ("status", "halted")
    assert before < halted[0]["u"] <= pipeline.sequencer.position()[0] - 1
    yield wait_until(lambda: redis_status(rig) == "halted", "Redis to hold the halt", TIMEOUT)

    mark = len(md.history)
    pipeline.submit(("", "A"), SetInstrumentStatus(0, 0, SYMBOL, InstrumentStatus.TRADING))
    pipeline.tick()
    resumed = yield wait_until(lambda: status("st1", "Y", start=mark),
                               "the pushed f of the resume", TIMEOUT)
    assert resumed.fields[326] == "17"
    yield wait_until(lambda: [m["status"] for m in ws_statuses(ws.messages)] == [
        "trading", "halted", "trading"], "the WebSocket status update of the resume", TIMEOUT)

    clean(md)
    yield threads.deferToThread(md.stop)
