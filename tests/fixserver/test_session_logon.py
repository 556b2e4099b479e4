"""Session layer: Logon acceptance and refusal (FIX session test cases 1a-1e) and authentication."""

from __future__ import annotations

import datetime
import re

from fixserver.codec import FieldValue
from fixserver.filestore import FileMessageStore
from fixserver.logon_auth import sign_logon, signed_logon_payload
from fixserver.session import Session, SessionConnection
from fixserver.session_events import (
    ConnectionClosed,
    ConnectionState,
    LoggedOn,
    LoggedOut,
    LogonFailed,
)
from fixserver.settings import LogonAuth, SessionSettings
from tests.fixserver.session_helpers import (
    SECOND,
    T0,
    Peer,
    body_tags,
    standard_dictionary,
    summary,
    ts,
)


def test_1a_valid_logon_answered_with_logon_echoing_heartbtint():
    """A valid Logon is answered by a Logon: 98=0, the client's HeartBtInt, header in order."""
    peer = Peer()
    out = peer.logon(heart_bt_int=30)
    assert [summary(m, 49, 56, 98, 108) for m in out] == [("A", 1, "ISLD", "TW44", "0", "30")]
    assert body_tags(out[0]) == [8, 9, 35, 34, 49, 52, 56, 98, 108, 10]
    assert len(out[0].get(52) or b"") == 21  # SendingTime with milliseconds
    assert peer.conn.state is ConnectionState.ACTIVE
    assert [type(e) for e in peer.take_events()] == [LoggedOn]
    assert peer.session.connection is peer.conn
    assert peer.session.store.next_target_seq() == 2


def test_1a_logon_msgseqnum_too_high_accepted_then_resend_request():
    """A Logon with MsgSeqNum too high is accepted, then a ResendRequest 1..0 follows."""
    peer = Peer()
    out = peer.logon(seq=5)
    assert [summary(m, 7, 16) for m in out] == [("A", 1, None, None), ("2", 2, "1", "0")]
    peer.seq = 1
    for _ in range(4):
        peer.send(b"0")
    assert peer.session.store.next_target_seq() == 6  # queued Logon 5 took its place
    assert peer.received() == []


def test_1a_reset_seq_num_flag_echoed_and_store_reset():
    """ResetSeqNumFlag=Y resets both sequence numbers and the Logon reply carries 141=Y."""
    peer = Peer()
    peer.session.store.set_next_sender_seq(40)
    peer.session.store.set_next_target_seq(17)
    out = peer.logon(extra=[(141, b"Y")])
    assert [summary(m, 141) for m in out] == [("A", 1, "Y")]
    assert body_tags(out[0])[-4:] == [98, 108, 141, 10]


def test_1b_second_logon_for_connected_session_closed_silently_first_undisturbed():
    """A second connection logging on to a connected session is closed without a reply."""
    peer = Peer(reset_on_logon=True)
    peer.logon()
    first = peer.conn
    second = peer.reconnect()
    peer.send(b"A", [(98, 0), (108, 30)], seq=1)
    assert second.data_to_send() == b"" and second.should_close
    assert peer.session.connection is first and first.state is ConnectionState.ACTIVE
    peer.conn = first
    peer.send(b"1", [(112, b"still-here")], seq=2)
    assert [summary(m, 112) for m in peer.received()] == [("0", 2, "still-here")]


def test_1c_unknown_sender_or_target_comp_id_closed_silently():
    """A Logon naming CompIDs we do not know is a failed logon answered by a silent close."""
    for sender, target in ((b"WT", b"ISLD"), (b"TW44", b"DLSI")):
        peer = Peer()
        peer.send(b"A", [(98, 0), (108, 30)], sender=sender, target=target)
        assert peer.received() == [] and peer.conn.should_close
        failed, closed = peer.take_events()
        assert isinstance(failed, LogonFailed) and failed.session is None
        assert isinstance(closed, ConnectionClosed) and "no session" in closed.reason


def test_1d_logon_with_bad_sending_time_closed_silently():
    """A Logon whose SendingTime is far from our clock is refused with a silent disconnect."""
    peer = Peer()
    peer.send(b"A", [(98, 0), (108, 30)], sending_time=b"20010101-00:00:00")
    assert peer.received() == [] and peer.conn.should_close


def test_1d_logon_with_wrong_begin_string_closed_silently():
    """A Logon with an unconfigured BeginString is answered by a silent disconnect."""
    peer = Peer()
    peer.send(b"A", [(98, 0), (108, 30)], begin_string=b"FIX.3.9")
    assert peer.received() == [] and peer.conn.should_close


def test_1d_garbled_logon_closed_silently():
    """A Logon with a wrong BodyLength (garbled) closes the connection."""
    peer = Peer()
    raw = peer.build(b"A", [(98, 0), (108, 30)])
    peer.feed(re.sub(rb"\x019=\d+\x01", b"\x019=40\x01", raw, count=1))
    assert peer.received() == [] and peer.conn.should_close


