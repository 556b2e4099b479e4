"""The glue serves a ResendRequest a chunk per reactor turn: other sessions are served between
chunks, nothing is produced while the transport is backed up, the output stays within
MaxOutputBuffer, resends run MaxConcurrentResends at a time, each paced at ResendRate."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fixserver import metrics
from fixserver.application import UnsupportedMessageApplication
from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.dictionary import DataDictionary
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import format_utc_timestamp

START = 1_700_000_000.0
WRITES: list[tuple[str, bytes]] = []  # every transport write of a test, in order


class BackedUpTransport(StringTransport):
    """A StringTransport with a send buffer like Twisted's TCP transport: past
    ``buffer_size`` bytes it pauses its producer; ``drain`` lets the socket take bytes and
    resumes the producer once the buffer is empty."""

    def __init__(self, name: str, buffer_size: int = 64 * 1024) -> None:
        super().__init__()
        self.name = name
        self.buffer_size = buffer_size
        self.buffered = 0
        self.most_buffered = 0
        self.paused = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        WRITES.append((self.name, data))
        self.buffered += len(data)
        self.most_buffered = max(self.most_buffered, self.buffered)
        if self.buffered > self.buffer_size and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self, n: int) -> None:
        self.buffered = max(0, self.buffered - n)
        if self.buffered == 0 and self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Client:
    """One client connection: sends with its own MsgSeqNum, reads what was written."""

    def __init__(self, host: SessionHost, clock: task.Clock, comp_id: str, **kw: int) -> None:
        self.clock = clock
        self.comp_id = comp_id
        self.protocol = host.buildProtocol(None)
        self.transport = BackedUpTransport(comp_id, **kw)
        self.protocol.makeConnection(self.transport)
        self.seq = 1
        self._decoder = FrameDecoder()

    def send(self, msg_type: str, body: list[tuple[int, object]]) -> None:
        fields = [(35, msg_type), (34, self.seq), (49, self.comp_id),
                  (52, format_utc_timestamp(int(self.clock.seconds() * 1e9))), (56, "EXCH"),
                  *body]
        self.seq += 1
        self.protocol.dataReceived(encode(fields))  # type: ignore[arg-type]

    def received(self) -> list[FixMessage]:
        self._decoder.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (item := self._decoder.next_message()) is not None:
            assert isinstance(item, FixMessage), item
            out.append(item)
        return out


class ReactorClock(task.Clock):
    """A task.Clock whose ``advance`` is one reactor iteration: it runs the calls due when it
    starts; a ``callLater(0)`` made meanwhile waits for the next one (task.Clock would run it
    at once, the reactor does not)."""

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:  # not cancelled by an earlier one
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


@pytest.fixture
def clock() -> task.Clock:
    WRITES.clear()
    c = ReactorClock()
    c.advance(START)
    return c


def make_host(clock: task.Clock, clients: list[str], max_concurrent: int = 4,
              **settings: object) -> SessionHost:
    dictionary = DataDictionary.standard()
    sessions = [Session(SessionSettings("FIX.4.4", "EXCH", c, **settings),  # type: ignore[arg-type]
                        MemoryMessageStore(), dictionary) for c in clients]
    return SessionHost(SessionRegistry(sessions), UnsupportedMessageApplication(), clock,
                       now_ns=lambda: int(clock.seconds() * 1e9),
                       max_concurrent_resends=max_concurrent)


def session_of(host: SessionHost, comp_id: str) -> Session:
    (session,) = [s for s in host.registry if s.settings.target_comp_id == comp_id]
    return session


def stored_while_away(host: SessionHost, comp_id: str, count: int, text: str = "x") -> None:
    """``count`` application messages stored for a client not logged on."""
    session = session_of(host, comp_id)
    for i in range(count):
        session.send("j", [(45, 1), (58, f"{text} {i:06d}"), (372, "D"), (380, 3)],
                     int(START * 1e9))


def log_on_behind(host: SessionHost, clock: task.Clock, comp_id: str, **kw: int) -> Client:
    """Log on (our Logon carries the MsgSeqNum after what was stored) and ask for it all."""
    client = Client(host, clock, comp_id, **kw)
    client.send("A", [(98, 0), (108, 30)])
    (logon,) = client.received()
    assert logon.msg_type == b"A"
    client.transport.drain(10**9)
    client.send("2", [(7, 1), (16, 0)])
    return client


def run_turns(clock: task.Clock, clients: list[Client], drain: int, limit: int = 100_000) -> None:
    """Reactor turns until no resend is left; each turn the sockets take ``drain`` bytes."""
    for _ in range(limit):
        for c in clients:
            c.transport.drain(drain)
        if not any(c.protocol.connection.resend_pending for c in clients):  # type: ignore[union-attr]
            return
        clock.advance(0.001)
    raise AssertionError("the resend did not finish")


def test_another_sessions_answer_is_written_between_two_chunks(clock):
    """While a long resend runs, another session's order is answered after one chunk, not
    after the whole resend."""
    host = make_host(clock, ["BIG", "OTHER"], resend_chunk_messages=50, resend_rate=0)
    stored_while_away(host, "BIG", 1000)
    other = Client(host, clock, "OTHER")
    other.send("A", [(98, 0), (108, 30)])
    other.received()
    big = log_on_behind(host, clock, "BIG")
    assert big.received() == []  # the ResendRequest itself writes nothing yet
    clock.callLater(0, other.send, "D", [(11, "ORDER1")])  # arrives during the resend
    for _ in range(5):
        clock.advance(0)
    resend_writes = [i for i, (name, _) in enumerate(WRITES) if name == "BIG"][1:]  # no Logon
    answer = [i for i, (name, _) in enumerate(WRITES) if name == "OTHER"][1:]  # after Logon
    assert len(answer) == 1 and resend_writes[0] < answer[0] < resend_writes[1]
    assert len(big.received()) <= 5 * 50  # five turns: five chunks at most
    run_turns(clock, [big, other], 10**9)
    session = session_of(host, "BIG")
    assert session.connection is not None and not session.connection.resend_pending


def test_chunks_are_bounded_and_the_answer_is_complete_and_in_order(clock):
    """Every write of the resend holds at most ResendChunkMessages messages; together they are
    every stored message again (PossDupFlag) and the gap fill of our Logon, in order."""
    host = make_host(clock, ["BIG"], resend_chunk_messages=64, resend_rate=0)
    stored_while_away(host, "BIG", 1000)
    big = log_on_behind(host, clock, "BIG")
    run_turns(clock, [big], 10**9)
    sizes = [data.count(b"\x0110=") for name, data in WRITES if name == "BIG"]
    assert max(sizes[1:]) <= 64  # after the Logon answer
    resent = big.received()
    assert [m.get_int(34) for m in resent] == list(range(1, 1002))
    assert all(m.get(43) == b"Y" for m in resent)
    assert resent[-1].msg_type == b"4" and resent[-1].get(36) == b"1002"


def test_output_buffer_never_exceeds_the_bound_with_a_slow_reader(clock):
    """A reader slower than the resend: no chunk is made while the transport is paused, so
    its buffer stays within MaxOutputBuffer (a 1 MB resend, a 64 KiB bound) and the client
    gets everything without being disconnected."""
    bound = 64 * 1024
    host = make_host(clock, ["SLOW"], resend_chunk_messages=100, resend_chunk_bytes=8192,
                     resend_rate=0, max_output_buffer=bound)
    stored_while_away(host, "SLOW", 10_000, text="y" * 40)
    slow = log_on_behind(host, clock, "SLOW", buffer_size=16 * 1024)
    run_turns(clock, [slow], drain=4096)
    assert not slow.transport.aborted
    assert slow.transport.most_buffered <= bound
    resent = slow.received()
    assert [m.get_int(34) for m in resent] == list(range(1, 10_002))
    assert sum(len(m.raw) for m in resent) > 15 * bound


def test_messages_numbered_during_the_resend_follow_it(clock):
    """An application message sent while the resend runs leaves after the resent range."""
    host = make_host(clock, ["BIG"], resend_chunk_messages=10, resend_rate=0)
    stored_while_away(host, "BIG", 100)
    big = log_on_behind(host, clock, "BIG")
    clock.advance(0)
    session_of(host, "BIG").send("j", [(45, 1), (58, "new"), (372, "D"), (380, 3)],
                                 int(clock.seconds() * 1e9))
    host.flush(session_of(host, "BIG"))
    run_turns(clock, [big], 10**9)
    out = big.received()
    assert [m.get_int(34) for m in out] == list(range(1, 103))
    assert out[-1].get(58) == b"new" and out[-1].get(43) is None


def test_output_held_behind_a_resend_past_the_bound_disconnects(clock):
    """A client that does not read while new messages pile up behind its resend is cut off
    as a slow reader once they pass MaxOutputBuffer."""
    host = make_host(clock, ["STUCK"], resend_chunk_messages=10, resend_rate=0,
                     max_output_buffer=4096)
    stored_while_away(host, "STUCK", 200)
    stuck = log_on_behind(host, clock, "STUCK", buffer_size=512)
    clock.advance(0)  # one chunk: the transport pauses us
    before = metrics.DISCONNECTS.labels("slow_reader")._value.get()
    session = session_of(host, "STUCK")
    for i in range(100):
        session.send("j", [(45, 1), (58, f"held {i}"), (372, "D"), (380, 3)],
                     int(clock.seconds() * 1e9))
        host.flush(session)
        if stuck.transport.aborted:
            break
    assert stuck.transport.aborted
    assert metrics.DISCONNECTS.labels("slow_reader")._value.get() == before + 1


def test_resends_beyond_the_cap_wait_for_a_running_one_to_end(clock):
    """With MaxConcurrentResends=1 the second session's resend starts when the first ends."""
    host = make_host(clock, ["A1", "A2"], max_concurrent=1, resend_chunk_messages=20,
                     resend_rate=0)
    for name in ("A1", "A2"):
        stored_while_away(host, name, 100)
    first = log_on_behind(host, clock, "A1")
    second = log_on_behind(host, clock, "A2")
    assert (host.resends.scheduler.running, host.resends.scheduler.waiting) == (1, 1)
    clock.advance(0)
    clock.advance(0)
    assert first.received() and second.received() == []
    run_turns(clock, [first], 10**9)
    assert host.resends.scheduler.running == 1 and host.resends.scheduler.waiting == 0
    run_turns(clock, [second], 10**9)
    assert [m.get_int(34) for m in second.received()] == list(range(1, 102))
    assert host.resends.scheduler.running == 0


