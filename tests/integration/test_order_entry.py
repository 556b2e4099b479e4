"""Order entry end to end: QuickFIX initiators (validating what the server sends) against an
in-process server with a real engine, journal and pipeline, over loopback."""

from __future__ import annotations

import json
import urllib.request

import pytest
import pytest_twisted
import quickfix as fix
from twisted.internet import reactor, threads

from fixserver.config import parse_config
from fixserver.dictionary import spec_path
from fixserver.server import FixServer

from .conftest import wait_until
from .qf_client import Event, QuickFixClient

pytestmark = pytest.mark.integration
TS = "20240101-00:00:00"
ADMIN_TOKEN = "order-entry-test-admin-token"

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
HttpAddress=127.0.0.1
HttpPort=0
AdminToken=ops:{admin_token}
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=2
LogonTimeout=5
{extra}
[FIRM]
Firm=ACME
Accounts=A1
MaxOpenOrders=3
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
{acme}
[SESSION]
TargetCompID=BETA1
Firm=BETA
[SESSION]
TargetCompID=ACMEDC
Firm=ACME
SessionRole=drop-copy
"""


@pytest_twisted.async_yield_fixture
async def exchange(tmp_path):
    servers: list[FixServer] = []

    def start(acme: str = "", extra: str = "") -> FixServer:
        text = CONFIG.format(tmp=tmp_path, acme=acme, extra=extra, admin_token=ADMIN_TOKEN)
        server = FixServer(parse_config(text, base_dir=str(tmp_path)), reactor)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def send(client: QuickFixClient, msg_type: str, *pairs: tuple[int, str]) -> None:
    message = fix.Message()
    message.getHeader().setField(fix.MsgType(msg_type))
    for tag, value in pairs:
        target = message.getHeader() if tag == 97 else message  # PossResend is a header field
        target.setField(fix.StringField(tag, value))
    fix.Session.sendToTarget(message, client._app.session_id)


def order(client, cl, side="1", qty="0.002", price="60000", account="A1", *extra):
    send(client, "D", (11, cl), (1, account), (55, "BTC-PERP"), (54, side), (60, TS),
         (38, qty), (40, "2"), (44, price), *extra)


def er(**tags):
    def predicate(event: Event) -> bool:
        return event.msg_type == "8" and all(
            event.fields.get(int(t[1:])) == v for t, v in tags.items())
    return predicate


def is_type(msg_type: str, **tags):
    def predicate(event: Event) -> bool:
        return event.msg_type == msg_type and all(
            event.fields.get(int(t[1:])) == v for t, v in tags.items())
    return predicate


def clean(*clients: QuickFixClient) -> None:
    for c in clients:
        assert c.rejects() == [], f"QuickFIX rejected what the server sent: {c.rejects()}"
        assert c.logged_rejects() == [], f"QuickFIX logged rejects: {c.logged_rejects()}"


def clients(server, quickfix_client, *names, dictionary=None):
    port = server.fix_port.getHost().port
    extra = {"DataDictionary": dictionary} if dictionary else None
    made = [quickfix_client(port, sender=n, extra=extra) for n in names]
    for c in made:
        c.start()
    return made


@pytest_twisted.inlineCallbacks
def test_fills_cancel_replace_status_mass_cancel_and_drop_copy(exchange, quickfix_client):
    """Partial fills between two firms (851, LastQty/LastPx, Commission), drop copies with
    797=Y, replace, cancel, status, mass status (912=Y last) and mass cancel (r)."""
    server = exchange()
    acme, beta, dc = clients(server, quickfix_client, "ACME1", "BETA1", "ACMEDC")
    for c in (acme, beta, dc):
        yield wait_until(lambda c=c: c.find("logon"), f"the logon of {c}")
    order(acme, "S1", "2", "0.010")
    yield wait_until(lambda: acme.find("from_app", er(t11="S1", t150="0")), "S1 acknowledged")
    order(beta, "B1", "1", "0.004", "60000", "B1")
    taker = yield wait_until(lambda: beta.find("from_app", er(t11="B1", t150="F")), "B1 fill")
    maker = yield wait_until(lambda: acme.find("from_app", er(t11="S1", t150="F")), "S1 fill")
    assert taker.fields[851] == "2" and maker.fields[851] == "1" and maker.fields[39] == "1"
    assert maker.fields[32] == "0.004" and maker.fields[31] == "60000.0"
    assert taker.fields[13] == "3" and taker.fields[12] == "0.12"
    copy = yield wait_until(lambda: dc.find("from_app", er(t11="S1", t150="F")), "drop copy")
    assert copy.fields[797] == "Y" and copy.fields[17] == maker.fields[17]
    send(acme, "G", (41, "S1"), (11, "S2"), (1, "A1"), (55, "BTC-PERP"), (54, "2"), (60, TS),
         (38, "0.008"), (40, "2"), (44, "60000"))
    replaced = yield wait_until(lambda: acme.find("from_app", er(t11="S2", t150="5")), "replace")
    assert replaced.fields[41] == "S1" and replaced.fields[151] == "0.004"
    order(acme, "S3", "2", "0.001", "60100")
    send(acme, "H", (11, "S2"), (55, "BTC-PERP"), (54, "2"))
    status = yield wait_until(lambda: acme.find("from_app", er(t11="S2", t150="I")), "status")
    assert status.fields[39] == "1"
    yield wait_until(lambda: acme.find("from_app", er(t11="S3", t150="0")), "S3 acknowledged")
    send(acme, "AF", (584, "MS1"), (585, "7"))
    last = yield wait_until(lambda: acme.find("from_app", er(t584="MS1", t912="Y")), "mass status")
    assert last.fields[911] == "2"
    send(acme, "F", (41, "NOPE"), (11, "X1"), (55, "BTC-PERP"), (54, "2"), (60, TS))
    cxl = yield wait_until(lambda: acme.find("from_app", is_type("9", t11="X1")), "cancel reject")
    assert cxl.fields[102] == "1" and cxl.fields[434] == "1"
    send(acme, "F", (41, "S3"), (11, "X2"), (55, "BTC-PERP"), (54, "2"), (60, TS))
    yield wait_until(lambda: acme.find("from_app", er(t11="X2", t150="4", t41="S3")), "cancel")
    send(acme, "q", (11, "MC1"), (530, "7"), (60, TS))
    report = yield wait_until(lambda: acme.find("from_app", is_type("r", t11="MC1")), "mass cxl")
    assert report.fields[531] == "7" and report.fields[533] == "1"
    clean(acme, beta, dc)
    for c in (acme, beta, dc):
        yield threads.deferToThread(c.stop)


@pytest_twisted.inlineCallbacks
def test_every_reject_reason_is_an_answer_quickfix_accepts(exchange, quickfix_client):
    """Unknown symbol (103=1), off-tick price (99), off-lot and missing quantity (13),
    foreign account (15), duplicate ClOrdID (6), MaxOpenOrders (99), drop copy trading
    (380=3), and PossResend of a used ClOrdID (no answer)."""
    server = exchange()
    acme, dc = clients(server, quickfix_client, "ACME1", "ACMEDC")
    for c in (acme, dc):
        yield wait_until(lambda c=c: c.find("logon"), "logon")
    send(acme, "D", (11, "R1"), (1, "A1"), (55, "DOGE-PERP"), (54, "1"), (60, TS), (38, "1"),
         (40, "2"), (44, "1"))
    order(acme, "R2", "1", "0.002", "60000.05")
    order(acme, "R3", "1", "0.0005")
    send(acme, "D", (11, "R4"), (1, "A1"), (55, "BTC-PERP"), (54, "1"), (60, TS), (40, "2"),
         (44, "60000"))
    order(acme, "R5", "1", "0.002", "60000", "B1")
    expected = {"R1": "1", "R2": "99", "R3": "13", "R4": "13", "R5": "15"}
    for cl, reason in expected.items():
        got = yield wait_until(lambda cl=cl: acme.find("from_app", er(t11=cl, t150="8")), cl)
        assert got.fields[103] == reason and got.fields[58], got
    for n in range(3):
        order(acme, f"M{n}", "1", "0.001", "59000")
    yield wait_until(lambda: acme.find("from_app", er(t11="M2", t150="0")), "M2 accepted")
    order(acme, "M3", "1", "0.001", "59000")
    refused = yield wait_until(lambda: acme.find("from_app", er(t11="M3", t150="8")), "M3")
    assert "MaxOpenOrders 3" in refused.fields[58]
    order(acme, "M0", "1", "0.001", "59000")
    dup = yield wait_until(lambda: acme.find("from_app", er(t11="M0", t150="8")), "duplicate")
    assert dup.fields[103] == "6"
    mark = len(acme.history)
    order(acme, "M1", "1", "0.001", "59000", "A1", (97, "Y"))
    order(dc, "DC1")
    bmr = yield wait_until(lambda: dc.find("from_app", is_type("j")), "drop copy BMR")
    assert bmr.fields[380] == "3"
    order(acme, "LAST", "1", "0.001", "59000")  # refused (MaxOpenOrders): a marker
    yield wait_until(lambda: acme.find("from_app", er(t11="LAST"), start=mark), "marker")
    assert acme.find("from_app", er(t11="M1"), start=mark) is None, "PossResend was answered"
    clean(acme, dc)
    for c in (acme, dc):
        yield threads.deferToThread(c.stop)


@pytest_twisted.inlineCallbacks
def test_stop_order_triggers_with_exec_type_l(exchange, quickfix_client):
    """A stop (40=3, StopPx) is acknowledged, then ExecType L when triggered, then filled
    (the client loads the exchange dictionary, where 150=L is defined)."""
    server = exchange()
    acme, beta = clients(server, quickfix_client, "ACME1", "BETA1", dictionary=spec_path())
    for c in (acme, beta):
        yield wait_until(lambda c=c: c.find("logon"), "logon")
    send(acme, "D", (11, "ST"), (1, "A1"), (55, "BTC-PERP"), (54, "1"), (60, TS),
         (38, "0.001"), (40, "3"), (99, "60010"))
    yield wait_until(lambda: acme.find("from_app", er(t11="ST", t150="0")), "stop accepted")
    order(beta, "S1", "2", "0.003", "60010", "B1")
    order(acme, "T1", "1", "0.001", "60010")
    yield wait_until(lambda: acme.find("from_app", er(t11="ST", t150="L")), "trigger")
    yield wait_until(lambda: acme.find("from_app", er(t11="ST", t150="F", t39="2")), "fill")
    clean(acme, beta)
    for c in (acme, beta):
        yield threads.deferToThread(c.stop)


@pytest_twisted.inlineCallbacks
def test_throttle_answers_business_reject_380_8(exchange, quickfix_client):
    """Messages over ThrottleRate get BusinessMessageReject 380=8 and are not processed
    (the client loads the exchange dictionary, where 380=8 is defined)."""
    server = exchange(acme="ThrottleRate=3")
    (acme,) = clients(server, quickfix_client, "ACME1", dictionary=spec_path())
    yield wait_until(lambda: acme.find("logon"), "logon")
    for n in range(5):
        order(acme, f"T{n}", "1", "0.001", "59000")
    bmr = yield wait_until(lambda: acme.find("from_app", is_type("j", t380="8")), "throttle")
    assert "Throttle" in bmr.fields[58] and bmr.fields[372] == "D"
    yield wait_until(lambda: acme.find("from_app", er(t11="T0", t150="0")), "T0 accepted")
    clean(acme)
    yield threads.deferToThread(acme.stop)


@pytest_twisted.inlineCallbacks
def test_kill_switch_and_cancel_on_disconnect(exchange, quickfix_client):
    """The kill switch (HTTP admin) cancels the firm's orders (Text says so), refuses new ones
    until lifted, and is journaled; CancelOnDisconnect cancels the session's orders when it
    logs out, with Text saying why."""
    server = exchange(acme="CancelOnDisconnect=Y")
    acme, dc = clients(server, quickfix_client, "ACME1", "ACMEDC")
    for c in (acme, dc):
        yield wait_until(lambda c=c: c.find("logon"), "logon")
    order(acme, "T0", "1", "0.001", "59000")
    yield wait_until(lambda: acme.find("from_app", er(t11="T0", t150="0")), "T0 accepted")
    port = server.http_port.getHost().port
    url = f"http://127.0.0.1:{port}/admin/kill-switch?firm=ACME&active=1"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = yield threads.deferToThread(
        lambda: urllib.request.urlopen(urllib.request.Request(url, method="POST", headers=auth),
                                       timeout=10).read())
    answer = json.loads(body)
    assert answer["active"] is True and answer["canceled"] == 1 and answer["killed"] == ["ACME"]
    canceled = yield wait_until(lambda: acme.find("from_app", er(t11="T0", t150="4")),
                                "kill cancel")
    assert canceled.fields[58] == "canceled by the firm's kill switch"
    # journaled: the engine itself holds the switch (and rejects the firm's orders)
    assert server.application.pipeline.engine.killed == {"ACME": ("A1",)}
    order(acme, "K1", "1", "0.001", "59000")
    refused = yield wait_until(lambda: acme.find("from_app", er(t11="K1", t150="8")), "K1")
    assert refused.fields[58] == "kill switch active for firm ACME"
    yield threads.deferToThread(
        lambda: urllib.request.urlopen(urllib.request.Request(
            url.replace("active=1", "active=0"), method="POST", headers=auth), timeout=10).read())
    order(acme, "K2", "1", "0.001", "59000")
    yield wait_until(lambda: acme.find("from_app", er(t11="K2", t150="0")), "K2 accepted")
    yield threads.deferToThread(acme.stop)
    cod = yield wait_until(lambda: dc.find("from_app", er(t11="K2", t150="4")),
                           "cancel-on-disconnect seen on the drop copy")
    assert "disconnect" in cod.fields[58]
    clean(acme, dc)
    yield threads.deferToThread(dc.stop)


@pytest_twisted.inlineCallbacks
def test_cancel_on_disconnect_set_at_logon_by_tag_7929(exchange, quickfix_client):
    """CancelOnDisconnect=Y (7929) on the Logon turns cancel-on-disconnect on for a session
    configured without it: its resting orders are canceled when it disconnects."""
    server = exchange()
    port = server.fix_port.getHost().port
    acme = quickfix_client(port, sender="ACME1", logon_fields={7929: "Y"})
    (dc,) = clients(server, quickfix_client, "ACMEDC")
    acme.start()
    for c in (acme, dc):
        yield wait_until(lambda c=c: c.find("logon"), "logon")
    order(acme, "C1", "1", "0.001", "59000")
    yield wait_until(lambda: acme.find("from_app", er(t11="C1", t150="0")), "C1 accepted")
    yield threads.deferToThread(acme.stop)
    canceled = yield wait_until(lambda: dc.find("from_app", er(t11="C1", t150="4")),
                                "cancel-on-disconnect from the Logon's 7929 on the drop copy")
    assert canceled.fields[39] == "4"
    clean(acme, dc)
    yield threads.deferToThread(dc.stop)
