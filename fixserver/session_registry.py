"""Configured sessions and the registry the acceptor finds them in (see ``fixserver.session``).

A ``Session`` outlives TCP connections: settings, message store, dictionary, schedule and the
nonces of recent signed logons. ``Session.send`` is how the application sends: the message is
numbered and stored (for resend) and written to the live connection, if any.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from fixserver.admin_messages import ADMIN_MSG_TYPES, HeaderBuilder, reply_routing
from fixserver.codec import FieldValue, FixMessage
from fixserver.logon_auth import NonceMemory
from fixserver.schedule import SessionSchedule
from fixserver.settings import SessionSettings
from fixserver.store import MessageStore
from fixserver.timeutil import NS_PER_SECOND, format_utc_timestamp

if TYPE_CHECKING:
    from fixserver.session import SessionConnection

DEFAULT_LOGON_TIMEOUT = 10


class Dictionary(Protocol):
    """The part of ``fixserver.dictionary.DataDictionary`` the session uses."""

    def validate(self, msg: FixMessage) -> None: ...

    def has_msg_type(self, msg_type: str | bytes) -> bool: ...

    def is_valid_msg_type(self, msg_type: str | bytes) -> bool: ...


class Session:
    """A configured session: outlives TCP connections."""

    def __init__(
        self, settings: SessionSettings, store: MessageStore, dictionary: Dictionary
    ) -> None:
        self.settings = settings
        self.store = store
        self.dictionary = dictionary
        self.connection: SessionConnection | None = None
        self.header = HeaderBuilder(settings)
        self.schedule = SessionSchedule.from_settings(settings)
        #: spent nonces of signed logons, kept in the store too (a restart remembers them)
        self.nonces = NonceMemory(2 * settings.hmac_window * NS_PER_SECOND, store)
        self.begin_string = settings.begin_string.encode("latin-1")
        self.our_comp_id = settings.sender_comp_id.encode("latin-1")
        self.their_comp_id = settings.target_comp_id.encode("latin-1")

    def __repr__(self) -> str:
        return f"Session({self.settings.session_id})"

    def send(
        self,
        msg_type: bytes | str,
        fields: Iterable[tuple[int, FieldValue]],
        now_ns: int,
        reply_to: FixMessage | None = None,
        header: Iterable[tuple[int, FieldValue]] = (),
    ) -> int:
        """Send an application message (body fields only). Assigns MsgSeqNum, stores it for
        resend, and queues it on the live connection if logged on (else it goes out on the
        peer's ResendRequest). ``reply_to`` routes the reply back (DeliverTo* = the inbound
        OnBehalfOf* and vice versa); ``header`` adds header fields (e.g. PossResend 97).
        Returns the MsgSeqNum."""
        type_bytes = msg_type.encode("ascii") if isinstance(msg_type, str) else msg_type
        if type_bytes in ADMIN_MSG_TYPES:
            raise ValueError(f"admin message type {msg_type!r} is sent by the session layer")
        header_fields = list(header)
        if reply_to is not None:
            header_fields.extend(reply_routing(reply_to))
        seq = self.store.next_sender_seq()
        raw = self.header.encode(
            type_bytes, seq, format_utc_timestamp(now_ns), fields, header_fields
        )
        self.store.save_sent(seq, raw)
        if self.connection is not None:
            self.connection._write(raw, now_ns)
        return seq

    def check_schedule(self, now_ns: int) -> bool:
        """True if inside StartTime/EndTime; resets the store when a new session period has
        begun since the store was created."""
        if not self.schedule.is_open(now_ns):
            return False
        period_start = self.schedule.period_start_ns(now_ns)
        if period_start is not None and self.store.creation_time_ns() < period_start:
            self.store.reset(now_ns)
        return True


class SessionRegistry:
    """The configured sessions, found by BeginString and CompIDs."""

    def __init__(self, sessions: Iterable[Session]) -> None:
        self._sessions: dict[tuple[str, str, str], Session] = {}
        for session in sessions:
            s = session.settings
            key = (s.begin_string, s.sender_comp_id, s.target_comp_id)
            if key in self._sessions:
                raise ValueError(f"two sessions configured for {s.session_id}")
            self._sessions[key] = session
        timeouts = [s.settings.logon_timeout for s in self._sessions.values()]
        self.logon_timeout_ns = min(timeouts or [DEFAULT_LOGON_TIMEOUT]) * NS_PER_SECOND

    def find(
        self,
        begin_string: str,
        our_comp_id: str,
        their_comp_id: str,
        qualifier: str | None = None,
    ) -> Session | None:
        session = self._sessions.get((begin_string, our_comp_id, their_comp_id))
        if session is not None and qualifier is not None:
            if session.settings.session_qualifier != qualifier:
                return None
        return session

    def __iter__(self):
        return iter(self._sessions.values())
