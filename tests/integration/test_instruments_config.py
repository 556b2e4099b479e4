"""Instruments come from [INSTRUMENT] sections: a new one is tradable over FIX, listed in
SecurityList, on the WebSocket and in Postgres with no code change; a changed fee is applied
as a journaled command and survives restarts; a tick size change with resting orders stops
start-up with the reason."""

from __future__ import annotations

import psycopg
import pytest
import pytest_twisted
import quickfix as fix
import quickfix44 as fix44
from twisted.internet import reactor

from fixserver.config import ConfigError, parse_config
from fixserver.dictionary import spec_path
from fixserver.server import FixServer
from tests.feeds.wsclient import FeedClientFactory
from tests.fixserver.inprocess_exchange import fix_message, session_of
from tests.fixserver.marketdata.harness import entries
from tests.fixserver.pg_fixtures import pg_dsn  # noqa: F401  (the fixture)

from .conftest import wait_until
from .test_fix_market_data import field_list
from .test_order_entry import clean, er, send

pytestmark = pytest.mark.integration
TIMEOUT = 30.0
TS = "20240101-00:00:00"

BTC = """[INSTRUMENT]
Symbol=BTC-PERP
TickSize=0.1
LotSize=0.001
MakerFeePpm=-100
TakerFeePpm={btc_taker}
ReferencePrice=60000
"""
SOL = """[INSTRUMENT]
Symbol=SOL-PERP
TickSize={sol_tick}
LotSize=0.1
MinQty=0.1
MakerFeePpm=-200
TakerFeePpm=600
ReferencePrice=150
"""

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
{extra}
{instruments}
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


def config(tmp_path, *, btc_taker: int = 500, sol_tick: str = "0.001", sol: bool = True,
           extra: str = ""):
    instruments = BTC.format(btc_taker=btc_taker) + (SOL.format(sol_tick=sol_tick) if sol else "")
    text = CONFIG.format(tmp=tmp_path, extra=extra, instruments=instruments)
    return parse_config(text, base_dir=str(tmp_path))


def sol_order(cl: str, side: str, qty: str, price: str, account: str):
    return fix_message("D", (11, cl), (1, account), (55, "SOL-PERP"), (54, side), (60, TS),
                       (38, qty), (40, "2"), (44, price))


