"""The Twisted glue drives the session core: logon, timers, app rejects, slow readers, shutdown."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from fixserver import metrics
from fixserver.application import UnsupportedMessageApplication
from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.dictionary import DataDictionary
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.session_events import ConnectionState
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import format_utc_timestamp

START = 1_700_000_000.0


class NodelayTransport(StringTransport):
    """A StringTransport that records TCP_NODELAY and aborts."""

    def __init__(self) -> None:
        super().__init__()
        self.nodelay = False
        self.aborted = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Peer:
    """The client side of one glued connection: builds messages, reads replies."""

    def __init__(self, host: SessionHost, clock: task.Clock) -> None:
        self.clock = clock
        self.host = host
        self.protocol = host.buildProtocol(None)
        self.transport = NodelayTransport()
        self.protocol.makeConnection(self.transport)
        self.seq = 1
        self._decoder = FrameDecoder()

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    def send(self, msg_type: str, body: list[tuple[int, object]], target: str = "EXCH") -> None:
        fields = [
            (35, msg_type),
            (34, self.seq),
            (49, "CLIENT1"),
            (52, format_utc_timestamp(self.now_ns())),
            (56, target),
            *body,
        ]
        self.seq += 1
        self.protocol.dataReceived(encode(fields))  # type: ignore[arg-type]

    def logon(self, heartbeat: int = 30) -> FixMessage:
        self.send("A", [(98, 0), (108, heartbeat)])
        (reply,) = self.received()
        assert reply.msg_type == b"A", reply
        return reply

    def received(self) -> list[FixMessage]:
        self._decoder.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (item := self._decoder.next_message()) is not None:
            assert isinstance(item, FixMessage), item
            out.append(item)
        return out

    def lose(self) -> None:
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionError("test closed it")))


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


def _host(clock: task.Clock, **overrides) -> SessionHost:
    settings = SessionSettings("FIX.4.4", "EXCH", "CLIENT1", **overrides)
    session = Session(settings, MemoryMessageStore(), DataDictionary.standard())
    return SessionHost(
        SessionRegistry([session]),
        UnsupportedMessageApplication(),
        clock,
        now_ns=lambda: int(clock.seconds() * 1e9),
    )


def _session(host: SessionHost) -> Session:
    (session,) = list(host.registry)
    return session


def test_logon_is_answered_with_nodelay_and_a_producer(clock):
    """A Logon gets a Logon back; the socket has TCP_NODELAY and the protocol is its producer."""
    host = _host(clock)
    peer = Peer(host, clock)
    assert peer.transport.nodelay is True
    assert peer.transport.producer is peer.protocol and peer.transport.streaming
    reply = peer.logon()
    assert reply.get(56) == b"CLIENT1" and reply.get(108) == b"30"
    assert host.bound == {_session(host): peer.protocol}


def test_connection_without_logon_is_dropped_after_logon_timeout(clock):
    """A connection that never logs on is closed once LogonTimeout has passed."""
    host = _host(clock, logon_timeout=3)
    peer = Peer(host, clock)
    clock.advance(2.9)
    assert not peer.transport.disconnecting
    clock.advance(0.2)
    assert peer.transport.disconnecting
    assert peer.received() == []


def test_heartbeat_timer_is_rearmed_after_each_event(clock):
    """After HeartBtInt of our silence a Heartbeat goes out, and again after the next one."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon(heartbeat=2)
    for _ in range(2):
        clock.advance(2.0)
        (_heartbeat,) = [m for m in peer.received() if m.msg_type == b"0"]
        peer.send("0", [])  # the client's own heartbeat keeps the connection alive
        assert peer.received() == []
    assert not peer.transport.disconnecting


