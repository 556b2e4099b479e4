"""feeds.tcp_write over a real loopback connection: bytes go straight to the socket only when
Twisted holds nothing unsent, and never overtake what it holds."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, protocol, reactor

from feeds.tcp_write import direct_socket, write_now

TIMEOUT = 20


class Keep(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.waiting: list[tuple[int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for n, d in list(self.waiting):
            if len(self.data) >= n:
                self.waiting.remove((n, d))
                d.callback(self.data)

    def until(self, n: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((n, d))
        self.dataReceived(b"")
        return d.addTimeout(TIMEOUT, reactor)


@pytest_twisted.inlineCallbacks
def test_write_now_sends_at_once_and_keeps_order_behind_buffered_bytes():
    accepted: defer.Deferred = defer.Deferred()

    class Server(protocol.Protocol):
        def connectionMade(self) -> None:
            accepted.callback(self)

    factory = protocol.Factory.forProtocol(Server)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = Keep()
    connected = protocol.ClientCreator(reactor, lambda: client).connectTCP(
        "127.0.0.1", port.getHost().port, timeout=TIMEOUT)
    try:
        yield connected
        server = yield accepted.addTimeout(TIMEOUT, reactor)
        transport = server.transport
        sock = direct_socket(transport)
        assert sock is not None
        through_twisted: list[bytes] = []
        real_write = transport.write

        def spy(data: bytes) -> None:
            through_twisted.append(data)
            real_write(data)

        transport.write = spy
        write_now(transport, sock, b"one;")
        assert through_twisted == [], "an empty buffer: sent on the socket at once"
        transport.write(b"two;")  # held by Twisted until the reactor's next write turn
        write_now(transport, sock, b"three;")
        assert through_twisted == [b"two;", b"three;"], "must queue behind two"
        data = yield client.until(len(b"one;two;three;"))
        assert data == b"one;two;three;"
        transport.TLS = True  # a connection that started TLS: its bytes need the TLS layer
        assert direct_socket(transport) is None
    finally:
        yield port.stopListening()
        if client.transport is not None:
            client.transport.loseConnection()