@pytest_twisted.inlineCallbacks
def test_sol_perp_from_config_is_traded_listed_streamed_and_stored(tmp_path, quickfix_client,
                                                                   pg_dsn):  # noqa: F811
    """SOL-PERP, only in the config: QuickFIX clients trade it (prices on its 0.001 grid),
    SecurityList (y) lists it, the WebSocket streams its book and trade, Postgres holds its
    reference row and the executions."""
    cfg = config(tmp_path, extra=f"PostgresDSN={pg_dsn}\nWebSocketAddress=127.0.0.1\n"
                                 "WebSocketPort=0\nFeedBatchInterval=5")
    server = FixServer(cfg, reactor)
    server.start()
    factory = None
    try:
        port = server.fix_port.getHost().port
        acme = quickfix_client(port, sender="ACME1")
        beta = quickfix_client(port, sender="BETA1")
        md = quickfix_client(port, sender="MDCLIENT", extra={"DataDictionary": spec_path()})
        for c in (acme, beta, md):
            c.start()
        for c in (acme, beta, md):
            yield wait_until(lambda c=c: c.find("logon"), f"the logon of {c}", TIMEOUT)

        ws_port = server.feeds.websocket_port.getHost().port
        factory = FeedClientFactory(f"ws://127.0.0.1:{ws_port}/")
        reactor.connectTCP("127.0.0.1", ws_port, factory, timeout=TIMEOUT)
        factory.opened.addTimeout(TIMEOUT, reactor)
        ws = yield factory.opened
        ws.send_json({"op": "subscribe", "channels": ["trades@SOL-PERP",
                                                      "orderbook@SOL-PERP@20"], "id": 1})
        yield wait_until(lambda: sum(m.get("event") == "subscribed" for m in ws.messages) == 2,
                         "the SOL-PERP WebSocket subscriptions", TIMEOUT)

        send(acme, "D", (11, "S1"), (1, "A1"), (55, "SOL-PERP"), (54, "2"), (60, TS),
             (38, "2.5"), (40, "2"), (44, "150.125"))
        yield wait_until(lambda: acme.find("from_app", er(t11="S1", t150="0")), "S1 ack", TIMEOUT)
        send(beta, "D", (11, "B1"), (1, "B1"), (55, "SOL-PERP"), (54, "1"), (60, TS),
             (38, "1.0"), (40, "2"), (44, "150.125"))
        fill = yield wait_until(lambda: beta.find("from_app", er(t11="B1", t150="F")),
                                "the SOL-PERP fill", TIMEOUT)
        assert fill.fields[31] == "150.125" and fill.fields[32] == "1.0"
        assert fill.fields[12] == "0.090075"  # 600 ppm of 150.125

        request = fix44.SecurityListRequest()
        request.setField(fix.SecurityReqID("sl1"))
        request.setField(fix.SecurityListRequestType(4))
        fix.Session.sendToTarget(request, md._app.session_id)
        listing = yield wait_until(lambda: md.find("from_app", lambda e: e.msg_type == "y"),
                                   "the SecurityList", TIMEOUT)
        listed = {e[55]: e for e in entries(field_list(listing), 146)}
        assert set(listed) == {"BTC-PERP", "SOL-PERP"}
        assert listed["SOL-PERP"][969] == "0.001"

        def ws_trade():
            return [t for m in ws.messages if m.get("channel") == "trades@SOL-PERP"
                    and m.get("type") == "trades" for t in m["data"]]

        trades = yield wait_until(ws_trade, "the SOL-PERP trade on the WebSocket", TIMEOUT)
        assert (trades[0]["price"], trades[0]["qty"], trades[0]["side"]) == ("150.125", "1.0",
                                                                            "buy")

        def stored():
            with psycopg.connect(pg_dsn) as conn:
                inst = conn.execute("SELECT tick_size, taker_fee_ppm FROM instruments "
                                    "WHERE symbol = 'SOL-PERP'").fetchone()
                n = conn.execute("SELECT count(*) FROM executions "
                                 "WHERE symbol = 'SOL-PERP'").fetchone()[0]
            return (inst, n) if inst is not None and n >= 3 else None

        (inst, executions) = yield wait_until(stored, "SOL-PERP in Postgres", TIMEOUT)
        assert float(inst[0]) == 0.001 and inst[1] == 600 and executions >= 3
        clean(acme, beta, md)
        for c in (acme, beta, md):
            c.stop()
    finally:
        if factory is not None and factory.client is not None:
            factory.client.dropConnection(abort=True)
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_fee_change_is_journaled_and_survives_restarts(tmp_path):
    """BTC's taker fee raised in the config: applied at start-up through a journaled
    ConfigureInstrument (the engine and the FIX layer both use it), still in force after a
    restart with nothing journaled again."""
    first = FixServer(config(tmp_path, sol=False), reactor)
    first.start()
    first.application.pipeline.tick()
    yield first.application.pipeline.when_idle()
    assert first.application.pipeline.engine.markets["BTC-PERP"].instrument.taker_fee_ppm == 500
    yield first.stop()

    second = FixServer(config(tmp_path, btc_taker=700, sol=False), reactor)
    pipeline = second.application.pipeline
    assert pipeline.sequencer.pending == 1, "one ConfigureInstrument for the fee change"
    second.start()
    pipeline.tick()
    yield pipeline.when_idle()
    assert pipeline.engine.markets["BTC-PERP"].instrument.taker_fee_ppm == 700
    yield second.stop()

    third = FixServer(config(tmp_path, btc_taker=700, sol=False), reactor)
    try:
        pipeline = third.application.pipeline
        assert pipeline.recovered_commands > 0 or pipeline.recovered_extra is not None
        assert pipeline.engine.markets["BTC-PERP"].instrument.taker_fee_ppm == 700
        assert pipeline.sequencer.pending == 0, "nothing to change: nothing journaled"
        third.start()
    finally:
        yield third.stop()


@pytest_twisted.inlineCallbacks
def test_tick_change_with_resting_orders_stops_start_up(tmp_path):
    """SOL-PERP's tick size changed while an order rests: start-up refuses, naming the
    instrument, the change and the resting order; without orders it would be applied."""
    server = FixServer(config(tmp_path), reactor)
    server.start()
    service = server.application
    service.on_message(session_of(server, "ACME1"), sol_order("R1", "1", "1.0", "149", "A1"),
                       server.now_ns())
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    assert "SOL-PERP" in service.pipeline.engine.markets
    yield server.stop()
    with pytest.raises(ConfigError) as refused:
        FixServer(config(tmp_path, sol_tick="0.01"), reactor)
    message = str(refused.value)
    assert "SOL-PERP" in message and "0.001" in message and "0.01" in message
    assert "1 live order" in message
    # SOL-PERP dropped from the config: refused too (no silent delisting)
    with pytest.raises(ConfigError, match="delisting is not supported"):
        FixServer(config(tmp_path, sol=False), reactor)