def test_traffic_does_not_rearm_the_timer_and_an_early_fire_sends_nothing(clock):
    """Messages move the heartbeat deadline later: the armed timer is kept (one delayed call,
    the same object) instead of a cancel and a callLater per message; when it fires before
    the real deadline it sends nothing and arms the real one; the heartbeat still goes out
    HeartBtInt after our last message."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon(heartbeat=2)
    (armed,) = clock.getDelayedCalls()
    for _ in range(3):
        clock.advance(0.5)
        peer.send("1", [(112, "probe")])  # a TestRequest: answered with a Heartbeat
        assert [m.msg_type for m in peer.received()] == [b"0"]
        assert clock.getDelayedCalls() == [armed]  # not re-armed
    clock.advance(0.5)  # the first deadline: 2 s after the Logon
    assert peer.received() == [] and not armed.active()
    (real,) = clock.getDelayedCalls()
    assert real.getTime() == pytest.approx(clock.seconds() + 1.5)  # 2 s after our last reply
    clock.advance(1.5)
    assert [m.msg_type for m in peer.received()] == [b"0"]


def test_silent_peer_gets_a_test_request_then_is_disconnected(clock):
    """A silent client gets a TestRequest and, still silent, is disconnected."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon(heartbeat=1)
    clock.pump([0.5] * 4)
    assert any(m.msg_type == b"1" for m in peer.received())
    clock.pump([0.5] * 4)
    assert peer.transport.disconnecting


def test_application_message_gets_business_message_reject(clock):
    """An application message is answered with 35=j, 380=3, RefSeqNum and RefMsgType."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon()
    peer.send(
        "D",
        [
            (11, "ord1"),
            (55, "BTC-PERP"),
            (54, 1),
            (60, format_utc_timestamp(peer.now_ns())),
            (38, 1),
            (40, 2),
            (44, 100),
        ],
    )
    replies = peer.received()
    assert [m.msg_type for m in replies] == [b"j"], replies
    reject = replies[0]
    assert (reject.get(45), reject.get(372), reject.get(380)) == (b"2", b"D", b"3")
    assert reject.get(58) == b"Unsupported Message Type"


def test_send_outside_the_pump_goes_out_on_flush(clock):
    """session.send from outside a connection event is written by host.flush()."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon()
    _session(host).send("j", [(45, 1), (372, "D"), (380, 3)], peer.now_ns())
    assert peer.received() == []
    host.flush(_session(host))
    assert [m.msg_type for m in peer.received()] == [b"j"]


def test_slow_reader_is_disconnected_past_max_output_buffer(clock):
    """Bytes written while the transport has paused us are counted; past the limit, abort."""
    host = _host(clock, max_output_buffer=1000)
    peer = Peer(host, clock)
    peer.logon()
    session = _session(host)
    before = metrics.DISCONNECTS.labels("slow_reader")._value.get()
    peer.protocol.pauseProducing()
    while not peer.transport.aborted:
        session.send("j", [(45, 1), (372, "D"), (380, 3), (58, "x" * 100)], peer.now_ns())
        host.flush()
        assert len(peer.transport.value()) < 3000, "never disconnected"
    assert metrics.DISCONNECTS.labels("slow_reader")._value.get() == before + 1


def test_resumed_reader_is_not_disconnected(clock):
    """A reader that catches up (resumeProducing) starts its allowance again."""
    host = _host(clock, max_output_buffer=1000)
    peer = Peer(host, clock)
    peer.logon()
    session = _session(host)
    for _ in range(5):
        peer.protocol.pauseProducing()
        session.send("j", [(45, 1), (372, "D"), (380, 3), (58, "x" * 400)], peer.now_ns())
        host.flush()
        peer.protocol.resumeProducing()
    assert not peer.transport.aborted


def test_shutdown_logs_out_and_fires_when_the_peer_answers(clock):
    """shutdown() sends Logout; the peer's Logout reply closes the connection and fires it."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon()
    done = host.shutdown(timeout=2.0)
    (logout,) = peer.received()
    assert logout.msg_type == b"5"
    assert not done.called
    peer.send("5", [])
    assert peer.transport.disconnecting
    peer.lose()
    assert done.called and not host.protocols


def test_shutdown_gives_up_after_the_timeout(clock):
    """A peer that never answers the Logout is aborted when the shutdown timeout expires."""
    host = _host(clock, logout_timeout=10)
    peer = Peer(host, clock)
    peer.logon()
    done = host.shutdown(timeout=2.0)
    clock.advance(1.9)
    assert not done.called
    clock.advance(0.2)
    assert done.called and peer.transport.aborted


def test_connection_lost_unbinds_the_session(clock):
    """When the transport closes under a logged-on session, the session is free again."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon()
    session = _session(host)
    assert session.connection is not None
    peer.lose()
    assert session.connection is None and host.bound == {} and not host.protocols
    assert peer.protocol.connection is not None
    assert peer.protocol.connection.state is ConnectionState.CLOSED
    assert not clock.getDelayedCalls()


