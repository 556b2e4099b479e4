"""Session layer: answering ResendRequests (test cases 8, 20) and outbound sequencing."""

from __future__ import annotations

import pytest

from fixserver.codec import FixMessage
from tests.fixserver.session_helpers import Peer, summary, ts


def logged_on() -> Peer:
    peer = Peer()
    peer.logon()
    peer.take_events()
    return peer


def send_app(peer: Peer, cl_ord_id: bytes) -> None:
    peer.session.send("8", [(11, cl_ord_id), (37, b"O")], peer.now)


def admin(peer: Peer) -> None:
    peer.send(b"1", [(112, b"HELLO")])  # our Heartbeat reply uses one sender seqnum


def resend(peer: Peer, begin: int, end: int) -> list[FixMessage]:
    peer.send(b"2", [(7, begin), (16, end)])
    return peer.received()


def shape(msgs: list[FixMessage]) -> list[tuple]:
    return [summary(m, 43, 36, 123, 11) for m in msgs]


def build_history(peer: Peer) -> None:
    """Ours: 1 Logon, 2-4 admin, 5-6 app, 7-8 admin, 9 app."""
    for _ in range(3):
        admin(peer)
    send_app(peer, b"A5")
    send_app(peer, b"A6")
    admin(peer)
    admin(peer)
    send_app(peer, b"A9")
    peer.received()


def test_8_only_admin_messages_requested_one_gap_fill():
    """A range of admin messages is answered by a single SequenceReset-GapFill."""
    peer = logged_on()
    build_history(peer)
    assert shape(resend(peer, 2, 4)) == [("4", 2, "Y", "5", "Y", None)]


def test_8_admin_and_application_messages_mixed():
    """Admin runs become gap fills; app messages are resent with PossDupFlag=Y."""
    peer = logged_on()
    build_history(peer)
    assert shape(resend(peer, 2, 9)) == [
        ("4", 2, "Y", "5", "Y", None),
        ("8", 5, "Y", None, None, "A5"),
        ("8", 6, "Y", None, None, "A6"),
        ("4", 7, "Y", "9", "Y", None),
        ("8", 9, "Y", None, None, "A9"),
    ]


def test_8_end_seq_no_zero_means_infinity_and_trailing_admin_gap_filled():
    """EndSeqNo=0 resends through our last message; a trailing admin run is gap filled."""
    peer = logged_on()
    build_history(peer)
    admin(peer)  # 10
    peer.received()
    out = resend(peer, 5, 0)
    assert shape(out) == [
        ("8", 5, "Y", None, None, "A5"),
        ("8", 6, "Y", None, None, "A6"),
        ("4", 7, "Y", "9", "Y", None),
        ("8", 9, "Y", None, None, "A9"),
        ("4", 10, "Y", "11", "Y", None),
    ]


def test_8_end_seq_no_beyond_last_sent_is_clamped():
    """EndSeqNo beyond what we sent is treated as our last message."""
    peer = logged_on()
    build_history(peer)
    assert shape(resend(peer, 9, 500)) == [("8", 9, "Y", None, None, "A9")]


def test_8_resent_message_keeps_seqnum_and_original_sending_time():
    """A resent message: same MsgSeqNum and body, 122 = original 52, new 52, header order."""
    peer = logged_on()
    send_app(peer, b"X")
    (original,) = peer.received()
    peer.now += 5_000_000_000
    (again,) = resend(peer, 2, 2)
    assert again.get(34) == original.get(34) and again.get(122) == original.get(52)
    assert again.get(52) != original.get(52)
    assert [t for t, _ in again.fields] == [8, 9, 35, 34, 43, 49, 52, 56, 122, 11, 37, 10]


def test_8_sequence_numbers_continue_after_resend():
    """Resends and gap fills use no new sequence numbers."""
    peer = logged_on()
    build_history(peer)
    resend(peer, 1, 0)
    admin(peer)
    assert [summary(m) for m in peer.received()] == [("0", 10)]


def test_20_resend_request_with_too_high_seqnum_answered_then_gap_recovered():
    """A ResendRequest beyond the expected seqnum is answered and our own gap requested once."""
    peer = logged_on()
    send_app(peer, b"A2")
    send_app(peer, b"A3")
    peer.send(b"0")
    peer.send(b"0")
    peer.received()
    peer.send(b"0", seq=7)
    assert [summary(m, 7, 16) for m in peer.received()] == [("2", 4, "4", "0")]
    peer.send(b"2", [(7, 2), (16, 3)], seq=8)
    assert shape(peer.received()) == [
        ("8", 2, "Y", None, None, "A2"),
        ("8", 3, "Y", None, None, "A3"),
    ]
    for seq in (4, 5, 6):
        peer.send(b"0", seq=seq, header=[(43, b"Y"), (122, ts(peer.now))])
    assert peer.received() == []  # queued 7 and the answered 8 just take their places
    assert peer.session.store.next_target_seq() == 9


def test_20_queued_resend_request_takes_its_place_without_second_answer():
    """When the gap closes, the queued ResendRequest only advances the expected seqnum."""
    peer = logged_on()
    send_app(peer, b"A2")
    peer.received()
    peer.send(b"2", [(7, 2), (16, 2)], seq=3)
    peer.received()
    peer.send(b"0", seq=2)
    assert peer.received() == []
    assert peer.session.store.next_target_seq() == 4


def test_resend_request_too_low_still_answered():
    """A ResendRequest whose MsgSeqNum is too low is still answered (QuickFIX behaviour)."""
    peer = logged_on()
    send_app(peer, b"A2")
    peer.received()
    peer.send(b"0")
    peer.send(b"2", [(7, 2), (16, 0)], seq=2)
    assert shape(peer.received()) == [("8", 2, "Y", None, None, "A2")]
    assert not peer.conn.should_close


def test_messages_sent_while_logged_off_are_stored_and_resent():
    """Session.send while nobody is logged on stores the message for the peer's resend."""
    peer = Peer()
    assert peer.session.send("8", [(11, b"OFF")], peer.now) == 1
    out = peer.logon(seq=1)
    assert [summary(m) for m in out] == [("A", 2)]
    assert shape(resend(peer, 1, 0)) == [
        ("8", 1, "Y", None, None, "OFF"),
        ("4", 2, "Y", "3", "Y", None),
    ]


def test_session_send_refuses_admin_message_types():
    """Admin messages are the session layer's; Session.send raises for them."""
    peer = logged_on()
    with pytest.raises(ValueError):
        peer.session.send("0", [], peer.now)
