"""Positions, collateral and margin settings over FIX end to end: QuickFIX initiators loading
the exchange dictionary (so every AO/AP/AM/BA/BG they receive is validated) against an
in-process server with a margined BTC-PERP, a journal and the real pipeline, over loopback."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from engine.commands import SetIndexPrice
from fixserver.config import parse_config
from fixserver.dictionary import spec_path
from fixserver.orderentry.ownership import origin
from fixserver.server import FixServer
from tests.feeds.wsclient import FeedClientFactory
from tests.fixserver.admin.exchange import api

from .conftest import wait_until
from .test_order_entry import TS, clean, clients, er, is_type, order, send

pytestmark = pytest.mark.integration
USDT = 1_000_000

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=2
LogonTimeout=5
HttpAddress=127.0.0.1
HttpPort=0
AdminToken=ops:{token}
WebSocketAddress=127.0.0.1
WebSocketPort=0
[INSTRUMENT]
Symbol=BTC-PERP
TickSize=0.1
LotSize=0.001
ReferencePrice=60000
MakerFeePpm=-100
TakerFeePpm=500
SettlementAsset=USDT
SettlementDecimals=6
MaxLeverage=100
DefaultLeverage=10
RiskTiers=50000:0.5%:100, 250000:1%:50, 10000000:5%:10
MarkIntervalMs=1
[INSTRUMENT]
Symbol=ETH-PERP
TickSize=0.01
LotSize=0.01
ReferencePrice=3000
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
TargetCompID=ACMEDC
Firm=ACME
SessionRole=drop-copy
"""


TOKEN = "ops-admin-token-0123456789"
WS_TIMEOUT = 30.0


@pytest_twisted.async_yield_fixture
async def exchange(tmp_path):
    server = FixServer(parse_config(CONFIG.format(tmp=tmp_path, token=TOKEN),
                                    base_dir=str(tmp_path)), reactor)
    server.start()
    yield server
    await server.stop()


def submit(server, command) -> None:
    """A command through the exchange's sequencer (journaled like any request)."""
    server.application.pipeline.submit(origin("", "A", "test"), command)


def ws_subscribe(server, channels: list[str]):
    """A WebSocket client of the exchange's feed subscribed to ``channels`` (a Deferred
    firing with its factory once every subscription is acknowledged)."""
    port = server.feeds.websocket_port.getHost().port
    factory = FeedClientFactory(f"ws://127.0.0.1:{port}/")
    reactor.connectTCP("127.0.0.1", port, factory, timeout=WS_TIMEOUT)
    factory.opened.addTimeout(WS_TIMEOUT, reactor)

    def subscribe(client):
        client.send_json({"op": "subscribe", "channels": channels, "id": 1})
        return wait_until(lambda: sum(m.get("event") == "subscribed" for m in client.messages)
                          == len(channels), "the WebSocket subscriptions", WS_TIMEOUT)

    factory.opened.addCallback(subscribe)
    factory.opened.addCallback(lambda _: factory)
    return factory.opened


def has(msg_type: str, **tags):
    return is_type(msg_type, **tags)


