"""A real QuickFIX initiator (validating with its FIX44.xml) against the server over loopback."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import threads

from .conftest import free_port, server_config_text, wait_until
from .qf_client import Event

pytestmark = pytest.mark.integration


def _assert_nothing_rejected(client) -> None:
    assert client.rejects() == [], f"QuickFIX sent or received a Reject: {client.rejects()}"
    assert client.logged_rejects() == [], f"QuickFIX logged rejects: {client.logged_rejects()}"


def _is(msg_type: str, **tags: str):
    def predicate(event: Event) -> bool:
        return event.msg_type == msg_type and all(
            event.fields.get(int(tag[1:])) == value for tag, value in tags.items()
        )

    return predicate


@pytest_twisted.inlineCallbacks
def test_quickfix_answers_server_test_requests(inprocess_server, quickfix_client):
    """The server's TestRequests (sent after half a HeartBtInt of client silence here) are
    answered by QuickFIX with Heartbeats carrying the TestReqID; nothing is rejected."""
    server = inprocess_server(settings_overrides={"test_request_delay_multiplier": 0.5})
    client = quickfix_client(server.fix_port.getHost().port, heartbeat=1)
    client.start()
    yield wait_until(lambda: client.find("logon"), "the QuickFIX logon")
    test_request = yield wait_until(
        lambda: client.find("from_admin", _is("1")), "a TestRequest from the server"
    )
    yield wait_until(
        lambda: client.find("to_admin", _is("0", t112=test_request.fields[112])),
        "QuickFIX's Heartbeat answering the server's TestRequest",
    )
    yield threads.deferToThread(client.stop)
    assert server.sessions[0].connection is None
    _assert_nothing_rejected(client)


@pytest_twisted.inlineCallbacks
def test_logon_heartbeats_test_request_resend_and_logout(inprocess_server, quickfix_client):
    """Logon, heartbeats both ways, a TestRequest answered, an app message rejected with
    380=3, logout, messages sent while away resent with PossDupFlag on reconnect, logout."""
    server = inprocess_server()
    session = server.sessions[0]
    client = quickfix_client(server.fix_port.getHost().port, heartbeat=1)
    client.start()

    yield wait_until(lambda: client.find("logon"), "the QuickFIX logon")
    yield wait_until(
        lambda: client.find("from_admin", lambda e: e.msg_type == "0" and 112 not in e.fields),
        "a Heartbeat from the server",
    )
    yield wait_until(lambda: client.find("to_admin", _is("0")), "a Heartbeat from QuickFIX")
    client.send_test_request("CLIENT-TR-1")
    yield wait_until(
        lambda: client.find("from_admin", _is("0", t112="CLIENT-TR-1")),
        "the server's Heartbeat answering QuickFIX's TestRequest",
    )
    client.send_new_order("ORDER-1")
    order = yield wait_until(lambda: client.find("to_app", _is("D")), "the order going out")
    reject = yield wait_until(
        lambda: client.find("from_app", _is("j")), "BusinessMessageReject for the order"
    )
    assert reject.fields[380] == "3" and reject.fields[372] == "D"
    assert reject.fields[45] == str(order.seq)

    # Log out, then the server sends two application messages while the client is away.
    mark = len(client.history)
    client.logout("going away")
    yield wait_until(lambda: client.find("logout", start=mark), "the QuickFIX logout")
    yield wait_until(lambda: session.connection is None, "the server to unbind the session")
    away = [
        session.send("j", [(45, 1), (372, "D"), (380, 3), (58, f"while away {i}")], server.now_ns())
        for i in range(2)
    ]

    mark = len(client.history)
    client.logon()
    yield wait_until(lambda: client.find("logon", start=mark), "the QuickFIX re-logon")
    resend_request = yield wait_until(
        lambda: client.find("to_admin", _is("2"), start=mark), "QuickFIX's ResendRequest"
    )
    assert int(resend_request.fields[7]) <= away[0]
    for seq in away:
        resent = yield wait_until(
            lambda seq=seq: client.find("from_app", lambda e: e.seq == seq, start=mark),
            f"the resent message {seq}",
        )
        assert resent.fields.get(43) == "Y" and 122 in resent.fields, resent
        assert resent.fields[58].startswith("while away")

    # A clean logout: QuickFIX's stop() waits for our Logout reply (off the reactor thread).
    mark = len(client.history)
    yield threads.deferToThread(client.stop)
    assert client.find("from_admin", _is("5"), start=mark), client.history[mark:]
    yield wait_until(lambda: not server.host.protocols, "the server to close the connection")
    _assert_nothing_rejected(client)


@pytest.mark.slow
def test_server_sigkill_restart_keeps_sequence_numbers(tmp_path, server_process, quickfix_client):
    """kill -9 the server subprocess, restart it: QuickFIX logs on again with sequence numbers
    continuing on both sides (no reset, no 'MsgSeqNum too low'); then SIGTERM logs it out
    cleanly; nothing is rejected."""
    port = free_port()
    server = server_process(server_config_text(port, str(tmp_path / "server-store")))
    server.start(port)
    client = quickfix_client(port, heartbeat=1)
    client.start()
    first_logon = client.wait_for("from_admin", _is("A"), what="the server's Logon")
    client.wait_for("logon", what="QuickFIX logged on")
    client.send_test_request("BEFORE-KILL")
    client.wait_for("from_admin", _is("0", t112="BEFORE-KILL"), what="the TestRequest answer")
    client.send_new_order("ORDER-BEFORE")
    client.wait_for("from_app", _is("j"), what="the BusinessMessageReject before the kill")
    client.poll()
    last_server_seq = max(e.seq for e in client.history if e.kind.startswith("from_"))
    last_client_seq = max(e.seq for e in client.history if e.kind.startswith("to_"))

    server.kill9()
    mark = len(client.history)
    client.wait_for("logout", start=mark, what="QuickFIX noticing the disconnect")
    server.start(port)

    mark = len(client.history)
    logon_out = client.wait_for("to_admin", _is("A"), start=mark, what="QuickFIX's new Logon")
    logon_in = client.wait_for("from_admin", _is("A"), start=mark, what="the restarted Logon")
    client.wait_for("logon", start=mark, what="QuickFIX logged on again")
    assert logon_out.seq > last_client_seq and 141 not in logon_out.fields
    assert logon_in.seq > last_server_seq >= first_logon.seq, (logon_in, last_server_seq)
    assert 141 not in logon_in.fields, "the server reset its sequence numbers"
    # QuickFIX's logon attempts while the server was down used sequence numbers, so the server
    # may ask for a resend first (answered with a gap fill, which would also cover an admin
    # message sent meanwhile): wait for the server's first heartbeat after that exchange.
    client.wait_for(
        "from_admin",
        lambda e: e.msg_type == "0" and e.seq > logon_in.seq,
        start=mark,
        what="a server heartbeat after the restart",
    )
    client.send_test_request("AFTER-RESTART")
    client.wait_for("from_admin", _is("0", t112="AFTER-RESTART"), what="an answer after restart")

    # SIGTERM: a clean shutdown logs the connected client out and waits for its reply.
    shutdown_mark = len(client.history)
    assert server.terminate() == 0, server.log()
    logout = client.wait_for("from_admin", _is("5"), start=shutdown_mark, what="shutdown Logout")
    assert logout.fields.get(58) == "server shutting down"
    client.wait_for("to_admin", _is("5"), start=shutdown_mark, what="QuickFIX's Logout reply")
    assert "fix.stopped" in server.log()
    client.stop(force=True)
    client.poll()
    logouts = [e for e in client.history[mark:] if e.kind == "from_admin" and e.msg_type == "5"]
    assert all("too low" not in e.fields.get(58, "") for e in logouts), logouts
    _assert_nothing_rejected(client)


@pytest_twisted.inlineCallbacks
def test_quickfix_with_a_wrong_password_then_the_right_one_logs_on_in_sequence(
    inprocess_server, quickfix_client
):
    """Refused Logons (wrong password) get no answer and use no sequence number: when
    QuickFIX then sends the right password, the server's Logon is MsgSeqNum 1, QuickFIX
    accepts it (no 'MsgSeqNum too low') and nothing is rejected."""
    server = inprocess_server(extra="Password=s3cret\n")
    session = server.sessions[0]
    client = quickfix_client(server.fix_port.getHost().port, logon_fields={554: "wrong"})
    client.start()

    def logons_sent() -> int:
        client.poll()
        return len([e for e in client.history if e.kind == "to_admin" and e.msg_type == "A"])

    yield wait_until(lambda: logons_sent() >= 2, "QuickFIX retrying after its refused Logon")
    assert not client.find("from_admin"), "a refused Logon was answered"
    assert (session.store.next_sender_seq(), session.store.next_target_seq()) == (1, 1)
    client.set_logon_field(554, "s3cret")
    yield wait_until(lambda: client.find("logon"), "the QuickFIX logon with the right password")
    logon = client.find("from_admin", _is("A"))
    assert logon is not None and logon.seq == 1, logon
    client.send_test_request("AFTER-REFUSALS")
    yield wait_until(
        lambda: client.find("from_admin", _is("0", t112="AFTER-REFUSALS")),
        "the answer to a TestRequest after the refusals",
    )
    yield threads.deferToThread(client.stop)
    logouts = [e for e in client.history if e.msg_type == "5"]
    assert all("too low" not in e.fields.get(58, "") for e in logouts), logouts
    _assert_nothing_rejected(client)
