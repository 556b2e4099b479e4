"""The glue's logon throttle: failed Logons held back, lockouts refused at once without a
credential check, every event counted, log lines rate-limited."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from fixserver.application import UnsupportedMessageApplication
from fixserver.codec import encode
from fixserver.dictionary import DataDictionary
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.settings import LogonAuth, SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import format_utc_timestamp

START = 1_700_000_000.0
SID = "FIX.4.4:EXCH->CLIENT1"


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


def _host(clock: task.Clock) -> SessionHost:
    sessions = [
        Session(
            SessionSettings("FIX.4.4", "EXCH", comp_id, auth=LogonAuth.PASSWORD, password="s3cret"),
            MemoryMessageStore(),
            DataDictionary.standard(),
        )
        for comp_id in ("CLIENT1", "CLIENT2")
    ]
    return SessionHost(
        SessionRegistry(sessions),
        UnsupportedMessageApplication(),
        clock,
        now_ns=lambda: int(clock.seconds() * 1e9),
    )


class Client:
    """One connection from ``address``."""

    def __init__(self, host: SessionHost, clock: task.Clock, address: str = "10.0.0.7") -> None:
        self.clock = clock
        self.protocol = host.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        self.protocol.makeConnection(self.transport)

    def logon(self, password: str, sender: str = "CLIENT1") -> None:
        now_ns = int(self.clock.seconds() * 1e9)
        fields = [
            (35, "A"), (34, 1), (49, sender), (52, format_utc_timestamp(now_ns)), (56, "EXCH"),
            (98, 0), (108, 30), (554, password),
        ]
        self.protocol.dataReceived(encode(fields))  # type: ignore[arg-type]

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _fail(host: SessionHost, clock: task.Clock, address: str = "10.0.0.7", **kw: str) -> Client:
    """A failed Logon whose (possibly delayed) close has happened."""
    client = Client(host, clock, address)
    client.logon("guess", **kw)
    clock.advance(10)
    assert client.closing and client.transport.value() == b""
    client.lose()
    return client


def test_failed_logon_is_closed_after_a_growing_delay_without_an_answer(clock):
    """The first failure's connection closes after 1 s, the second's after 2 s; no bytes go
    out, and each failure is counted for its session."""
    host = _host(clock)
    before = _sample("fix_logon_failures_total", session=SID)
    for delay in (1.0, 2.0):
        client = Client(host, clock)
        client.logon("guess")
        clock.advance(delay - 0.01)
        assert not client.closing
        client.protocol.dataReceived(b"ignored while the close is held back")
        clock.advance(0.02)
        assert client.closing and client.transport.value() == b""
        client.lose()
    assert _sample("fix_logon_failures_total", session=SID) == before + 2
    assert host.protocols == set()


def test_fifth_failure_locks_out_the_session_and_the_address(clock):
    """After five failures the address's connections are closed at once and the session's
    Logons are refused unchecked (the right password too), until LogonLockoutSeconds."""
    host = _host(clock)
    lockouts = _sample("fix_logon_lockouts_total", scope="session")
    refused = _sample("fix_logon_refused_total", scope="address")
    for _ in range(4):
        _fail(host, clock)
    fifth = Client(host, clock)
    fifth.logon("guess")
    assert fifth.closing  # at once: the lockout is the penalty
    fifth.lose()
    assert _sample("fix_logon_lockouts_total", scope="session") == lockouts + 1
    assert _sample("fix_logon_lockouts_active") == 2

    same_address = Client(host, clock)
    assert same_address.closing and same_address.protocol.connection is None
    assert _sample("fix_logon_refused_total", scope="address") == refused + 1
    same_address.lose()

    elsewhere = Client(host, clock, "10.9.9.9")
    elsewhere.logon("s3cret")
    assert elsewhere.closing and elsewhere.transport.value() == b""
    elsewhere.lose()
    other_session = Client(host, clock, "10.9.9.9")
    other_session.logon("s3cret", sender="CLIENT2")
    assert b"35=A\x01" in other_session.transport.value()

    clock.advance(60)
    assert _sample("fix_logon_lockouts_active") == 0
    after = Client(host, clock, "10.9.9.8")
    after.logon("s3cret")
    assert b"35=A\x01" in after.transport.value()


def test_unknown_comp_ids_count_against_the_address_only(clock):
    """Logons naming no session lock their address out (session label '-')."""
    host = _host(clock)
    before = _sample("fix_logon_failures_total", session="-")
    for _ in range(5):
        _fail(host, clock, "10.0.0.66", sender="NOBODY")
    assert _sample("fix_logon_failures_total", session="-") == before + 5
    assert Client(host, clock, "10.0.0.66").closing
    logon = Client(host, clock, "10.0.0.67")
    logon.logon("s3cret")
    assert b"35=A\x01" in logon.transport.value()


def test_a_logon_clears_its_sessions_count(clock):
    """Four failures, a good Logon, then a failure from elsewhere starts at the first delay."""
    host = _host(clock)
    for _ in range(4):
        _fail(host, clock, "10.0.0.1")
    good = Client(host, clock, "10.0.0.2")
    good.logon("s3cret")
    assert b"35=A\x01" in good.transport.value()
    good.lose()
    client = Client(host, clock, "10.0.0.3")
    client.logon("guess")
    clock.advance(1.01)
    assert client.closing


def test_shutdown_closes_a_held_back_connection_at_once(clock):
    """A failed Logon's delayed close does not hold up a shutdown."""
    host = _host(clock)
    client = Client(host, clock)
    client.logon("guess")
    assert not client.closing
    done = host.shutdown(timeout=2.0)
    assert client.closing
    client.lose()
    assert done.called


def test_log_lines_are_rate_limited_and_close_lines_left_out(clock):
    """A flood of 60 failed and refused Logons in one second gives at most 10 lines, no
    fix.close/fix.disconnect lines; the next line after the period says how many were left
    out."""
    host = _host(clock)
    lines: list[dict] = []

    def observe(event: dict) -> None:
        fmt = event.get("log_format") or ""
        if fmt.startswith(("fix.logon_", "fix.close", "fix.disconnect")):
            lines.append(event)

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    try:
        clients = []
        for i in range(60):
            client = Client(host, clock, f"10.2.0.{i}")
            client.logon("guess")
            clients.append(client)
        assert not [e for e in lines if not e["log_format"].startswith("fix.logon_")]
        assert 0 < len(lines) <= 10
        clock.advance(10)
        for client in clients:
            client.lose()
        assert not [e for e in lines if not e["log_format"].startswith("fix.logon_")]
        count = len(lines)
        Client(host, clock, "10.3.0.1").logon("guess")
        assert len(lines) == count + 1 and lines[-1]["suppressed"] > 0
    finally:
        globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]