def test_garbled_frames_are_counted(clock):
    """A frame with a bad checksum is ignored and counted in fix_garbled_messages_total."""
    host = _host(clock)
    peer = Peer(host, clock)
    peer.logon()
    before = metrics.GARBLED_MESSAGES._value.get()
    peer.protocol.dataReceived(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01")
    assert metrics.GARBLED_MESSAGES._value.get() == before + 1
    assert not peer.transport.disconnecting


def test_messages_are_counted_by_session_and_type(clock):
    """Inbound and outbound messages are counted with the session id and MsgType labels."""
    host = _host(clock)
    peer = Peer(host, clock)
    sid = "FIX.4.4:EXCH->CLIENT1"
    metrics.fold_counts()
    received = metrics.MESSAGES_RECEIVED.labels(sid, "0")._value.get()
    sent = metrics.MESSAGES_SENT.labels(sid, "A")._value.get()
    peer.logon()
    data = encode(
        [
            (35, "0"),
            (34, 2),
            (49, "CLIENT1"),
            (52, format_utc_timestamp(peer.now_ns())),
            (56, "EXCH"),
        ]
    )
    for i in range(len(data)):  # one byte at a time: fields split across reads
        peer.protocol.dataReceived(data[i : i + 1])
    metrics.fold_counts()  # counts reach the counters when /metrics is read
    assert metrics.MESSAGES_RECEIVED.labels(sid, "0")._value.get() == received + 1
    assert metrics.MESSAGES_SENT.labels(sid, "A")._value.get() == sent + 1


def test_before_write_runs_before_bytes_reach_the_socket(clock):
    """The host's before_write hook (store flush) runs before every socket write."""
    host = _host(clock)
    seen: list[bytes] = []
    host.before_write = lambda: seen.append(peer.transport.value())
    peer = Peer(host, clock)
    peer.send("A", [(98, 0), (108, 30)])
    assert seen == [b""] and peer.transport.value()


def test_paused_reader_that_keeps_reading_is_not_disconnected(clock):
    """Twisted resumes a producer only once the send buffer is empty: under steady output a
    peer that reads stays "paused" while far more than the limit passes through. What the
    transport still holds unsent decides (a TCP transport's dataBuffer), not the total."""
    host = _host(clock, max_output_buffer=1000)
    peer = Peer(host, clock)
    peer.logon()
    session = _session(host)
    transport = peer.transport
    # the TCP transport's buffer, as twisted.internet.abstract.FileDescriptor keeps it
    transport.dataBuffer, transport.offset, transport._tempDataLen = b"", 0, 0
    peer.protocol.pauseProducing()
    for _ in range(20):  # 20 x ~150 bytes: three times the limit while paused
        session.send("j", [(45, 1), (372, "D"), (380, 3), (58, "x" * 100)], peer.now_ns())
        host.flush()
        transport._tempDataLen = 300  # the peer reads: never more than 300 bytes queued
    assert not transport.aborted
    transport._tempDataLen = 990  # now it stops reading
    session.send("j", [(45, 1), (372, "D"), (380, 3), (58, "x" * 100)], peer.now_ns())
    host.flush()
    assert transport.aborted


def test_junk_message_types_fold_into_the_other_label_without_growing_memory(clock):
    """Thousands of distinct junk MsgTypes between two scrapes: the pending counts stay
    bounded (folded early) and all of them land in the clipped label "other"."""
    sid = "FIX.4.4:EXCH->JUNK"
    metrics.fold_counts()
    before = metrics.MESSAGES_SENT.labels(sid, "other")._value.get()
    for i in range(5_000):
        metrics.count_sent(sid, b"8=FIX.4.4\x019=9\x0135=X%dY\x0110=000\x01" % i)
        assert len(metrics._PENDING_SENT) <= metrics._MAX_PENDING_KEYS + 1
    metrics.fold_counts()
    assert metrics.MESSAGES_SENT.labels(sid, "other")._value.get() == before + 5_000