def test_1e_first_message_not_logon_closed_silently():
    """A first message other than Logon closes the connection without a reply."""
    peer = Peer()
    peer.send(b"0")
    assert peer.received() == [] and peer.conn.should_close
    assert peer.conn.state is ConnectionState.CLOSED


def test_logon_timeout_closes_connection():
    """A connection that sends no Logon within logon_timeout is closed."""
    peer = Peer(logon_timeout=5)
    assert peer.conn.next_deadline_ns() == T0 + 5 * SECOND
    peer.advance(4.9)
    assert not peer.conn.should_close
    peer.advance(0.2)
    assert peer.conn.should_close and peer.received() == []


def test_logon_msgseqnum_too_low_refused_with_logout_naming_both():
    """Without a reset, a Logon below the expected MsgSeqNum gets a Logout naming both."""
    peer = Peer()
    peer.session.store.set_next_target_seq(8)
    out = peer.logon(seq=3)
    assert [summary(m, 58) for m in out] == [
        ("5", 1, "MsgSeqNum too low, expecting 8 but received 3")
    ]
    assert peer.conn.should_close


def test_configured_heartbtint_mismatch_refused_with_logout():
    """A session that requires a HeartBtInt refuses a Logon proposing another one."""
    peer = Peer(heart_bt_int=30)
    out = peer.logon(heart_bt_int=5)
    assert [summary(m, 58) for m in out] == [("5", 1, "HeartBtInt must be 30")]


def test_logon_inside_session_after_reset_second_logon_without_reset_logged_out():
    """A Logon without ResetSeqNumFlag on a logged-on connection ends the connection."""
    peer = Peer()
    peer.logon()
    peer.send(b"A", [(98, 0), (108, 30)])
    out = peer.received()
    assert [summary(m, 58) for m in out] == [("5", 2, "Logon received while already logged on")]
    assert peer.conn.should_close


def test_session_reset_logon_mid_session_restarts_both_sequences():
    """A Logon with 141=Y mid-session resets both sides to 1 and is answered with 141=Y."""
    peer = Peer()
    peer.logon()
    for _ in range(5):
        peer.send(b"0")
    peer.send(b"1", [(112, b"1")])
    assert [summary(m, 112) for m in peer.received()] == [("0", 2, "1")]
    peer.seq = 1
    out = peer.logon(extra=[(141, b"Y")])
    assert [summary(m, 108, 141) for m in out] == [("A", 1, "30", "Y")]
    peer.send(b"1", [(112, b"2")])
    assert [summary(m, 112) for m in peer.received()] == [("0", 2, "2")]


# ------------------------------------------------------------------ authentication
def test_password_logon_accepted_with_right_credentials():
    """Username/Password matching the configured ones log on."""
    peer = Peer(auth=LogonAuth.PASSWORD, username="trader", password="s3cret")
    out = peer.logon(extra=[(553, b"trader"), (554, b"s3cret")])
    assert [summary(m) for m in out] == [("A", 1)]


def test_password_logon_refused_silently_before_acting_on_reset():
    """A wrong password closes the connection without an answer; the Logon's
    ResetSeqNumFlag is not acted on and neither sequence number moves."""
    peer = Peer(auth=LogonAuth.PASSWORD, username="trader", password="s3cret")
    peer.session.store.set_next_sender_seq(7)
    peer.session.store.set_next_target_seq(9)
    out = peer.logon(extra=[(141, b"Y"), (553, b"trader"), (554, b"guess")])
    assert out == []
    assert (peer.session.store.next_sender_seq(), peer.session.store.next_target_seq()) == (7, 9)
    assert peer.conn.should_close
    failed, closed = peer.take_events()
    assert isinstance(failed, LogonFailed) and failed.session is peer.session
    assert "wrong Password" in failed.reason and "wrong Password" in _reason(closed)


def _reason(event: object) -> str:
    assert isinstance(event, ConnectionClosed), event
    return event.reason


def _signed_logon(peer: Peer, key: bytes, nonce: bytes, sending_time: bytes) -> list:
    payload = signed_logon_payload(sending_time, b"1", b"TW44", b"ISLD", nonce)
    signature = sign_logon(key, payload).encode()
    raw = peer.build(
        b"A",
        [(95, len(nonce)), (96, nonce), (98, 0), (108, 30), (554, signature)],
        seq=1,
        sending_time=sending_time,
    )
    peer.feed(raw)
    return peer.received()


