"""EchoApplication (conformance mode): echoes as QuickFIX's acceptance-test server does."""

from __future__ import annotations

from fixserver.application import UnsupportedMessageApplication
from fixserver.codec import FixMessage
from fixserver.config import ConfigError, parse_config
from fixserver.echo_application import EchoApplication
from fixserver.session_events import ApplicationMessageReceived
from tests.fixserver.session_helpers import Peer, body_tags

ORDER = [(11, "id"), (21, "3"), (40, "1"), (54, "1"), (55, "MSFT"), (60, "20240102-12:00:00")]


def deliver(peer: Peer, app: object) -> list[FixMessage]:
    """Hand the peer's application events to ``app``; the server's replies."""
    for event in peer.take_events():
        if isinstance(event, ApplicationMessageReceived):
            app.on_message(event.session, event.message, peer.now)  # type: ignore[attr-defined]
    return peer.received()


def logged_on_peer() -> Peer:
    peer = Peer(reset_on_logon=True)
    peer.logon()
    peer.take_events()
    return peer


def test_new_order_single_is_echoed_with_body_in_ascending_tag_order():
    """A NewOrderSingle comes back as our own D: new header, body sorted by tag."""
    peer = logged_on_peer()
    app = EchoApplication()
    peer.send(b"D", [(55, "MSFT"), (11, "id"), (60, "20240102-12:00:00"), (21, "3"), *ORDER[2:4]])
    [echo] = deliver(peer, app)
    assert echo.msg_type == b"D" and echo.get(49) == b"ISLD" and echo.get(56) == b"TW44"
    assert body_tags(echo) == [8, 9, 35, 34, 49, 52, 56, 11, 21, 40, 54, 55, 60, 10]


def test_poss_resend_order_already_seen_is_dropped_and_unseen_one_echoed():
    """97=Y with a ClOrdID seen on this logon is ignored; a new ClOrdID with 97=Y is echoed."""
    peer = logged_on_peer()
    app = EchoApplication()
    peer.send(b"D", ORDER)
    assert len(deliver(peer, app)) == 1
    peer.send(b"D", ORDER, header=[(97, "Y")])
    assert deliver(peer, app) == []
    peer.send(b"D", [(11, "other"), *ORDER[1:]], header=[(97, "Y")])
    [echo] = deliver(peer, app)
    assert echo.get(97) == b"Y" and echo.get(11) == b"other"


def test_seen_client_order_ids_are_forgotten_on_a_new_connection():
    """After a reconnect and logon, a PossResend order with an old ClOrdID is echoed again."""
    peer = logged_on_peer()
    app = EchoApplication()
    peer.send(b"D", ORDER)
    assert len(deliver(peer, app)) == 1
    peer.send(b"5")
    peer.received()
    peer.reconnect()
    peer.seq = 1
    peer.logon()  # ResetOnLogon: both sides start again at 1
    peer.take_events()
    peer.received()
    peer.send(b"D", ORDER, header=[(97, "Y")])
    assert [m.msg_type for m in deliver(peer, app)] == [b"D"]


def test_on_logout_forgets_seen_client_order_ids():
    """The host's logout hook clears the session's ClOrdIDs too."""
    peer = logged_on_peer()
    app = EchoApplication()
    peer.send(b"D", ORDER)
    deliver(peer, app)
    app.on_logout(peer.session, peer.now)
    peer.send(b"D", ORDER, header=[(97, "Y")])
    assert len(deliver(peer, app)) == 1


def test_security_definition_keeps_repeating_group_entries_after_their_count():
    """A group's entries stay behind its count field when the body is sorted."""
    peer = logged_on_peer()
    app = EchoApplication()
    body = [(320, "R1"), (322, "S1"), (323, "1"), (55, "X"), (555, 2)]
    body += [(600, "A"), (624, "1"), (600, "B"), (624, "2")]
    peer.send(b"d", body)
    [echo] = deliver(peer, app)
    tags = body_tags(echo)
    assert tags[7:] == [55, 320, 322, 323, 555, 600, 624, 600, 624, 10]


def test_possdup_and_orig_sending_time_are_not_echoed():
    """43 and 122 of the inbound header do not reach the echo (QuickFIX's send drops them)."""
    peer = logged_on_peer()
    app = EchoApplication()
    header = [(43, "Y"), (122, "20240102-11:59:59")]
    peer.send(b"C", [(164, "e1"), (94, "0"), (147, "hi"), (33, 1), (58, "x")], header=header)
    [echo] = deliver(peer, app)
    assert echo.msg_type == b"C" and 43 not in echo and 122 not in echo
    assert body_tags(echo)[7:] == [33, 58, 94, 147, 164, 10]


def test_other_application_messages_get_business_reject_in_suite_field_order():
    """Types the test server has no handler for: 35=j with 45, 58, 372, 380=3 in that order."""
    for app in (EchoApplication(), UnsupportedMessageApplication()):
        peer = logged_on_peer()
        peer.send(b"B", [(148, "headline"), (33, 1), (58, "x")])
        replies = deliver(peer, app)
        peer.send(b"B", [(33, 1), (58, "x")])  # Headline missing: the session rejects it
        replies += deliver(peer, app)
        assert [r.msg_type for r in replies] == [b"j", b"3"]
        assert body_tags(replies[0])[7:] == [45, 58, 372, 380, 10]
        assert replies[0].get(380) == b"3" and replies[0].get(372) == b"B"


def test_config_application_key_selects_echo_and_rejects_unknown_values():
    """Application=echo in [DEFAULT] is parsed; the default is exchange; others are errors."""
    base = "[DEFAULT]\nSocketAcceptPort=0\nSenderCompID=ISLD\n{extra}\n[SESSION]\n"
    base += "BeginString=FIX.4.4\nTargetCompID=TW44\n"
    assert parse_config(base.format(extra="")).application == "exchange"
    assert parse_config(base.format(extra="Application=Echo")).application == "echo"
    try:
        parse_config(base.format(extra="Application=mirror"))
    except ConfigError as exc:
        assert "Application" in str(exc)
    else:
        raise AssertionError("Application=mirror was accepted")
