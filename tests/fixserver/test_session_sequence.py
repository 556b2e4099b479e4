"""Session layer: inbound MsgSeqNum handling, PossDup, SequenceReset (test cases 2a-2g, 10, 11)."""

from __future__ import annotations

from fixserver.session_events import ApplicationMessageReceived, GarbledMessageIgnored
from tests.fixserver.session_helpers import SECOND, Peer, summary, ts

ORDER = [(11, b"ID"), (21, b"3"), (40, b"1"), (54, b"1"), (55, b"INTC"), (60, b"20240102-12:00:00")]


def logged_on(**settings) -> Peer:
    peer = Peer(**settings)
    peer.logon()
    peer.take_events()
    return peer


def app_seqs(peer: Peer) -> list[int | None]:
    return [
        e.message.get_int(34)
        for e in peer.take_events()
        if isinstance(e, ApplicationMessageReceived)
    ]


def test_2a_msgseqnum_correct_accepted():
    """Messages with the expected MsgSeqNum are accepted and the expected number advances."""
    peer = logged_on()
    for _ in range(4):
        peer.send(b"0")
    assert peer.received() == []
    assert peer.session.store.next_target_seq() == 6


def test_2b_msgseqnum_higher_than_expected_sends_resend_request():
    """A gap triggers one ResendRequest (BeginSeqNo=expected, EndSeqNo=0)."""
    peer = logged_on()
    peer.send(b"0")
    peer.send(b"D", ORDER, seq=10)
    peer.send(b"0", seq=11)
    assert [summary(m, 7, 16) for m in peer.received()] == [("2", 2, "3", "0")]


def test_2b_queued_messages_processed_in_order_once_gap_filled():
    """Out-of-order messages are queued and delivered in sequence once the gap is filled."""
    peer = logged_on()
    peer.send(b"D", ORDER, seq=4)
    peer.send(b"D", ORDER, seq=5)
    peer.received()
    assert app_seqs(peer) == []
    peer.send(b"D", ORDER, seq=2)
    assert app_seqs(peer) == [2]
    peer.send(b"D", ORDER, seq=3)
    assert app_seqs(peer) == [3, 4, 5]
    assert peer.session.store.next_target_seq() == 6


def test_2c_msgseqnum_lower_than_expected_logout_names_both_numbers_then_disconnect():
    """Too low without PossDupFlag: Logout 'expecting X but received Y', then disconnect."""
    peer = logged_on()
    for _ in range(3):
        peer.send(b"0")
    peer.send(b"0", seq=2)
    out = peer.received()
    assert [summary(m, 58) for m in out] == [
        ("5", 2, "MsgSeqNum too low, expecting 5 but received 2")
    ]
    assert peer.conn.should_close


def test_2d_garbled_message_ignored_without_consuming_seqnum():
    """A garbled message is ignored; the same MsgSeqNum is then accepted."""
    peer = logged_on()
    raw = peer.build(b"0", seq=2)
    peer.feed(raw[:-4] + b"000\x01")  # bad CheckSum
    assert any(isinstance(e, GarbledMessageIgnored) for e in peer.take_events())
    peer.send(b"1", [(112, b"X")], seq=2)
    assert [summary(m, 112) for m in peer.received()] == [("0", 2, "X")]


def test_2e_possdup_already_received_ignored():
    """A PossDupFlag=Y message with a seqnum already received is ignored."""
    peer = logged_on()
    peer.send(b"0")
    peer.send(b"1", [(112, b"X")], seq=2, header=[(43, b"Y"), (122, ts(peer.now))])
    assert peer.received() == []
    assert peer.session.store.next_target_seq() == 3


def test_2e_possdup_not_yet_received_processed():
    """A PossDupFlag=Y message with the expected seqnum is processed normally."""
    peer = logged_on()
    peer.send(b"D", ORDER, header=[(43, b"Y"), (122, ts(peer.now - SECOND))])
    assert app_seqs(peer) == [2]


def test_2f_possdup_origsendingtime_after_sendingtime_reject_10_and_logout():
    """OrigSendingTime later than SendingTime: Reject 373=10 (RefSeqNum, RefMsgType), Logout."""
    peer = logged_on()
    peer.send(b"D", ORDER)
    peer.send(b"D", ORDER)
    peer.send(b"D", ORDER, seq=2, header=[(43, b"Y"), (122, ts(peer.now + 10 * SECOND))])
    out = peer.received()
    assert [summary(m, 45, 58, 371, 372, 373) for m in out] == [
        ("3", 2, "2", "SendingTime accuracy problem", None, "D", "10"),
        ("5", 3, None, None, None, None, None),
    ]