def test_hmac_signed_logon_accepted_and_nonce_replay_refused():
    """A correctly signed Logon logs on; the same nonce again is refused with a Logout."""
    key = b"k" * 32
    peer = Peer(auth=LogonAuth.HMAC, hmac_key=key, reset_on_logon=True)
    sending_time = ts(peer.now)
    assert [summary(m) for m in _signed_logon(peer, key, b"nonce-0001", sending_time)] == [("A", 1)]
    peer.conn.connection_lost(peer.now)
    peer.reconnect()
    peer.now += SECOND
    out = _signed_logon(peer, key, b"nonce-0001", sending_time)
    assert out == [] and peer.conn.should_close
    assert "nonce reused" in _reason(peer.take_events()[-1])


def test_hmac_signed_logon_with_bad_signature_or_stale_time_refused():
    """A wrong key or a SendingTime outside the replay window is refused."""
    key = b"k" * 32
    peer = Peer(auth=LogonAuth.HMAC, hmac_key=key, hmac_window=30)
    out = _signed_logon(peer, b"other-key", b"nonce-0002", ts(peer.now))
    assert out == [] and peer.conn.should_close
    assert "bad logon signature" in _reason(peer.take_events()[-1])
    peer.reconnect()
    out = _signed_logon(peer, key, b"nonce-0003", ts(peer.now - 60 * SECOND))
    assert out == [] and peer.conn.should_close
    assert "replay window" in _reason(peer.take_events()[-1])


def _hmac_session(path: str, key: bytes) -> Session:
    settings = SessionSettings(
        "FIX.4.4", "ISLD", "TW44", auth=LogonAuth.HMAC, hmac_key=key, hmac_window=30
    )
    store = FileMessageStore(path, settings.session_id, now_ns=T0 - 3600 * SECOND)
    return Session(settings, store, standard_dictionary())


def _signed_raw(
    peer: Peer, key: bytes, nonce: bytes, sender: bytes = b"TW44", seq: int = 1
) -> bytes:
    sending_time = ts(peer.now)
    payload = signed_logon_payload(sending_time, str(seq).encode(), sender, b"ISLD", nonce)
    signature = sign_logon(key, payload).encode()
    body: list[tuple[int, FieldValue]] = [(95, len(nonce)), (96, nonce), (98, 0), (108, 30)]
    body.append((554, signature))
    return peer.build(b"A", body, seq=seq, sending_time=sending_time, sender=sender)


def _file_sizes(tmp_path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in tmp_path.iterdir()}


def test_failed_logons_use_no_sequence_number_and_write_nothing(tmp_path):
    """200 failed Logons (bad signature, the accepted Logon replayed, no Password, no nonce,
    unknown CompID) answer nothing, move neither sequence number and write no byte to the
    session's files; each is a LogonFailed event."""
    key = b"k" * 32
    session = _hmac_session(str(tmp_path), key)
    peer = Peer(session=session)
    captured = _signed_raw(peer, key, b"spent-nonce-1")
    peer.feed(captured)
    assert [summary(m) for m in peer.received()] == [("A", 1)]
    peer.conn.connection_lost(peer.now)
    peer.take_events()
    store = session.store
    numbers = (store.next_sender_seq(), store.next_target_seq())
    assert numbers == (2, 2)
    sizes = _file_sizes(tmp_path)
    attempts = [
        lambda: _signed_raw(peer, b"wrong-key", b"fresh-nonce-%d" % peer.now),
        lambda: captured,  # replayed: nonce spent, later SendingTime stale
        lambda: peer.build(b"A", [(95, 8), (96, b"nonce-xx"), (98, 0), (108, 30)], seq=1),
        lambda: _signed_raw(peer, key, b"fresh-nonce-%d" % peer.now, sender=b"NOBODY"),
        lambda: peer.build(b"A", [(98, 0), (108, 30), (554, b"0" * 64)], seq=1),
    ]
    for i in range(200):
        peer.now += SECOND // 2  # all within MaxLatency (120 s) of T0
        peer.reconnect()
        peer.feed(attempts[i % len(attempts)]())
        assert peer.received() == [] and peer.conn.should_close, i
        events = peer.take_events()
        assert [type(e) for e in events] == [LogonFailed, ConnectionClosed], (i, events)
    assert (store.next_sender_seq(), store.next_target_seq()) == numbers
    assert _file_sizes(tmp_path) == sizes


def test_wrong_passwords_leave_next_sender_seq_at_one():
    """A password session refused 200 times still sends its first real message as 1."""
    peer = Peer(auth=LogonAuth.PASSWORD, password="s3cret")
    for _ in range(200):
        peer.reconnect()
        assert peer.logon(seq=1, extra=[(554, b"guess")]) == []
    assert (peer.session.store.next_sender_seq(), peer.session.store.next_target_seq()) == (1, 1)
    peer.reconnect()
    assert [summary(m) for m in peer.logon(seq=1, extra=[(554, b"s3cret")])] == [("A", 1)]


