"""Margin call, liquidation and auto-deleveraging over FIX end to end: QuickFIX initiators
loading the exchange dictionary (every BA, ExecutionReport and AP they receive is validated,
custom tags 7944/7945 included) against an in-process server with a margined BTC-PERP, a
journal and the real pipeline, over loopback.

A1 (ACME) deposits 1,000 USDT, sets leverage 100 and buys 0.700 BTC at 60,000 from B1 (BETA):
balance 979, bankruptcy price 58,601.5. The index goes to 58,950 (maintenance margin 84.6% of
equity: a margin call at the 80% level), then to 58,000: A1 is liquidated; its liquidation
order sells 0.100 into B1's bid at 58,700 and, the insurance fund being empty, the remaining
0.600 is auto-deleveraged against B1's short at the bankruptcy price."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from engine.commands import Deposit, SetIndexPrice
from engine.events import Liquidated, PositionTransferred
from fixserver.config import parse_config
from fixserver.dictionary import spec_path
from fixserver.orderentry.ownership import origin
from fixserver.server import FixServer
from fixserver.timeutil import format_utc_timestamp

from .conftest import wait_until
from .test_order_entry import TS, clean, clients, er, is_type, order, send
from .test_risk_over_fix import CONFIG, TOKEN, ws_subscribe

pytestmark = pytest.mark.integration
USDT = 1_000_000


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


def index_to(server, ticks: int):
    """Send the index until a released MarkPriceUpdated carries it (the mark is recomputed in
    the Tick ahead of a later batch; sending the same index again changes nothing)."""
    app = server.application.app

    def followed() -> bool:
        if app.risk.index.get("BTC-PERP") == ticks:
            return True
        submit(server, SetIndexPrice(0, 0, "BTC-PERP", ticks))
        return False

    return wait_until(followed, f"the mark to follow the index to {ticks}")


def margin_calls(client) -> list:
    client.poll()
    return [e for e in client.history
            if e.kind == "from_app" and e.msg_type == "BA" and 7944 in e.fields]


def liq_reports(client) -> list:
    client.poll()
    return [e for e in client.history
            if e.kind == "from_app" and e.msg_type == "8" and 7945 in e.fields]


@pytest_twisted.inlineCallbacks
def test_margin_call_then_liquidation_and_adl_over_quickfix(exchange, quickfix_client):
    """One margin call (BA 7944) on ACME1 and its drop copy; then the liquidation: New, fill,
    remainder cancel of LIQ-0 and the ADL report (7945=1/3) on ACME1 and the drop copy, the
    counterparty's ADL report (7945=3, ExecID <exec id>-C) on BETA1, subscribed APs showing
    both flat after; the public liquidations@BTC-PERP message with the same engine seq;
    everything from one engine command; QuickFIX rejects nothing."""
    server = exchange
    app = server.application.app
    released: list = []
    server.application.pipeline.subscribe(
        lambda processed: released.extend((p.command, e) for p in processed for e in p.events))
    acme, beta, dc = clients(server, quickfix_client, "ACME1", "BETA1", "ACMEDC",
                             dictionary=spec_path())
    for c in (acme, beta, dc):
        yield wait_until(lambda c=c: c.find("logon"), f"the logon of {c}")
    feed = yield ws_subscribe(server, ["liquidations@BTC-PERP"])

    submit(server, Deposit(0, 0, "A1", "USDT", 1_000 * USDT))
    submit(server, Deposit(0, 0, "B1", "USDT", 100_000 * USDT))
    yield wait_until(lambda: ("B1", "USDT") in app.risk.accounts, "the deposits released")
    send(acme, "AL", (710, "LEV"), (709, "4"), (712, "1"), (715, "20240101"), (1, "A1"),
         (581, "1"), (55, "BTC-PERP"), (60, TS), (7941, "1"), (7930, "100"))
    am = yield wait_until(lambda: acme.find("from_app", is_type("AM", t710="LEV")), "AM")
    assert am.fields[722] == "0"  # the mark is the reference price, 60,000, until an index
    order(beta, "S1", "2", "0.700", "60000", "B1")
    yield wait_until(lambda: beta.find("from_app", er(t11="S1", t150="0")), "S1 resting")
    order(acme, "L1", "1", "0.700", "60000")
    yield wait_until(lambda: acme.find("from_app", er(t11="L1", t150="F", t39="2")), "L1 filled")
    order(beta, "BID", "1", "0.100", "58700", "B1")
    yield wait_until(lambda: beta.find("from_app", er(t11="BID", t150="0")), "B1's bid")
    for client, account, req in ((acme, "A1", "PA"), (beta, "B1", "PB")):
        send(client, "AN", (710, req), (724, "0"), (263, "1"), (1, account), (581, "1"),
             (715, "20240101"), (60, TS), (55, "BTC-PERP"))
        yield wait_until(lambda c=client, r=req: c.find("from_app", is_type("AP", t710=r)),
                         f"the AP snapshot {req}")

    # the margin call: once, on the order-entry session and the drop copy
    yield index_to(server, 589_500)
    call = yield wait_until(lambda: margin_calls(acme), "the margin call on ACME1")
    copy = yield wait_until(lambda: margin_calls(dc), "the margin call on the drop copy")
    assert call[0].fields[7944] == "0.8" and call[0].fields[1] == "A1"
    assert call[0].fields[58].startswith("margin call: the cross USDT account's")
    assert copy[0].fields[908] == call[0].fields[908] and copy[0].fields[797] == "Y"
    yield index_to(server, 589_400)  # within the same level: no second warning

    # the liquidation
    mark = len(acme.history)
    yield index_to(server, 580_000)
    adl = yield wait_until(lambda: [e for e in liq_reports(acme) if e.fields[7945] == "3"],
                           "A1's auto-deleveraging report")
    theirs = yield wait_until(lambda: liq_reports(beta), "B1's auto-deleveraging report")
    ap = yield wait_until(lambda: acme.find("from_app", is_type("AP", t710="PA", t704="0.000"),
                                            start=mark), "A1's AP after the liquidation")
    bap = yield wait_until(lambda: beta.find("from_app", is_type("AP", t710="PB",
                                                                 t705="0.000")),
                           "B1's AP after the deleveraging")
    copies = yield wait_until(lambda: len(liq_reports(dc)) >= 4 and liq_reports(dc),
                              "the drop copy's liquidation reports")

    (step,) = [e for _c, e in released if type(e) is Liquidated]
    (command,) = [c for c, e in released if e is step]
    (tr,) = [e for _c, e in released if type(e) is PositionTransferred]
    assert (step.filled, step.deleveraged, step.taken_over) == (100, 600, 0)
    ers = liq_reports(acme)
    assert [(e.fields[150], e.fields[7945]) for e in ers] == [
        ("0", "1"), ("F", "1"), ("4", "1"), ("F", "3")]
    new, fill, rest, mine = ers
    assert new.fields[11] == "LIQ-0" and new.fields[44] == "58601.5"
    assert (fill.fields[32], fill.fields[31], fill.fields[851]) == ("0.100", "58700.0", "2")
    assert rest.fields[14] == "0.100" and rest.fields[39] == "4"
    assert mine is adl[0] and mine.fields[17] == f"{tr.exec_id}-L"
    assert mine.fields[37] == f"ADL-{tr.exec_id}" and mine.fields[198] == new.fields[37]
    assert (mine.fields[32], mine.fields[31]) == ("0.600", "58601.5")
    (t,) = theirs
    assert t.fields[17] == f"{tr.exec_id}-C" and t.fields[1] == "B1" and t.fields[54] == "1"
    assert t.fields[7945] == "3" and t.fields[58].startswith("auto-deleveraged")
    # one engine command: one TransactTime, the position reports stamped with its time
    stamp = format_utc_timestamp(command.ts).decode()
    assert {e.fields[60] for e in ers} == {stamp} and t.fields[60] == stamp
    assert ap.fields[721].startswith(f"AP-{command.ts}-")
    assert bap.fields[721].startswith(f"AP-{command.ts}-") and bap.fields[704] == "0.000"
    assert [e.fields[17] for e in copies] == [e.fields[17] for e in ers]
    assert all(e.fields[797] == "Y" for e in copies)
    # the margin call came once (the liquidation crossed no warning level on its way)
    assert len(margin_calls(acme)) == 1 and len(margin_calls(dc)) == 1
    # the public feed: the same step, labelled with the same engine seq, no account in it
    (public,) = yield wait_until(lambda: [m for m in feed.client.messages
                                          if m.get("channel") == "liquidations@BTC-PERP"
                                          and m.get("u")], "the WebSocket liquidation")
    assert public["u"] == command.seq and str(public["id"]) == new.fields[37]
    assert (public["side"], public["qty"]) == ("sell", "0.700")
    assert "A1" not in str(public)
    feed.client.dropConnection(abort=True)

    clean(acme, beta, dc)
    for c in (acme, beta, dc):
        yield threads.deferToThread(c.stop)