def test_2g_possdup_without_origsendingtime_reject_1_reftag_122():
    """PossDupFlag=Y without OrigSendingTime: Reject 373=1 371=122; no seqnum consumed."""
    peer = logged_on()
    peer.send(b"D", ORDER)
    peer.send(b"D", ORDER)
    peer.send(b"D", ORDER, seq=2, header=[(43, b"Y")])
    assert [summary(m, 45, 371, 372, 373) for m in peer.received()] == [
        ("3", 2, "2", "122", "D", "1")
    ]
    peer.send(b"1", [(112, b"X")])
    assert [summary(m, 112) for m in peer.received()] == [("0", 3, "X")]


def test_2g_in_sequence_possdup_without_origsendingtime_rejected_and_consumed():
    """An in-sequence PossDupFlag=Y message lacking 122 is rejected and uses its seqnum."""
    peer = logged_on()
    peer.send(b"D", ORDER, header=[(43, b"Y")])
    assert [summary(m, 45, 371, 373) for m in peer.received()] == [("3", 2, "2", "122", "1")]
    assert peer.session.store.next_target_seq() == 3
    assert app_seqs(peer) == []


def test_10_gap_fill_with_expected_seqnum_moves_expected():
    """SequenceReset-GapFill at the expected seqnum sets the next expected to NewSeqNo."""
    peer = logged_on()
    peer.send(b"4", [(36, 20), (123, b"Y")])
    assert peer.session.store.next_target_seq() == 20


def test_10_gap_fill_too_high_triggers_resend_request():
    """A GapFill beyond the expected seqnum is queued and a ResendRequest is sent."""
    peer = logged_on()
    peer.send(b"4", [(36, 20), (123, b"Y")], seq=10)
    assert [summary(m, 7, 16) for m in peer.received()] == [("2", 2, "2", "0")]
    peer.send(b"1", [(112, b"X")], seq=20)
    assert peer.received() == []  # the outstanding request covers it


def test_10_gap_fill_too_low_without_possdup_logs_out():
    """A GapFill with a too-low seqnum and no PossDupFlag gets the too-low Logout."""
    peer = logged_on()
    peer.send(b"0")
    peer.send(b"4", [(36, 20), (123, b"Y")], seq=1)
    assert [summary(m, 58) for m in peer.received()] == [
        ("5", 2, "MsgSeqNum too low, expecting 3 but received 1")
    ]


def test_10_gap_fill_too_low_with_possdup_ignored():
    """A GapFill with a too-low seqnum and PossDupFlag=Y is ignored."""
    peer = logged_on()
    peer.send(b"4", [(36, 20), (123, b"Y")], seq=1, header=[(43, b"Y"), (122, ts(peer.now))])
    assert peer.received() == [] and peer.session.store.next_target_seq() == 2


def test_11a_sequence_reset_mode_ignores_msgseqnum_and_sets_expected():
    """SequenceReset-Reset (no GapFill) sets the expected seqnum whatever its own MsgSeqNum."""
    peer = logged_on()
    peer.send(b"4", [(36, 25)], seq=0)
    assert peer.session.store.next_target_seq() == 25
    peer.send(b"4", [(36, 50), (123, b"N")], seq=0)
    assert peer.session.store.next_target_seq() == 50


def test_11b_sequence_reset_equal_to_expected_changes_nothing():
    """SequenceReset with NewSeqNo equal to the expected seqnum is accepted as a no-op."""
    peer = logged_on()
    peer.send(b"4", [(36, 2)], seq=0)
    assert peer.received() == [] and peer.session.store.next_target_seq() == 2


def test_11c_sequence_reset_newseqno_lower_rejected_373_5():
    """SequenceReset with NewSeqNo below the expected seqnum: Reject 373=5, RefMsgType 4."""
    peer = logged_on()
    peer.send(b"4", [(36, 1)], seq=0)
    out = peer.received()
    assert [summary(m, 45, 58, 372, 373) for m in out] == [
        ("3", 2, "0", "Value is incorrect (out of range) for this tag", "4", "5")
    ]
    assert peer.session.store.next_target_seq() == 2


def test_7_received_reject_consumes_seqnum():
    """An inbound session Reject is accepted and consumes its seqnum, no reply."""
    peer = logged_on()
    peer.send(b"3", [(45, 1)])
    assert peer.received() == [] and peer.session.store.next_target_seq() == 3


def test_queue_is_bounded(monkeypatch):
    """Out-of-order messages beyond the queue bound are dropped (they will be resent)."""
    monkeypatch.setattr("fixserver.session.MAX_QUEUED_MESSAGES", 3)
    peer = logged_on()
    for seq in range(10, 20):
        peer.send(b"0", seq=seq)
    assert len(peer.conn._queue) == 3
