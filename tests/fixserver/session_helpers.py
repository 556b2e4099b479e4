"""Test helpers: a scripted counterparty driving one SessionConnection with an injected clock."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

from fixserver.codec import FieldValue, FixMessage, FrameDecoder, encode
from fixserver.dictionary import DataDictionary, quickfix_spec_path
from fixserver.session import Session, SessionConnection, SessionRegistry
from fixserver.session_events import SessionEvent
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import NS_PER_SECOND, format_utc_timestamp

T0 = 1_704_196_800_000_000_000  # 2024-01-02 12:00:00 UTC
SECOND = NS_PER_SECOND
#: messages per chunk when a test serves a resend (``Peer.received``)
RESEND_CHUNK = 2


def standard_dictionary() -> DataDictionary:
    """The standard FIX44.xml (as the conformance suite configures the server)."""
    path = quickfix_spec_path()
    if not os.path.exists(path):
        pytest.skip(f"standard FIX44.xml not installed at {path}")
    return DataDictionary.load(path)


def make_session(**overrides: object) -> Session:
    fields: dict[str, object] = {
        "begin_string": "FIX.4.4",
        "sender_comp_id": "ISLD",
        "target_comp_id": "TW44",
    }
    fields.update(overrides)
    settings = SessionSettings(**fields)  # type: ignore[arg-type]
    return Session(settings, MemoryMessageStore(T0 - 3600 * SECOND), standard_dictionary())


def ts(now_ns: int) -> bytes:
    return format_utc_timestamp(now_ns)


class Peer:
    """The client side: builds its messages (own sequence numbers) and reads our replies."""

    def __init__(self, session: Session | None = None, now_ns: int = T0, **settings: object):
        self.session = session if session is not None else make_session(**settings)
        self.registry = SessionRegistry([self.session])
        self.now = now_ns
        self.seq = 1
        self.conn = SessionConnection(self.registry, now_ns)
        self._decoder = FrameDecoder()
        self.events: list[SessionEvent] = []

    def reconnect(self) -> SessionConnection:
        self.conn = SessionConnection(self.registry, self.now)
        self._decoder = FrameDecoder()
        return self.conn

    def build(
        self,
        msg_type: bytes,
        body: Iterable[tuple[int, FieldValue]] = (),
        seq: int | None = None,
        header: Iterable[tuple[int, FieldValue]] = (),
        sender: bytes = b"TW44",
        target: bytes = b"ISLD",
        sending_time: bytes | None = None,
        begin_string: bytes = b"FIX.4.4",
    ) -> bytes:
        """A client message; takes the next sequence number unless ``seq`` is given."""
        if seq is None:
            seq = self.seq
            self.seq += 1
        fields: list[tuple[int, FieldValue]] = [
            (35, msg_type),
            (34, seq),
            (49, sender),
            (52, sending_time if sending_time is not None else ts(self.now)),
            (56, target),
            *header,
            *body,
        ]
        return encode(fields, begin_string)

    def send(self, msg_type: bytes, body: Iterable[tuple[int, FieldValue]] = (), **kw) -> None:
        self.feed(self.build(msg_type, body, **kw))

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data, self.now)
        self._collect()

    def logon(self, heart_bt_int: int = 30, **kw) -> list[FixMessage]:
        body: list[tuple[int, FieldValue]] = [(98, 0), (108, heart_bt_int)]
        body.extend(kw.pop("extra", []))
        self.send(b"A", body, **kw)
        return self.received()

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)
        self.conn.on_timer(self.now)
        self._collect()

    def run_timers_until(self, until_ns: int) -> None:
        """Call on_timer at each deadline the connection asks for, up to ``until_ns``."""
        while True:
            deadline = self.conn.next_deadline_ns()
            if deadline is None or deadline > until_ns:
                break
            self.now = max(self.now, deadline)
            self.conn.on_timer(self.now)
        self.now = max(self.now, until_ns)
        self._collect()

    def _collect(self) -> None:
        while (event := self.conn.next_event()) is not None:
            self.events.append(event)

    def received(self) -> list[FixMessage]:
        """Messages the server has sent since the last call (a resend in progress is served
        to its end first, as the glue would, in chunks small enough that tests cross chunk
        boundaries)."""
        while self.conn.resend_pending:
            self.conn.continue_resend(RESEND_CHUNK, 1 << 20, self.now)
        self._decoder.feed(self.conn.data_to_send())
        out = []
        while (item := self._decoder.next_message()) is not None:
            assert isinstance(item, FixMessage), item
            out.append(item)
        return out

    def take_events(self) -> list[SessionEvent]:
        self._collect()
        events, self.events = self.events, []
        return events


def summary(msg: FixMessage, *tags: int) -> tuple:
    """(MsgType, MsgSeqNum, values of ``tags``) as str/int for compact assertions."""
    values = tuple(msg.get_str(t) for t in tags)
    return (msg.get_str(35), msg.get_int(34), *values)


def body_tags(msg: FixMessage) -> list[int]:
    return [t for t, _ in msg.fields]
