"""Session layer: session-level Rejects, BeginString/CompID/SendingTime checks, routing."""

from __future__ import annotations

from fixserver.codec import encode, parse
from fixserver.session_events import ApplicationMessageReceived
from fixserver.timeutil import format_utc_timestamp
from tests.fixserver.session_helpers import SECOND, Peer, summary

ORDER = [(11, b"ID"), (21, b"3"), (40, b"1"), (54, b"1"), (55, b"INTC"), (60, b"20240102-12:00:00")]


def logged_on(**settings) -> Peer:
    peer = Peer(**settings)
    peer.logon()
    peer.take_events()
    return peer


def test_2i_begin_string_changed_mid_session_logout_then_close_on_reply():
    """A message with another BeginString gets Logout 'Incorrect BeginString'; reply closes."""
    peer = logged_on()
    peer.send(b"1", [(112, b"id")], begin_string=b"FIX.4.1")
    assert [summary(m, 58) for m in peer.received()] == [("5", 2, "Incorrect BeginString")]
    assert not peer.conn.should_close
    peer.send(b"5")
    assert peer.conn.should_close and peer.received() == []


def test_2i_begin_string_logout_unanswered_closes_after_logout_timeout():
    """If the peer never answers our Logout, the connection closes after logout_timeout."""
    peer = logged_on(logout_timeout=2)
    peer.send(b"1", [(112, b"id")], begin_string=b"FIX.4.1")
    peer.received()
    peer.advance(1.9)
    assert not peer.conn.should_close
    peer.advance(0.2)
    assert peer.conn.should_close and peer.received() == []


def test_2k_comp_id_mismatch_reject_9_then_logout():
    """Wrong SenderCompID or TargetCompID mid-session: Reject 373=9 then Logout."""
    for sender, target in ((b"WT", b"ISLD"), (b"TW44", b"DLSI"), (b"WT", b"DLSI")):
        peer = logged_on()
        peer.send(b"D", ORDER, sender=sender, target=target)
        assert [summary(m, 45, 58, 372, 373) for m in peer.received()] == [
            ("3", 2, "2", "CompID problem", "D", "9"),
            ("5", 3, None, None, None, None),
        ]
        peer.send(b"5")
        assert peer.conn.should_close


def test_2o_sending_time_out_of_range_reject_10_then_logout():
    """SendingTime more than MaxLatency (120 s) off: Reject 373=10 then Logout, either way."""
    for offset in (-121, 121):
        peer = logged_on()
        skewed = format_utc_timestamp(peer.now + offset * SECOND, millis=False)
        raw = peer.build(b"0", sending_time=skewed)
        peer.feed(raw)
        assert [summary(m, 45, 58, 372, 373) for m in peer.received()] == [
            ("3", 2, "2", "SendingTime accuracy problem", "0", "10"),
            ("5", 3, None, None, None, None),
        ]


def test_2q_msgtype_not_valid_reject_11():
    """An invalid MsgType: Reject 373=11 with RefMsgType, and the seqnum is consumed."""
    peer = logged_on()
    peer.send(b"*")
    assert [summary(m, 45, 58, 371, 372, 373) for m in peer.received()] == [
        ("3", 2, "2", "Invalid MsgType", None, "*", "11")
    ]
    assert peer.session.store.next_target_seq() == 3


class _WithoutExecutionReport:
    """The standard dictionary minus ExecutionReport (a valid FIX type this venue lacks)."""

    def __init__(self, inner):
        self._inner = inner

    def has_msg_type(self, msg_type):
        return msg_type not in ("8", b"8") and self._inner.has_msg_type(msg_type)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_2r_valid_but_unsupported_msgtype_business_reject_380_3():
    """A valid FIX MsgType the dictionary lacks: BusinessMessageReject 380=3, seqnum consumed."""
    peer = Peer()
    peer.session.dictionary = _WithoutExecutionReport(peer.session.dictionary)
    peer.logon()
    peer.send(
        b"8",
        [
            (37, b"id"),
            (17, b"id"),
            (150, b"0"),
            (39, b"0"),
            (55, b"X"),
            (54, b"1"),
            (151, b"100"),
            (14, b"0"),
            (6, b"0.0"),
        ],
    )
    out = peer.received()
    assert [summary(m, 45, 58, 372, 380) for m in out] == [
        ("j", 2, "2", "Unsupported Message Type", "8", "3")
    ]
    assert [t for t, _ in out[0].fields][7:-1] == [45, 58, 372, 380]
    assert peer.session.store.next_target_seq() == 3