def test_signed_logon_replay_is_refused_after_a_restart(tmp_path):
    """A signed Logon accepted, the server rebuilt from the same store directory: the same
    bytes are refused (nonce reused), a fresh nonce logs on."""
    key = bytes(range(32))
    peer = Peer(session=_hmac_session(str(tmp_path), key))
    raw = _signed_raw(peer, key, b"captured-nonce-0001")
    peer.feed(raw)
    assert [summary(m) for m in peer.received()] == [("A", 1)]
    peer.conn.connection_lost(peer.now)
    peer.session.store.close()  # type: ignore[attr-defined]

    restarted = Peer(session=_hmac_session(str(tmp_path), key), now_ns=peer.now + 5 * SECOND)
    restarted.feed(raw)
    assert restarted.received() == [] and restarted.conn.should_close
    assert "nonce reused" in _reason(restarted.take_events()[-1])
    restarted.reconnect()
    restarted.feed(_signed_raw(restarted, key, b"fresh-nonce-0002", seq=2))
    assert [summary(m) for m in restarted.received()] == [("A", 2)]


class _Gate:
    """A LogonGate refusing every Logon, recording what it was asked."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def refuse_logon(self, session: object, now_ns: int) -> str | None:
        self.asked.append(session)
        return "locked out"


def test_gate_refusal_closes_before_credentials_are_checked():
    """A Logon the gate refuses (a lockout) is closed silently even with the right password,
    is not a failed logon, and uses no sequence number; unknown CompIDs ask it too."""
    peer = Peer(auth=LogonAuth.PASSWORD, password="s3cret")
    gate = _Gate()
    peer.conn = SessionConnection(peer.registry, peer.now, gate=gate)
    assert peer.logon(extra=[(554, b"s3cret")]) == []
    assert peer.conn.should_close and gate.asked == [peer.session]
    assert [type(e) for e in peer.take_events()] == [ConnectionClosed]
    assert peer.session.store.next_sender_seq() == 1
    peer.conn = SessionConnection(peer.registry, peer.now, gate=gate)
    peer.send(b"A", [(98, 0), (108, 30)], sender=b"NOBODY")
    assert gate.asked[-1] is None and peer.received() == []


def test_possdup_logon_below_expected_seq_is_ignored():
    """A Logon with PossDupFlag=Y below the expected MsgSeqNum is ignored: no answer, the
    expected number unchanged, the connection still waiting for a Logon it can act on."""
    peer = Peer()
    peer.session.store.set_next_target_seq(8)
    out = peer.logon(seq=3, header=[(43, b"Y"), (122, ts(T0 - SECOND))])
    assert out == [] and not peer.conn.should_close
    assert peer.conn.state is ConnectionState.AWAITING_LOGON and peer.session.connection is None
    assert peer.session.store.next_target_seq() == 8 and peer.take_events() == []
    assert [summary(m) for m in peer.logon(seq=8)] == [("A", 1)]
    assert peer.session.store.next_target_seq() == 9


def test_possdup_logon_below_expected_seq_then_nothing_times_out():
    """An ignored PossDup Logon does not extend the logon timeout."""
    peer = Peer(logon_timeout=5)
    peer.session.store.set_next_target_seq(8)
    peer.logon(seq=3, header=[(43, b"Y"), (122, ts(T0))])
    peer.advance(5.1)
    assert peer.conn.should_close and peer.received() == []


# ------------------------------------------------------------------ schedule
def test_logon_outside_session_window_refused_with_logout():
    """Outside StartTime..EndTime a Logon is refused with a Logout."""
    peer = Peer(start_time=datetime.time(13, 0), end_time=datetime.time(20, 0))
    out = peer.logon()
    assert [summary(m, 58) for m in out] == [("5", 1, "Logon outside of session time")]
    assert peer.conn.should_close


def test_store_created_before_current_period_is_reset_at_logon():
    """A store older than the current session period's start is reset at logon."""
    peer = Peer(start_time=datetime.time(11, 30), end_time=datetime.time(20, 0))
    peer.session.store.set_next_sender_seq(50)
    peer.session.store.set_next_target_seq(50)
    out = peer.logon()
    assert [summary(m) for m in out] == [("A", 1)]


def test_active_session_logged_out_at_end_time():
    """At EndTime the logged-on session gets our Logout; the connection closes after it."""
    peer = Peer(start_time=datetime.time(11, 0), end_time=datetime.time(12, 0, 30))
    peer.logon(heart_bt_int=0)
    assert peer.conn.next_deadline_ns() == T0 + 30 * SECOND + 1
    peer.run_timers_until(T0 + 31 * SECOND)
    assert [summary(m, 58) for m in peer.received()] == [("5", 2, "Session end time reached")]
    peer.send(b"5")
    assert peer.conn.should_close
    assert [type(e) for e in peer.take_events()][-2:] == [LoggedOut, ConnectionClosed]