@pytest_twisted.inlineCallbacks
def test_margin_positions_collateral_and_drop_copy_over_quickfix(exchange, quickfix_client):
    """Margin reject then acceptance after a Deposit; AL/AM set leverage; AN/AO/AP and BB/BA
    snapshots and subscriptions; a mark move (SetIndexPrice) seen in AP's unrealised PnL;
    margin mode change refused with an open position; the drop copy receives AP/BA."""
    server = exchange
    app = server.application.app
    acme, beta, dc = clients(server, quickfix_client, "ACME1", "BETA1", "ACMEDC",
                             dictionary=spec_path())
    for c in (acme, beta, dc):
        yield wait_until(lambda c=c: c.find("logon"), f"the logon of {c}")

    # unfunded: refused, saying by how much
    order(acme, "M1", "1", "0.010", "60000")
    rej = yield wait_until(lambda: acme.find("from_app", er(t11="M1", t150="8")), "M1 refused")
    assert rej.fields[58].startswith("insufficient margin: short by ")
    assert rej.fields[58].endswith(" USDT")
    # deposits through the authenticated admin API (journaled; answered once durable)
    url = f"http://127.0.0.1:{server.http_port.getHost().port}"
    for account in ("A1", "B1"):
        status, answer, _ = yield api(url, "POST", "/admin/accounts/deposit", TOKEN,
                                      {"account": account, "asset": "USDT",
                                       "amount": "10000", "ref": "wire-1"})
        assert status == 200 and answer["balance"] == "10000.000000", answer
    status, answer, _ = yield api(url, "POST", "/admin/accounts/deposit", None,
                                  {"account": "A1", "asset": "USDT", "amount": "1"})
    assert status == 401, answer
    yield wait_until(lambda: ("B1", "USDT") in app.risk.accounts, "the deposits released")
    feed = yield ws_subscribe(server, ["markPrice@BTC-PERP"])

    # leverage over FIX
    send(acme, "AL", (710, "LEV1"), (709, "4"), (712, "1"), (715, "20240101"), (1, "A1"),
         (581, "1"), (55, "BTC-PERP"), (60, TS), (7941, "1"), (7930, "20"))
    am = yield wait_until(lambda: acme.find("from_app", has("AM", t710="LEV1")), "AM")
    assert am.fields[722] == "0" and am.fields[7930] == "20"

    # snapshots, then subscriptions
    send(acme, "BB", (909, "CS1"), (1, "A1"))
    ba = yield wait_until(lambda: acme.find("from_app", has("BA", t909="CS1")), "BA")
    assert ba.fields[7937] == "10000.000000" and ba.fields[899] == "10000.000000"
    send(acme, "AN", (710, "ANX"), (724, "0"), (1, "B1"), (581, "1"), (715, "20240101"),
         (60, TS))
    ao = yield wait_until(lambda: acme.find("from_app", has("AO", t710="ANX")), "AO refused")
    assert ao.fields[728] == "3" and ao.fields[729] == "2"
    send(acme, "AN", (710, "SUB1"), (724, "0"), (263, "1"), (1, "A1"), (581, "1"),
         (715, "20240101"), (60, TS), (55, "BTC-PERP"))
    ap = yield wait_until(lambda: acme.find("from_app", has("AP", t710="SUB1")), "AP snapshot")
    assert ap.fields[7930] == "20" and ap.fields[704] == "0.000"
    send(acme, "BB", (909, "CSUB"), (263, "1"), (1, "A1"))
    yield wait_until(lambda: acme.find("from_app", has("BA", t909="CSUB")), "BA snapshot")

    # the order now goes through and trades
    order(acme, "M2", "1", "0.010", "60000")
    yield wait_until(lambda: acme.find("from_app", er(t11="M2", t150="0")), "M2 accepted")
    mark = len(acme.history)
    order(beta, "S1", "2", "0.010", "60000", "B1")
    yield wait_until(lambda: acme.find("from_app", er(t11="M2", t150="F")), "M2 filled")
    pushed = yield wait_until(lambda: acme.find(
        "from_app", has("AP", t710="SUB1", t704="0.010"), start=mark), "AP push after fill")
    assert pushed.fields[734] == "60000.0"
    yield wait_until(lambda: acme.find("from_app", has("BA", t909="CSUB"), start=mark),
                     "BA push after fill")
    copy_ap = yield wait_until(lambda: dc.find("from_app", has("AP", t1="A1", t704="0.010")),
                               "drop copy AP")
    assert copy_ap.fields[797] == "Y" and copy_ap.fields[325] == "Y"
    copy_ba = yield wait_until(lambda: dc.find("from_app", has("BA", t1="A1")), "drop copy BA")
    assert copy_ba.fields[797] == "Y"

    # margin mode change with the position open: refused
    send(acme, "AL", (710, "MM1"), (709, "4"), (712, "1"), (715, "20240101"), (1, "A1"),
         (581, "1"), (55, "BTC-PERP"), (60, TS), (7941, "2"), (7931, "2"))
    am = yield wait_until(lambda: acme.find("from_app", has("AM", t710="MM1")), "AM refused")
    assert am.fields[722] == "2" and "cannot change while a position" in am.fields[58]

    # a mark move shows in the pushed unrealised PnL (TVAR, first PosAmt): +10 USDT
    def mark_followed() -> bool:
        # The mark is recomputed in the engine's Tick ahead of a later batch: the index is
        # sent again until a released MarkPriceUpdated carries it.
        if app.risk.index.get("BTC-PERP") == 610_000:
            return True
        submit(server, SetIndexPrice(0, 0, "BTC-PERP", 610_000))
        return False

    yield wait_until(mark_followed, "the mark to follow the index")
    moved = yield wait_until(lambda: acme.find(
        "from_app", has("AP", t710="SUB1", t730="61000.0")), "AP at the new mark")
    assert moved.fields[708] == "10.000000"
    # the same mark on the public WebSocket feed
    marks = yield wait_until(lambda: [m for m in feed.client.messages
                                      if m.get("type") == "markPrice"
                                      and m.get("mark") == "61000.0"], "the mark on the feed")
    assert marks[0]["index"] == "61000.0"
    feed.client.dropConnection(abort=True)

    clean(acme, beta, dc)
    for c in (acme, beta, dc):
        yield threads.deferToThread(c.stop)
