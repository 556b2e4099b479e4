"""A logged-on session that sends more than MaxGarbledMessages garbled frames within
GarbledMessageWindow seconds is logged out with a reason and disconnected (session core)."""

from __future__ import annotations

from fixserver.session_events import (
    ConnectionClosed,
    ConnectionState,
    GarbledLimitExceeded,
    GarbledMessageIgnored,
    LoggedOut,
)
from tests.fixserver.session_helpers import Peer

BAD_CHECKSUM = b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01"
JUNK = b"this is not FIX at all"


def _logged_on(**settings: object) -> Peer:
    peer = Peer(**settings)
    (reply,) = peer.logon()
    assert reply.msg_type == b"A"
    peer.take_events()
    return peer


def test_garbled_frames_up_to_the_limit_are_ignored():
    """Exactly MaxGarbledMessages garbled frames are ignored: no answer, no sequence number,
    the session stays up and a good message after them is processed."""
    peer = _logged_on(max_garbled_messages=3)
    for data in (BAD_CHECKSUM, JUNK, BAD_CHECKSUM):
        peer.feed(data)
    events = peer.take_events()
    assert [type(e) for e in events] == [GarbledMessageIgnored] * 3
    assert peer.received() == [] and peer.conn.state is ConnectionState.ACTIVE
    peer.send(b"1", [(112, b"T")])
    (heartbeat,) = peer.received()
    assert heartbeat.msg_type == b"0" and heartbeat.get(112) == b"T"
    assert peer.session.store.next_target_seq() == 3


def test_one_more_within_the_window_logs_out_with_a_reason_and_closes():
    """The (limit+1)-th garbled frame within the window: Logout with Text, then close; the
    rest of the stream is not even parsed."""
    peer = _logged_on(max_garbled_messages=3, garbled_message_window=10)
    peer.feed(BAD_CHECKSUM * 3)
    peer.now += 9 * 10**9
    peer.feed(JUNK + b"8=" + BAD_CHECKSUM * 100)
    (logout,) = peer.received()
    assert logout.msg_type == b"5"
    assert logout.get_str(58) == "too many garbled messages: more than 3 within 10 s"
    assert peer.conn.state is ConnectionState.CLOSED and peer.conn.should_close
    events = peer.take_events()
    garbled = [e for e in events if isinstance(e, GarbledMessageIgnored)]
    assert len(garbled) == 4  # the three, and the one over the limit; nothing after it
    (limit,) = [e for e in events if isinstance(e, GarbledLimitExceeded)]
    assert (limit.count, limit.window_s) == (4, 10) and limit.session is peer.session
    assert [type(e) for e in events[-2:]] == [LoggedOut, ConnectionClosed]
    assert events[-1].reason == logout.get_str(58)


def test_a_new_window_starts_the_count_again():
    """Garbled frames further apart than the window never add up to the limit."""
    peer = _logged_on(max_garbled_messages=2, garbled_message_window=5)
    for _ in range(10):
        peer.feed(BAD_CHECKSUM * 2)
        peer.now += 5 * 10**9
    assert peer.conn.state is ConnectionState.ACTIVE and peer.received() == []


def test_zero_means_no_limit():
    """MaxGarbledMessages=0: garbled frames are only ever ignored."""
    peer = _logged_on(max_garbled_messages=0)
    peer.feed(BAD_CHECKSUM * 500)
    assert peer.conn.state is ConnectionState.ACTIVE and peer.received() == []


def test_after_our_logout_the_limit_closes_without_a_second_logout():
    """Over the limit while our own Logout awaits its reply: closed, no second Logout."""
    peer = _logged_on(max_garbled_messages=1)
    peer.conn.initiate_logout("bye", peer.now)
    assert [m.msg_type for m in peer.received()] == [b"5"]
    peer.feed(BAD_CHECKSUM * 2)
    assert peer.received() == [] and peer.conn.state is ConnectionState.CLOSED