def test_resend_is_paced_at_resend_rate(clock):
    """ResendRate 1,000/s in chunks of 100: the next chunk comes 0.1 s after the last."""
    host = make_host(clock, ["PACED"], resend_chunk_messages=100, resend_rate=1000)
    stored_while_away(host, "PACED", 500)
    paced = log_on_behind(host, clock, "PACED")
    clock.advance(0)
    assert len(paced.received()) == 100
    clock.advance(0.05)
    assert paced.received() == []
    clock.advance(0.0501)  # (a little more: the clock counts in float seconds)
    assert len(paced.received()) == 100


def test_a_lost_connection_frees_its_place(clock):
    """A connection lost mid-resend (even while paused) lets the waiting resend run."""
    host = make_host(clock, ["A1", "A2"], max_concurrent=1, resend_chunk_messages=20,
                     resend_rate=0)
    for name in ("A1", "A2"):
        stored_while_away(host, name, 100)
    first = log_on_behind(host, clock, "A1", buffer_size=100)
    second = log_on_behind(host, clock, "A2")
    clock.advance(0)  # A1's first chunk pauses it
    assert first.transport.paused
    first.protocol.connectionLost(Failure(ConnectionError("test closed it")))
    run_turns(clock, [second], 10**9)
    assert [m.get_int(34) for m in second.received()] == list(range(1, 102))
