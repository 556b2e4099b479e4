"""Session layer: heartbeats, TestRequests, timeouts and the Logout handshake (4a, 4b, 6, 13)."""

from __future__ import annotations

import pytest

from fixserver.session_events import ConnectionClosed, ConnectionState, LoggedOut, SessionStateError
from tests.fixserver.session_helpers import SECOND, T0, Peer, summary


def logged_on(heart_bt_int: int = 30, **settings) -> Peer:
    peer = Peer(**settings)
    peer.logon(heart_bt_int=heart_bt_int)
    peer.take_events()
    return peer


def test_4a_heartbeat_sent_after_heartbtint_of_silence():
    """We send a Heartbeat once we have been silent for HeartBtInt."""
    peer = logged_on(heart_bt_int=6)
    assert peer.conn.next_deadline_ns() == T0 + 6 * SECOND
    peer.advance(5.9)
    assert peer.received() == []
    peer.advance(0.1)
    assert [summary(m) for m in peer.received()] == [("0", 2)]
    peer.send(b"0")
    peer.advance(6)
    assert [summary(m) for m in peer.received()] == [("0", 3)]


def test_4b_test_request_answered_with_heartbeat_carrying_testreqid():
    """Every TestRequest is answered by a Heartbeat carrying its TestReqID."""
    peer = logged_on()
    peer.send(b"1", [(112, b"HELLO")])
    assert [summary(m, 112) for m in peer.received()] == [("0", 2, "HELLO")]


def test_6_test_request_after_peer_silence_then_disconnect():
    """Peer silent past 1.2*HeartBtInt gets a TestRequest; still silent at 2.4x: disconnect."""
    peer = logged_on(heart_bt_int=6)
    peer.run_timers_until(T0 + 6 * SECOND)
    assert [summary(m) for m in peer.received()] == [("0", 2)]
    peer.send(b"0")  # peer answers at t=6
    peer.run_timers_until(T0 + 12 * SECOND)
    assert [summary(m) for m in peer.received()] == [("0", 3)]
    peer.run_timers_until(T0 + 13_200_000_000)  # 6 + 1.2 * 6
    assert [summary(m, 112) for m in peer.received()] == [("1", 4, "TEST")]
    peer.send(b"0", [(112, b"TEST")])  # answered at t=13.2
    peer.run_timers_until(T0 + 19_200_000_000)
    assert [summary(m) for m in peer.received()] == [("0", 5)]
    peer.send(b"0")  # peer's last word at t=19.2
    peer.run_timers_until(T0 + 25_200_000_000)
    assert [summary(m) for m in peer.received()] == [("0", 6)]
    peer.run_timers_until(T0 + 26_400_000_000)
    assert [summary(m, 112) for m in peer.received()] == [("1", 7, "TEST")]
    # no Heartbeat while our TestRequest is outstanding; disconnect at 19.2 + 2.4 * 6
    peer.run_timers_until(T0 + 33_600_000_000 - 1)
    assert peer.received() == [] and not peer.conn.should_close
    peer.run_timers_until(T0 + 33_600_000_000)
    assert peer.conn.should_close and peer.received() == []
    assert [type(e) for e in peer.take_events()] == [LoggedOut, ConnectionClosed]


def test_heartbtint_zero_disables_heartbeats():
    """HeartBtInt=0 means no heartbeats and no TestRequests."""
    peer = logged_on(heart_bt_int=0)
    assert peer.conn.next_deadline_ns() is None
    peer.advance(3600)
    assert peer.received() == [] and not peer.conn.should_close


def test_13b_unsolicited_logout_answered_then_closed():
    """A Logout from the peer is answered with our Logout and the connection closes."""
    peer = logged_on()
    peer.send(b"5", [(58, b"bye")])
    assert [summary(m, 58) for m in peer.received()] == [("5", 2, None)]
    assert peer.conn.should_close
    events = peer.take_events()
    assert [type(e) for e in events] == [LoggedOut, ConnectionClosed]
    assert isinstance(events[0], LoggedOut) and events[0].reason == "peer logged out: bye"
    assert peer.session.connection is None


def test_initiated_logout_closes_on_reply_without_second_logout():
    """Our Logout waits for the peer's; its reply closes the connection with nothing sent."""
    peer = logged_on()
    peer.conn.initiate_logout("maintenance", peer.now)
    assert [summary(m, 58) for m in peer.received()] == [("5", 2, "maintenance")]
    assert peer.conn.state is ConnectionState.LOGOUT_SENT
    peer.send(b"5")
    assert peer.conn.should_close and peer.received() == []


def test_initiated_logout_times_out_after_logout_timeout():
    """Without a Logout reply the connection closes after logout_timeout."""
    peer = logged_on(logout_timeout=2)
    peer.conn.initiate_logout("maintenance", peer.now)
    peer.received()
    assert peer.conn.next_deadline_ns() == peer.now + 2 * SECOND
    peer.advance(2)
    assert peer.conn.should_close


def test_reset_on_logout_and_reset_on_disconnect_reset_store():
    """ResetOnLogout resets after the handshake; ResetOnDisconnect on any close."""
    peer = logged_on(reset_on_logout=True)
    peer.send(b"5")
    assert peer.session.store.next_sender_seq() == 1
    peer = logged_on(reset_on_disconnect=True)
    peer.send(b"0")
    peer.conn.connection_lost(peer.now)
    assert peer.session.store.next_target_seq() == 1
    assert peer.session.connection is None


def test_sequence_numbers_persist_across_connections_without_reset():
    """Without reset settings the store carries sequence numbers to the next connection."""
    peer = logged_on()
    peer.send(b"0")
    peer.conn.connection_lost(peer.now)
    peer.reconnect()
    out = peer.logon()
    assert [summary(m) for m in out] == [("A", 2)]


def test_send_app_requires_logged_on_connection():
    """send_app before the Logon is an illegal transition and raises."""
    peer = Peer()
    with pytest.raises(SessionStateError):
        peer.conn.send_app("8", [(37, b"x")], peer.now)


def test_illegal_state_transition_raises():
    """The state table forbids e.g. CLOSED -> ACTIVE."""
    peer = Peer()
    peer.conn.connection_lost(peer.now)
    with pytest.raises(SessionStateError):
        peer.conn._set_state(ConnectionState.ACTIVE)


def test_data_after_close_is_ignored():
    """Bytes arriving after the connection closed produce nothing."""
    peer = logged_on()
    peer.send(b"5")
    peer.received()
    peer.send(b"1", [(112, b"X")])
    assert peer.received() == []
