"""Noisy connections in the glue: connections that never log on are counted by cause with one
rate-limited fix.rejected line each (no fix.close/fix.disconnect), connect and garbled lines
are rate-limited, and a logged-on session streaming junk is logged out and disconnected."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from fixserver.application import UnsupportedMessageApplication
from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.dictionary import DataDictionary
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.settings import LogonAuth, SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import format_utc_timestamp

START = 1_700_000_000.0
BAD_CHECKSUM = b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01"


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


@pytest.fixture
def lines() -> Any:
    """The fix.* log lines emitted during the test."""
    seen: list[dict] = []

    def observe(event: dict) -> None:
        if (event.get("log_format") or "").startswith("fix."):
            seen.append(event)

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    yield seen
    globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]


def named(lines: list[dict], name: str) -> list[dict]:
    return [e for e in lines if e["log_format"].split(" ", 1)[0] == name]


def _host(clock: task.Clock, **overrides: Any) -> SessionHost:
    sessions = [
        Session(SessionSettings("FIX.4.4", "EXCH", "CLIENT1", logon_timeout=5, **overrides),
                MemoryMessageStore(), DataDictionary.standard()),
        Session(SessionSettings("FIX.4.4", "EXCH", "LOCKED", auth=LogonAuth.PASSWORD,
                                password="s3cret", logon_timeout=5),
                MemoryMessageStore(), DataDictionary.standard()),
    ]
    return SessionHost(SessionRegistry(sessions), UnsupportedMessageApplication(), clock,
                       now_ns=lambda: int(clock.seconds() * 1e9))


class Client:
    def __init__(self, host: SessionHost, clock: task.Clock, address: str = "10.5.0.1") -> None:
        self.clock = clock
        self.protocol = host.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        self.protocol.makeConnection(self.transport)
        self.seq = 1
        self._decoder = FrameDecoder()

    def send(self, msg_type: str, *body: tuple[int, object], sender: str = "CLIENT1") -> None:
        now_ns = int(self.clock.seconds() * 1e9)
        fields = [(35, msg_type), (34, self.seq), (49, sender),
                  (52, format_utc_timestamp(now_ns)), (56, "EXCH"), *body]
        self.seq += 1
        self.protocol.dataReceived(encode(fields))  # type: ignore[arg-type]

    def logon(self, sender: str = "CLIENT1", *extra: tuple[int, object]) -> None:
        self.send("A", (98, 0), (108, 30), *extra, sender=sender)

    def received(self) -> list[FixMessage]:
        self._decoder.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (item := self._decoder.next_message()) is not None:
            assert isinstance(item, FixMessage)
            out.append(item)
        return out

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def rejected(cause: str) -> float:
    return REGISTRY.get_sample_value("fix_connections_rejected_total", {"cause": cause}) or 0.0


def test_a_flood_of_connections_without_logon_is_counted_with_few_lines(clock, lines):
    """60 connections that never log on: each counted (logon_timeout), at most 10 fix.connect
    and 10 fix.rejected lines in the period, no fix.close/fix.disconnect; the next line after
    the period says how many were left out."""
    host = _host(clock)
    before = rejected("logon_timeout")
    clients = [Client(host, clock, f"10.6.0.{i}") for i in range(60)]
    clock.advance(5)
    for client in clients:
        assert client.transport.disconnecting and client.received() == []
        client.lose()
    assert rejected("logon_timeout") == before + 60
    assert len(named(lines, "fix.connect")) == 10
    (first, *_rest) = named(lines, "fix.rejected")
    assert len(named(lines, "fix.rejected")) == 10
    assert first["cause"] == "logon_timeout" and first["peer"] == "10.6.0.0:40000"
    assert first["reason"] == "no Logon within the logon timeout"
    assert not named(lines, "fix.close") and not named(lines, "fix.disconnect")
    clock.advance(10)
    late = Client(host, clock, "10.6.1.1")
    assert named(lines, "fix.connect")[-1]["suppressed"] == 50
    clock.advance(5)
    late.lose()
    assert named(lines, "fix.rejected")[-1]["suppressed"] == 50


@pytest.mark.parametrize(
    ("cause", "act"),
    [
        ("refused", lambda c: c.send("0")),
        ("garbled", lambda c: c.protocol.dataReceived(BAD_CHECKSUM)),
        ("peer_closed", lambda c: None),
        ("logon_failed", lambda c: c.logon("NOBODY")),
        ("logon_failed", lambda c: c.logon("LOCKED", (554, "guess"))),
        ("shutdown", lambda c: c.protocol.host.shutdown(1.0)),
    ],
)
def test_each_cause_is_counted_and_logon_failures_get_no_rejected_line(clock, lines, cause, act):
    """A rejected connection is counted by its cause; failed Logons have the logon guard's
    line only."""
    host = _host(clock)
    before = rejected(cause)
    client = Client(host, clock)
    act(client)
    clock.advance(1)  # a failed Logon's delayed close
    client.lose()
    assert rejected(cause) == before + 1
    rejected_lines = named(lines, "fix.rejected")
    if cause == "logon_failed":
        assert rejected_lines == [] and named(lines, "fix.logon_failed")
    else:
        assert [e["cause"] for e in rejected_lines] == [cause]
    assert not named(lines, "fix.close") and not named(lines, "fix.disconnect")


def test_a_logged_on_session_still_logs_its_close_and_disconnect(clock, lines):
    """The lines of a session that was logged on are not rate-limited or replaced."""
    host = _host(clock)
    client = Client(host, clock)
    client.logon()
    client.send("5")
    client.lose()
    assert named(lines, "fix.close") and named(lines, "fix.disconnect")
    assert not named(lines, "fix.rejected")


def test_a_session_streaming_junk_is_logged_out_and_disconnected(clock, lines):
    """Past MaxGarbledMessages in the window: Logout with Text, close, counted in
    fix_disconnects_total{cause=garbled_messages}; fix.garbled lines stay rate-limited."""
    host = _host(clock, max_garbled_messages=30, garbled_message_window=10)
    client = Client(host, clock)
    client.logon()
    client.received()
    sample = ("fix_disconnects_total", {"cause": "garbled_messages"})
    before = REGISTRY.get_sample_value(*sample) or 0.0
    for _ in range(30):
        client.protocol.dataReceived(b"junk that is not FIX " * 50)
    assert not client.transport.disconnecting
    client.protocol.dataReceived(BAD_CHECKSUM)
    (logout,) = client.received()
    assert logout.msg_type == b"5"
    assert logout.get_str(58) == "too many garbled messages: more than 30 within 10 s"
    assert client.transport.disconnecting
    client.protocol.dataReceived(BAD_CHECKSUM * 1000)  # ignored: the connection is closing
    client.lose()
    assert (REGISTRY.get_sample_value(*sample) or 0.0) == before + 1
    assert len(named(lines, "fix.garbled")) == 10
    (limit,) = named(lines, "fix.garbled_limit")
    assert limit["session"] == "FIX.4.4:EXCH->CLIENT1" and limit["count"] == 31
    assert named(lines, "fix.disconnect")
