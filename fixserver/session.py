"""The FIX session layer, acceptor side, sans-IO (bytes and ``now_ns`` in; events and bytes out).

Theory of operation
-------------------
A ``Session`` is one configured counterparty (BeginString + CompIDs): its settings, its
``MessageStore`` (next sequence numbers, sent application messages) and its dictionary. It
outlives TCP connections. A ``SessionConnection`` is the protocol state of one TCP connection;
its first message must be a Logon, which binds it to a ``Session`` found in the
``SessionRegistry``.

Connection states (``session_events.TRANSITIONS`` is the table; other changes raise)::

    AWAITING_LOGON --Logon ok--> ACTIVE --our Logout--> LOGOUT_SENT --reply/timeout--> CLOSED
      \\--bad first message / refused Logon------------------------------------------> CLOSED
                                 \\--peer Logout (answered), too-low seq, silence---> CLOSED

The first message goes through ``fixserver.logon_screen`` (a Logon, for a known session, not
locked out by the glue's gate, authenticated); what fails there closes the connection without
an answer and uses no sequence number. A Logon below the expected MsgSeqNum is refused with a
Logout, unless PossDupFlag=Y: then it is ignored.

Inbound message pipeline (same order as QuickFIX, which conformance suites are written against):

1. Framing (codec): garbled frames are ignored and use no sequence number; before the Logon
   they close the connection silently; after it, more than MaxGarbledMessages of them within
   GarbledMessageWindow seconds log the session out (Text says why) and close the connection.
2. BeginString must be the session's: otherwise Logout "Incorrect BeginString".
3. MsgType: unknown -> Reject 373=11; a valid FIX 4.4 application type our dictionary lacks
   -> BusinessMessageReject 380=3 once in sequence; otherwise dictionary validation, failures
   -> Reject with the error's reason and RefTagID (the message still uses its sequence number).
4. ``_verify``: SendingTime within MaxLatency (else Reject 373=10 + Logout); CompIDs (else
   Reject 373=9 + Logout); MsgSeqNum: too high -> queued + ResendRequest (one outstanding
   request at a time); too low -> Logout naming both numbers and disconnect, unless
   PossDupFlag=Y (then ignored, after the OrigSendingTime checks).
5. The per-MsgType handler (``_HANDLERS``), then queued messages that are now in sequence.

Logout, ResendRequest and SequenceReset-Reset are acted on whatever their MsgSeqNum (a peer
in trouble must still be able to log out or ask for a resend); SequenceReset-GapFill and all
other messages are sequenced.

Outbound: ``Session.send`` numbers, stores and (if logged on) queues application messages;
admin messages are numbered but not stored, so a ResendRequest fills them with gap fills
(``retransmit``). A ResendRequest is answered a chunk at a time: it starts a ``ResendJob``
(``resend_pending``) and the glue calls ``continue_resend`` once per reactor turn while the
socket takes more; whatever is numbered meanwhile waits behind the resent range. Our Logout,
or a sequence reset, ends a resend early. ``on_timer`` drives heartbeats, TestRequests, and
logon/logout/heartbeat timeouts; ``next_deadline_ns`` tells the glue when to call it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Callable

from fixserver.admin_messages import (
    ADMIN_MSG_TYPES,
    RejectReason,
    business_reject_fields,
    reject_fields,
    reply_routing,
)
from fixserver.codec import FieldValue, FixMessage, FrameDecoder, GarbledMessage
from fixserver.dictionary import ValidationError
from fixserver.logon_screen import LogonGate, LogonRefusal, screen_logon
from fixserver.retransmit import ResendJob, clamp_end
from fixserver.session_events import (
    ApplicationMessageReceived,
    ConnectionClosed,
    ConnectionState,
    GarbledLimitExceeded,
    GarbledMessageIgnored,
    LoggedOn,
    LoggedOut,
    LogonFailed,
    SessionEvent,
    SessionStateError,
    check_transition,
)
from fixserver.session_registry import Dictionary, Session, SessionRegistry
from fixserver.timeutil import NS_PER_SECOND, format_utc_timestamp, parse_utc_timestamp

__all__ = [
    "ConnectionState",
    "Dictionary",
    "Session",
    "SessionConnection",
    "SessionRegistry",
    "SessionStateError",
]

#: out-of-order messages kept while a gap is being filled; beyond this they are dropped
#: (the peer resends them) so a hostile peer cannot grow our memory without bound.
MAX_QUEUED_MESSAGES = 10_000
TEST_REQ_ID = b"TEST"


def _int_field(msg: FixMessage, tag: int) -> int | None:
    try:
        return msg.get_int(tag)
    except ValueError:
        return None


class SessionConnection:
    """Protocol state for one TCP connection; bound to a Session by its Logon."""

    def __init__(
        self, registry: SessionRegistry, now_ns: int, gate: LogonGate | None = None
    ) -> None:
        self.registry = registry
        #: consulted before a Logon's credentials are checked (the glue's logon throttle)
        self._gate = gate
        self.session: Session | None = None
        #: the accepted Logon (the application reads its own tags from it, e.g. 7929)
        self.logon_message: FixMessage | None = None
        self.state = ConnectionState.AWAITING_LOGON
        self.should_close = False
        self._decoder = FrameDecoder()
        self._events: deque[SessionEvent] = deque()
        self._out = bytearray()
        self._connected_ns = now_ns
        self._last_sent_ns = now_ns
        self._last_received_ns = now_ns
        self._heart_bt_int_ns = 0
        self._test_requests_out = 0
        self._resend: ResendJob | None = None  # a ResendRequest being answered
        self._logout_deadline_ns = 0
        self._queue: dict[int, FixMessage] = {}
        self._resend_range: tuple[int, int] | None = None
        self._session_close_ns: int | None = None  # end of the schedule window we logged on in
        self._garbled = 0  # garbled frames since _garbled_since_ns (MaxGarbledMessages)
        self._garbled_since_ns = 0

    # ----------------------------------------------------------------- glue-facing API
    def receive_data(self, data: bytes, now_ns: int) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        decoder = self._decoder
        decoder.feed(data)
        while self.state is not ConnectionState.CLOSED:
            item = decoder.next_message()
            if item is None:
                break
            if isinstance(item, GarbledMessage):
                self._on_garbled(item.reason, item.raw, now_ns)
            elif len(item.fields) < 3 or item.fields[2][0] != 35:
                self._on_garbled("MsgType (35) is not the third field", item.raw, now_ns)
            elif self.state is ConnectionState.AWAITING_LOGON:
                self._on_first_message(item, now_ns)
            else:
                self._on_message(item, now_ns)

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def resend_pending(self) -> bool:
        """A ResendRequest is being answered: call ``continue_resend`` for the rest."""
        return self._resend is not None

    @property
    def held_output_bytes(self) -> int:
        """Bytes numbered during a resend, waiting behind it."""
        return self._resend.held_bytes if self._resend is not None else 0

    def continue_resend(self, max_messages: int, max_bytes: int, now_ns: int) -> int:
        """Queue the next chunk of the resend (at most ``max_messages`` messages, no more once
        they reach ``max_bytes``) for ``data_to_send``; returns how many messages."""
        job = self._resend
        if job is None or self.session is None:
            return 0
        session = self.session
        data, count = job.next_chunk(session.store, session.header, max_messages, max_bytes, now_ns)
        self._out += data
        self._last_sent_ns = now_ns
        if job.finished:
            self._resend = None
        return count

    def on_timer(self, now_ns: int) -> None:
        state = self.state
        if state is ConnectionState.AWAITING_LOGON:
            if now_ns >= self._connected_ns + self.registry.logon_timeout_ns:
                self._close("no Logon within the logon timeout", now_ns)
        elif state is ConnectionState.LOGOUT_SENT:
            if now_ns >= self._logout_deadline_ns:
                self._close("timed out waiting for the Logout reply", now_ns)
        elif state is ConnectionState.ACTIVE:
            assert self.session is not None
            if not self.session.schedule.is_open(now_ns):
                self.initiate_logout("Session end time reached", now_ns)
                return
            self._heartbeat_timers(now_ns)

    def next_deadline_ns(self) -> int | None:
        state = self.state
        if state is ConnectionState.AWAITING_LOGON:
            return self._connected_ns + self.registry.logon_timeout_ns
        if state is ConnectionState.LOGOUT_SENT:
            return self._logout_deadline_ns
        if state is not ConnectionState.ACTIVE:
            return None
        assert self.session is not None
        deadlines = []
        if self._session_close_ns is not None:
            deadlines.append(self._session_close_ns)
        hb = self._heart_bt_int_ns
        if hb:
            settings = self.session.settings
            rx = self._last_received_ns
            deadlines.append(rx + int(hb * settings.heartbeat_timeout_multiplier))
            deadlines.append(
                rx
                + int(hb * settings.test_request_delay_multiplier * (self._test_requests_out + 1))
            )
            if not self._test_requests_out:
                deadlines.append(self._last_sent_ns + hb)
        return min(deadlines) if deadlines else None

    def send_app(
        self,
        msg_type: bytes | str,
        fields: Iterable[tuple[int, FieldValue]],
        now_ns: int,
        reply_to: FixMessage | None = None,
    ) -> int:
        if self.session is None or self.state not in (
            ConnectionState.ACTIVE,
            ConnectionState.LOGOUT_SENT,
        ):
            raise SessionStateError(f"cannot send application messages in state {self.state.name}")
        return self.session.send(msg_type, fields, now_ns, reply_to=reply_to)

    def initiate_logout(self, text: str, now_ns: int) -> None:
        """Our Logout; the connection closes on the reply or after logout_timeout. Before the
        Logon there is nobody to log out: the connection just closes."""
        if self.state is ConnectionState.ACTIVE:
            self._send_logout(text, now_ns)
        elif self.state is ConnectionState.AWAITING_LOGON:
            self._close(text, now_ns)

    def connection_lost(self, now_ns: int) -> None:
        self._close("connection lost", now_ns)

    # ----------------------------------------------------------------- state and output
    def _set_state(self, new: ConnectionState) -> None:
        check_transition(self.state, new)
        self.state = new

    def _write(self, raw: bytes, now_ns: int) -> None:
        if self._resend is not None:
            self._resend.hold(raw)  # numbered after the range being resent: goes out after it
        else:
            self._out += raw
        self._last_sent_ns = now_ns

    def _end_resend(self) -> None:
        """Stop answering a ResendRequest (the rest is not resent); what waited goes out."""
        if self._resend is not None:
            self._out += b"".join(self._resend.held)
            self._resend = None

    def _send_admin(
        self,
        msg_type: bytes,
        body: Iterable[tuple[int, FieldValue]],
        now_ns: int,
        header: Iterable[tuple[int, FieldValue]] = (),
    ) -> None:
        session = self.session
        assert session is not None
        store = session.store
        seq = store.next_sender_seq()
        raw = session.header.encode(msg_type, seq, format_utc_timestamp(now_ns), body, header)
        store.set_next_sender_seq(seq + 1)
        self._write(raw, now_ns)

    def _send_logout(self, text: str | None, now_ns: int) -> None:
        self._end_resend()
        self._send_admin(b"5", [(58, text)] if text else [], now_ns)
        if self.state is ConnectionState.ACTIVE:
            self._set_state(ConnectionState.LOGOUT_SENT)
            assert self.session is not None
            self._logout_deadline_ns = now_ns + self.session.settings.logout_timeout * NS_PER_SECOND

    def _close(self, reason: str, now_ns: int) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._set_state(ConnectionState.CLOSED)
        self.should_close = True
        self._queue.clear()
        self._resend = None
        session = self.session
        if session is not None:
            if session.connection is self:
                session.connection = None
            if session.settings.reset_on_disconnect:
                session.store.reset(now_ns)
            self._events.append(LoggedOut(session, reason))
        self._events.append(ConnectionClosed(reason))

    def _incr_target(self) -> None:
        store = self.session.store  # type: ignore[union-attr]
        store.set_next_target_seq(store.next_target_seq() + 1)

    def _reject(
        self,
        msg: FixMessage,
        reason: int,
        ref_tag: int | None,
        now_ns: int,
        text: str | None = None,
    ) -> None:
        """Session-level Reject; an in-sequence message still uses its sequence number
        (except Logon and SequenceReset, which set sequence numbers themselves)."""
        seq = _int_field(msg, 34)
        self._send_admin(
            b"3",
            reject_fields(seq, msg.msg_type, reason, ref_tag, text),
            now_ns,
            header=reply_routing(msg),
        )
        store = self.session.store  # type: ignore[union-attr]
        if msg.msg_type not in (b"A", b"4") and seq == store.next_target_seq():
            self._incr_target()

    # ----------------------------------------------------------------- inbound: before Logon
    def _on_garbled(self, reason: str, raw: bytes, now_ns: int) -> None:
        self._events.append(GarbledMessageIgnored(reason, raw))
        if self.state is ConnectionState.AWAITING_LOGON:
            self._close(f"garbled message before Logon: {reason}", now_ns)
            return
        session = self.session
        assert session is not None
        limit = session.settings.max_garbled_messages
        if not limit:
            return
        window = session.settings.garbled_message_window
        if not self._garbled or now_ns - self._garbled_since_ns >= window * NS_PER_SECOND:
            self._garbled, self._garbled_since_ns = 0, now_ns  # a fresh window
        self._garbled += 1
        if self._garbled > limit:
            text = f"too many garbled messages: more than {limit} within {window} s"
            self._events.append(GarbledLimitExceeded(session, self._garbled, window, text))
            if self.state is ConnectionState.ACTIVE:
                self._send_logout(text, now_ns)
            self._close(text, now_ns)

    def _on_first_message(self, msg: FixMessage, now_ns: int) -> None:
        # Until the peer is identified and authenticated, a refusal is a silent close that
        # touches no sequence number (fixserver.logon_screen says why).
        screened = screen_logon(self.registry, msg, now_ns, self._gate)
        if isinstance(screened, LogonRefusal):
            if screened.failed:
                self._events.append(LogonFailed(screened.session, screened.reason))
            self._close(screened.reason, now_ns)
            return
        session = screened
        settings = session.settings
        seq = msg.get_int(34) or 0  # screen_logon checked it
        # Authenticated: from here on the Logon is acted on.
        if not session.check_schedule(now_ns):
            self._refuse_logon(session, "Logon outside of session time", None, now_ns)
            return
        heart_bt_int = _int_field(msg, 108)
        if heart_bt_int is None or heart_bt_int < 0:
            self._refuse_logon(session, "Invalid HeartBtInt (108)", None, now_ns)
            return
        if settings.heart_bt_int is not None and heart_bt_int != settings.heart_bt_int:
            self._refuse_logon(session, f"HeartBtInt must be {settings.heart_bt_int}", None, now_ns)
            return
        if msg.get(98, b"0") != b"0":
            self._refuse_logon(session, "Unsupported EncryptMethod (98)", None, now_ns)
            return
        store = session.store
        reset = msg.get(141) == b"Y"
        if reset or settings.reset_on_logon:
            store.reset(now_ns)
        expected = store.next_target_seq()
        if seq < expected:
            if msg.get(43) != b"Y":
                text = f"MsgSeqNum too low, expecting {expected} but received {seq}"
                self._refuse_logon(session, text, None, now_ns)
            # else a possible duplicate of a Logon already processed: ignored, as any PossDup
            # message below the expected number (QuickFIX: verify() fails, nothing changes).
            # The connection waits for a Logon it can act on until the logon timeout.
            return
        next_expected = _int_field(msg, 789)
        next_sender = store.next_sender_seq()
        if next_expected is not None and next_expected > next_sender:
            text = (
                f"NextExpectedMsgSeqNum too high, expecting {next_sender}"
                f" but received {next_expected}"
            )
            self._refuse_logon(session, text, None, now_ns)
            return

        self.session = session
        self.logon_message = msg
        session.connection = self
        self._set_state(ConnectionState.ACTIVE)
        self._heart_bt_int_ns = heart_bt_int * NS_PER_SECOND
        self._last_received_ns = now_ns
        self._session_close_ns = session.schedule.close_ns(now_ns)
        self._send_logon_reply(msg, heart_bt_int, reset, expected, now_ns)
        self._events.append(LoggedOn(session))
        if seq > expected and not reset:
            self._too_high(msg, seq, expected, now_ns)
        else:
            self._incr_target()
        if next_expected is not None and next_expected < next_sender:
            self._retransmit(next_expected, next_sender - 1, now_ns)

    def _send_logon_reply(
        self, logon: FixMessage, heart_bt_int: int, reset: bool, expected: int, now_ns: int
    ) -> None:
        body: list[tuple[int, FieldValue]] = [(98, 0), (108, heart_bt_int)]
        if reset:
            body.append((141, b"Y"))
        if 789 in logon:
            body.append((789, expected + 1))
        self._send_admin(b"A", body, now_ns)

    def _refuse_logon(self, session: Session, text: str, reason: str | None, now_ns: int) -> None:
        """Answer an identified peer's unacceptable Logon with a Logout, then close."""
        store = session.store
        seq = store.next_sender_seq()
        raw = session.header.encode(b"5", seq, format_utc_timestamp(now_ns), [(58, text)])
        store.set_next_sender_seq(seq + 1)
        self._write(raw, now_ns)
        self._close(reason or text, now_ns)

    # ----------------------------------------------------------------- inbound: logged on
    def _on_message(self, msg: FixMessage, now_ns: int) -> None:
        session = self.session
        assert session is not None
        msg_type = msg.msg_type
        if msg.begin_string != session.begin_string:
            if msg_type == b"5":
                self._on_logout(msg, now_ns, False)
                return
            if _int_field(msg, 34) == session.store.next_target_seq():
                self._incr_target()
            if self.state is ConnectionState.ACTIVE:
                self._send_logout("Incorrect BeginString", now_ns)
            return
        dictionary = session.dictionary
        known = dictionary.has_msg_type(msg_type)
        valid = known or (
            msg_type not in ADMIN_MSG_TYPES and dictionary.is_valid_msg_type(msg_type)
        )
        if not valid:
            self._reject(msg, RejectReason.INVALID_MSG_TYPE, None, now_ns)
            return
        if known and session.settings.use_data_dictionary:
            try:
                dictionary.validate(msg)
            except ValidationError as exc:
                self._reject(msg, int(exc.reason), exc.ref_tag, now_ns)
                return
        self._HANDLERS.get(msg_type, SessionConnection._on_application)(self, msg, now_ns, False)
        self._process_queue(now_ns)

    def _process_queue(self, now_ns: int) -> None:
        queue = self._queue
        while queue and self.state is not ConnectionState.CLOSED:
            msg = queue.pop(self.session.store.next_target_seq(), None)  # type: ignore[union-attr]
            if msg is None:
                return
            handler = self._HANDLERS.get(msg.msg_type, SessionConnection._on_application)
            handler(self, msg, now_ns, True)

    def _verify(
        self, msg: FixMessage, now_ns: int, check_high: bool, check_low: bool, queued: bool
    ) -> bool:
        """Session-level checks shared by all message types; False if the message must not
        be processed (it has been rejected, queued or ignored)."""
        session = self.session
        assert session is not None
        settings = session.settings
        if not queued:
            try:
                sent_ns = parse_utc_timestamp(msg.get(52) or b"")
            except ValueError:
                self._reject(msg, RejectReason.REQUIRED_TAG_MISSING, 52, now_ns)
                return False
            if settings.check_latency and (
                abs(now_ns - sent_ns) > settings.max_latency * NS_PER_SECOND
            ):
                self._reject(msg, RejectReason.SENDING_TIME_ACCURACY, None, now_ns)
                self._logout_if_active(now_ns)
                return False
            if settings.check_comp_id and (
                msg.get(49) != session.their_comp_id or msg.get(56) != session.our_comp_id
            ):
                self._reject(msg, RejectReason.COMPID_PROBLEM, None, now_ns)
                self._logout_if_active(now_ns)
                return False
            self._last_received_ns = now_ns
            self._test_requests_out = 0
        seq = _int_field(msg, 34)
        if seq is None:
            self._reject(msg, RejectReason.REQUIRED_TAG_MISSING, 34, now_ns)
            return False
        expected = session.store.next_target_seq()
        if check_high and seq > expected:
            self._too_high(msg, seq, expected, now_ns)
            return False
        if check_low and seq < expected:
            self._too_low(msg, seq, expected, now_ns)
            return False
        if seq == expected and msg.get(43) == b"Y" and not self._orig_sending_time_ok(msg, now_ns):
            return False
        if seq == expected and self._resend_range is not None and seq >= self._resend_range[1]:
            self._resend_range = None  # the gap we asked to be resent is filled
        return True

    def _logout_if_active(self, now_ns: int) -> None:
        if self.state is ConnectionState.ACTIVE:
            self._send_logout(None, now_ns)

    def _too_high(self, msg: FixMessage, seq: int, expected: int, now_ns: int) -> None:
        if len(self._queue) < MAX_QUEUED_MESSAGES:
            self._queue[seq] = msg
        if self._resend_range is not None and seq >= self._resend_range[0]:
            return  # our ResendRequest for this gap is still outstanding
        self._send_admin(b"2", [(7, expected), (16, 0)], now_ns)
        self._resend_range = (expected, seq - 1)

    def _too_low(self, msg: FixMessage, seq: int, expected: int, now_ns: int) -> None:
        if msg.get(43) != b"Y":
            text = f"MsgSeqNum too low, expecting {expected} but received {seq}"
            self._send_logout(text, now_ns)
            self._close(text, now_ns)
            return
        # A possible duplicate of something already processed: ignored, but a resend with a
        # bad OrigSendingTime is still reported.
        self._orig_sending_time_ok(msg, now_ns)

    def _orig_sending_time_ok(self, msg: FixMessage, now_ns: int) -> bool:
        if msg.msg_type == b"4":
            return True  # gap fills are always PossDup; QuickFIX skips this check for them
        orig = msg.get(122)
        if orig is None:
            self._reject(msg, RejectReason.REQUIRED_TAG_MISSING, 122, now_ns)
            return False
        try:
            late = parse_utc_timestamp(orig) > parse_utc_timestamp(msg.get(52) or b"")
        except ValueError:
            self._reject(msg, RejectReason.INCORRECT_DATA_FORMAT, 122, now_ns)
            return False
        if late:
            self._reject(msg, RejectReason.SENDING_TIME_ACCURACY, None, now_ns)
            self._logout_if_active(now_ns)
            return False
        return True

    # ----------------------------------------------------------------- message handlers
    def _on_heartbeat(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if self._verify(msg, now_ns, True, True, queued):
            self._incr_target()

    def _on_test_request(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if self._verify(msg, now_ns, True, True, queued):
            test_req_id = msg.get(112)
            self._send_admin(b"0", [] if test_req_id is None else [(112, test_req_id)], now_ns)
            self._incr_target()

    def _on_reject(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if self._verify(msg, now_ns, True, True, queued):
            self._incr_target()

    def _on_sequence_reset(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        gap_fill = msg.get(123) == b"Y"
        if not self._verify(msg, now_ns, gap_fill, gap_fill, queued):
            return
        new_seq_no = _int_field(msg, 36)
        if new_seq_no is None:
            self._reject(msg, RejectReason.REQUIRED_TAG_MISSING, 36, now_ns)
            return
        store = self.session.store  # type: ignore[union-attr]
        expected = store.next_target_seq()
        if new_seq_no > expected:
            store.set_next_target_seq(new_seq_no)
            for stale in [s for s in self._queue if s < new_seq_no]:
                del self._queue[stale]
            if self._resend_range is not None and new_seq_no > self._resend_range[1]:
                self._resend_range = None
        elif new_seq_no < expected:
            # QuickFIX (and conformance suites written against it) omit RefTagID here.
            self._reject(msg, RejectReason.VALUE_INCORRECT, None, now_ns)

    def _on_logout(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if not self._verify(msg, now_ns, False, False, queued):
            return
        session = self.session
        assert session is not None
        if _int_field(msg, 34) == session.store.next_target_seq():
            self._incr_target()
        if self.state is ConnectionState.ACTIVE:
            self._send_logout(None, now_ns)
            text = msg.get_str(58)
            reason = f"peer logged out: {text}" if text else "peer logged out"
        else:
            reason = "Logout acknowledged"
        if session.settings.reset_on_logout:
            session.store.reset(now_ns)
        self._close(reason, now_ns)

    def _on_resend_request(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if queued:  # answered when it arrived; now it only takes its place in sequence
            self._incr_target()
            return
        if not self._verify(msg, now_ns, False, False, queued):
            return
        seq = _int_field(msg, 34)
        assert seq is not None  # _verify rejected it otherwise
        expected = self.session.store.next_target_seq()  # type: ignore[union-attr]
        begin = _int_field(msg, 7)
        end = _int_field(msg, 16)
        if begin is None or end is None:
            self._reject(msg, RejectReason.REQUIRED_TAG_MISSING, 7 if begin is None else 16, now_ns)
            return
        # Answered whatever its MsgSeqNum: a too-low one (a peer that lost its own state) is
        # not punished with a Logout, as QuickFIX does; a too-high one is answered first and
        # then our own gap is recovered, as the FIX session protocol says.
        self._retransmit(begin, end, now_ns)
        if seq == expected:
            self._incr_target()
        elif seq > expected:
            self._too_high(msg, seq, expected, now_ns)

    def _on_logon(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if queued:  # a too-high Logon, already acted on; it only takes its place in sequence
            self._incr_target()
            return
        if msg.get(141) != b"Y":
            self._send_logout("Logon received while already logged on", now_ns)
            self._close("second Logon on a logged-on connection", now_ns)
            return
        if not self._verify(msg, now_ns, False, False, queued):
            return
        # In-session sequence reset (ResetSeqNumFlag=Y): both sides start again at 1.
        session = self.session
        assert session is not None
        self._end_resend()
        session.store.reset(now_ns)
        self._queue.clear()
        self._resend_range = None
        heart_bt_int = _int_field(msg, 108)
        if heart_bt_int is not None and heart_bt_int >= 0:
            self._heart_bt_int_ns = heart_bt_int * NS_PER_SECOND
        self._send_logon_reply(msg, self._heart_bt_int_ns // NS_PER_SECOND, True, 1, now_ns)
        seq = _int_field(msg, 34) or 1
        session.store.set_next_target_seq(seq + 1)

    def _on_application(self, msg: FixMessage, now_ns: int, queued: bool) -> None:
        if not self._verify(msg, now_ns, True, True, queued):
            return
        session = self.session
        assert session is not None
        self._incr_target()
        if not session.dictionary.has_msg_type(msg.msg_type):
            # A valid FIX MsgType this venue does not define: BusinessMessageReject 380=3.
            session.send(b"j", business_reject_fields(msg), now_ns, reply_to=msg)
            return
        self._events.append(ApplicationMessageReceived(session, msg))

    _HANDLERS: dict[bytes, Callable[[SessionConnection, FixMessage, int, bool], None]] = {
        b"0": _on_heartbeat,
        b"1": _on_test_request,
        b"2": _on_resend_request,
        b"3": _on_reject,
        b"4": _on_sequence_reset,
        b"5": _on_logout,
        b"A": _on_logon,
    }

    # ----------------------------------------------------------------- outbound machinery
    def _retransmit(self, begin: int, end: int, now_ns: int) -> None:
        """Start answering a ResendRequest (or restart the one running: ``retransmit``)."""
        session = self.session
        assert session is not None
        job = self._resend
        # The range ends at the last message sent before those held behind a running resend.
        end = clamp_end(end, session.store.next_sender_seq() - (len(job.held) if job else 0))
        if begin > end:
            return
        if job is None:
            self._resend = ResendJob(begin, end)
        else:
            job.restart(begin, end)

    def _heartbeat_timers(self, now_ns: int) -> None:
        hb = self._heart_bt_int_ns
        if not hb:
            return
        settings = self.session.settings  # type: ignore[union-attr]
        silent_for = now_ns - self._last_received_ns
        if silent_for >= int(hb * settings.heartbeat_timeout_multiplier):
            self._close("peer silent: heartbeat timeout", now_ns)
        elif silent_for >= int(
            hb * settings.test_request_delay_multiplier * (self._test_requests_out + 1)
        ):
            self._send_admin(b"1", [(112, TEST_REQ_ID)], now_ns)
            self._test_requests_out += 1
        elif not self._test_requests_out and now_ns - self._last_sent_ns >= hb:
            self._send_admin(b"0", [], now_ns)
