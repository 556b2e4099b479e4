"""A reactor for composition-root tests without sockets: Twisted's MemoryReactorClock (records
every listenTCP/listenSSL with its backlog; task.Clock time) with ports that can stop, FIX
connections over StringTransport, and the "after shutdown" triggers (thread pools) run on
demand."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.timeutil import format_utc_timestamp


class FakePort:
    """An IListeningPort that only remembers whether it still listens."""

    def __init__(self, port: int) -> None:
        self.connected = True
        self._address = IPv4Address("TCP", "127.0.0.1", port or 40_000)

    def stopListening(self) -> defer.Deferred[None]:
        self.connected = False
        return defer.succeed(None)

    def getHost(self) -> IPv4Address:
        return self._address


class FakeReactor(MemoryReactorClock):
    """MemoryReactorClock whose listening ports are FakePorts."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        super().listenTCP(port, factory, backlog, interface)
        return FakePort(port)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        super().listenSSL(port, factory, contextFactory, backlog, interface)
        return FakePort(port)

    def backlog_of(self, factory: Any) -> int:
        """The backlog ``factory`` was listened with (by listenTCP or listenSSL)."""
        found = [b for _, f, b, _ in self.tcpServers if f is factory]
        found += [b for _, f, _, b, _ in self.sslServers if f is factory]
        assert found, f"{factory!r} is not listening"
        return found[0]

    def run_after_shutdown(self) -> None:
        """The "after shutdown" triggers (e.g. joining the pipeline's thread pools)."""
        for f, args, kw in self.triggers.get("after", {}).get("shutdown", []):
            f(*args, **kw)


class FixClient:
    """One client connection to a server's SessionHost over a StringTransport."""

    def __init__(self, host: Any, reactor: FakeReactor, comp_id: str,
                 address: str = "10.1.0.1") -> None:
        self.reactor = reactor
        self.comp_id = comp_id
        self.protocol = host.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", address, 40_001))
        self.protocol.makeConnection(self.transport)
        self.seq = 1
        self._decoder = FrameDecoder()

    def send(self, msg_type: str, *body: tuple[int, object]) -> None:
        now_ns = int(self.reactor.seconds() * 1e9)
        fields = [(35, msg_type), (34, self.seq), (49, self.comp_id),
                  (52, format_utc_timestamp(now_ns)), (56, "EXCH"), *body]
        self.seq += 1
        self.protocol.dataReceived(encode(fields))  # type: ignore[arg-type]

    def logon(self) -> None:
        self.send("A", (98, 0), (108, 30))
        assert [m.msg_type for m in self.received()] == [b"A"]

    def received(self) -> list[FixMessage]:
        self._decoder.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (item := self._decoder.next_message()) is not None:
            assert isinstance(item, FixMessage), item
            out.append(item)
        return out

    def lose(self) -> None:
        """The close the server asked for (or an abort) has happened."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))