def test_2r_defined_application_message_passed_up_for_the_application():
    """An application MsgType the dictionary defines goes up as ApplicationMessageReceived."""
    peer = logged_on()
    peer.send(b"D", ORDER)
    events = peer.take_events()
    assert len(events) == 1 and isinstance(events[0], ApplicationMessageReceived)
    assert events[0].message.get(11) == b"ID"


def test_2t_msgtype_not_third_field_ignored_as_garbled():
    """A message whose third field is not MsgType is ignored without using a seqnum."""
    peer = logged_on()
    raw = peer.build(b"0", seq=2)
    # swap "35=0" and "34=2": 34 becomes the third field
    raw = raw.replace(b"35=0\x0134=2\x01", b"34=2\x0135=0\x01")
    fields = [(t, v) for t, v in parse(raw).fields if t not in (8, 9, 10)]
    peer.feed(encode(fields))
    assert peer.received() == [] and peer.session.store.next_target_seq() == 2


def test_14a_undefined_tag_rejected_373_0_and_seqnum_consumed():
    """A tag the dictionary does not define: Reject 373=0 371=tag, seqnum consumed."""
    peer = logged_on()
    peer.send(b"0", [(999, b"HI")])
    assert [summary(m, 45, 58, 371, 372, 373) for m in peer.received()] == [
        ("3", 2, "2", "Invalid tag number", "999", "0", "0")
    ]
    peer.send(b"0")
    assert peer.session.store.next_target_seq() == 4


def test_14b_required_tag_missing_rejected_373_1():
    """A missing required body tag (ClOrdID): Reject 373=1 371=11 RefMsgType D."""
    peer = logged_on()
    peer.send(b"D", [(21, b"3"), (40, b"1"), (54, b"1"), (60, b"20240102-12:00:00")])
    assert [summary(m, 371, 372, 373) for m in peer.received()] == [("3", 2, "11", "D", "1")]


def test_14e_incorrect_enum_value_rejected_373_5():
    """An enum value outside the dictionary's list: Reject 373=5 with the tag."""
    peer = logged_on()
    bad = [(11, b"ID"), (21, b"4"), (40, b"1"), (54, b"1"), (55, b"X"), (60, b"20240102-12:00:00")]
    peer.send(b"D", bad)
    assert [summary(m, 58, 371, 373) for m in peer.received()] == [
        ("3", 2, "Value is incorrect (out of range) for this tag", "21", "5")
    ]


def test_reverse_route_reject_carries_deliver_to_for_on_behalf_of():
    """Replies reverse routing: 115->128, 116->129, 144->145 and back; empty ones dropped."""
    peer = logged_on()
    bad = [
        (11, b"ID"),
        (21, b"3"),
        (38, b"100"),
        (40, b"w"),
        (54, b"1"),
        (55, b"INTC"),
        (60, b"20240102-12:00:00"),
    ]
    peer.send(b"D", bad, header=[(115, b"JCD"), (116, b"CS"), (144, b"CHI")])
    out = peer.received()
    assert [t for t, _ in out[0].fields][:10] == [8, 9, 35, 34, 49, 52, 56, 128, 129, 145]
    assert (out[0].get(128), out[0].get(129), out[0].get(145)) == (b"JCD", b"CS", b"CHI")
    peer.send(b"D", bad, header=[(128, b"JCD"), (129, b"CS")])
    out = peer.received()
    assert (out[0].get(115), out[0].get(116), 128 in out[0]) == (b"JCD", b"CS", False)


def test_application_reply_routed_back_with_reply_to():
    """session.send(..., reply_to=msg) carries DeliverToCompID = the inbound OnBehalfOfCompID."""
    peer = logged_on()
    peer.send(b"D", ORDER, header=[(115, b"FIRM"), (116, b"DESK")])
    (event,) = peer.take_events()
    assert isinstance(event, ApplicationMessageReceived)
    peer.session.send("8", [(37, b"O1")], peer.now, reply_to=event.message)
    (reply,) = peer.received()
    assert (reply.get(128), reply.get(129), reply.get(115)) == (b"FIRM", b"DESK", None)
