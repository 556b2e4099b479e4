"""The feed server survives hostile requests and sockets: errors, exact gauges, freed slots."""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from feeds.channels import ErrorCode
from feeds.core import FeedCore
from feeds.hub import FeedHub
from feeds.protocol import MAX_REQUEST_DEPTH
from feeds.websocket import FeedServerFactory
from tests.feeds.test_websocket import INSTRUMENTS, TIMEOUT, Waiter, connect, start_server

UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
CHANNELS = ["trades@BTC-PERP", "orderbook@BTC-PERP@5"]


def gauge():
    """The active_websocket_connections gauge."""
    return REGISTRY.get_sample_value("active_websocket_connections")


def closed_total(cause):
    """websocket_closed_total for one cause."""
    return REGISTRY.get_sample_value("websocket_closed_total", {"cause": cause}) or 0.0


class RawClient(protocol.Protocol):
    """A plain TCP client: keeps what it receives; ``lost`` fires with the end's exception."""

    def __init__(self, on_data=lambda: None):
        self.received = b""
        self.lost = defer.Deferred()
        self.on_data = on_data

    def dataReceived(self, data):
        self.received += data
        self.on_data()

    def connectionLost(self, reason=None):
        self.lost.callback(reason.value)


def connect_raw(port, on_data=lambda: None):
    """A RawClient connected to the feed server (Deferred)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=TIMEOUT)
    d = connectProtocol(endpoint, RawClient(on_data))
    return d.addTimeout(TIMEOUT, reactor)


def watch(factory, waiter):
    """Re-check ``waiter`` every time the server forgets a connection."""
    ended = factory.connection_ended

    def connection_ended(proto):
        ended(proto)
        waiter.check()
    factory.connection_ended = connection_ended


def until_connections(factory, waiter, n, what):
    """Wait until the server holds exactly ``n`` TCP connections."""
    return waiter.until(lambda: len(factory.connections) == n,
                        f"the server to hold {n} connections ({what}), it holds "
                        f"{len(factory.connections)}")


@defer.inlineCallbacks
def stop(factory, port):
    """Abort every connection the server still has and close the port."""
    for c in factory.connections.copy():
        c.transport.abortConnection()
    yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_deeply_nested_requests_get_an_error_and_the_connection_stays_usable():
    """2,040 levels of '[' (and deep objects, deep msgpack) get error 2; the client carries on."""
    hub, factory, port = start_server(max_message_bytes=64 * 1024)
    waiter = Waiter()
    try:
        f, d = connect(port, "", waiter.check)
        client = yield d
        deep = [(b"[" * 2040, False), (b'{"a":' * 5000 + b"1" + b"}" * 5000, False),
                (b"\x91" * 2040 + b"\xc0", True), (b"\x81\xa1a" * 5000 + b"\xc0", True)]
        for data, binary in deep:
            client.sendMessage(data, binary)
        client.send_json({"op": "subscribe", "channels": CHANNELS, "id": 7})
        client.send_json({"op": "ping", "id": 8})
        yield waiter.until(lambda: client.messages and client.messages[-1].get("event") == "pong",
                           "the pong after the deep requests")
        errors = client.messages[:len(deep)]
        assert [m["code"] for m in errors] == [ErrorCode.BAD_REQUEST] * len(deep), errors
        assert all(m["message"] == f"request nests deeper than {MAX_REQUEST_DEPTH} levels"
                   for m in errors)
        assert [m.get("event") for m in client.messages[len(deep):]].count("subscribed") == 2
        assert client.state == client.STATE_OPEN and not f.closed.called
        assert hub.subscriber_count("trades@BTC-PERP") == 1
        # and the server still takes new clients
        _, d2 = connect(port, "?format=msgpack")
        other = yield d2
        assert other.state == other.STATE_OPEN
    finally:
        yield stop(factory, port)


@pytest_twisted.inlineCallbacks
def test_gauge_returns_to_start_after_unclean_disconnects():
    """Aborts (RST) from either side, drops mid-handshake and clean closes all leave the
    active-connections gauge, the per-address counts and the subscriptions exact."""
    hub, factory, port = start_server()
    waiter = Waiter()
    watch(factory, waiter)
    start = gauge()
    try:
        clients = []
        for query in ("", "?format=msgpack", "", ""):
            _, d = connect(port, query, waiter.check)
            clients.append((yield d))
        for c in clients:
            c.send_json({"op": "subscribe", "channels": CHANNELS})
        yield waiter.until(lambda: all(len(c.messages) >= len(CHANNELS) for c in clients),
                           "subscription acks")
        assert gauge() == start + 4
        assert factory.per_address == {"127.0.0.1": 4}
        assert hub.subscriber_count("trades@BTC-PERP") == 4
        # one raw client mid-handshake, one that completed it by hand
        half = yield connect_raw(port)
        half.transport.write(UPGRADE[:40])
        upgraded = yield connect_raw(port, waiter.check)
        upgraded.transport.write(UPGRADE)
        yield waiter.until(lambda: b"\r\n\r\n" in upgraded.received, "the 101 response")
        assert upgraded.received.startswith(b"HTTP/1.1 101")
        assert gauge() == start + 5
        yield until_connections(factory, waiter, 6, "all connected")

        clients[0].transport.abortConnection()  # client RST, subscribed
        clients[1].transport.abortConnection()
        half.transport.abortConnection()  # RST before the handshake completes
        upgraded.transport.abortConnection()  # RST right after it
        server_side = next(p for p in factory.connections
                           if p.transport.getPeer().port == clients[2].transport.getHost().port)
        server_side.transport.abortConnection()  # the server aborts (as a ping timeout does)
        clients[3].sendClose(1000)  # and one clean close
        yield until_connections(factory, waiter, 0, "every connection ended")
        assert gauge() == start
        assert factory.per_address == {} and factory.open_connections == set()
        assert hub.subscriber_count("trades@BTC-PERP") == 0
        assert hub.subscriber_count("orderbook@BTC-PERP@5") == 0
    finally:
        yield stop(factory, port)


@pytest_twisted.inlineCallbacks
def test_half_open_connections_do_not_take_the_address_slots():
    """Sockets that never send a handshake do not count against the per-address limit."""
    _, factory, port = start_server(max_connections_per_address=1, handshake_timeout_s=60)
    waiter = Waiter()
    watch(factory, waiter)
    try:
        for _ in range(3):
            yield connect_raw(port)
        yield until_connections(factory, waiter, 3, "three silent sockets")
        _, d = connect(port)
        client = yield d  # the address's one slot is still free
        assert client.state == client.STATE_OPEN
        _, d2 = connect(port)
        with pytest.raises(ConnectionError, match="429"):
            yield d2  # and the limit holds for open connections
        assert factory.per_address == {"127.0.0.1": 1}
    finally:
        yield stop(factory, port)


@pytest_twisted.inlineCallbacks
def test_silent_connection_is_aborted_after_the_handshake_timeout():
    """A socket that connects and sends nothing is dropped after handshake_timeout_s; the
    slot it held is taken by the next client."""
    _, factory, port = start_server(max_connections=1, handshake_timeout_s=1.0)
    waiter = Waiter()
    watch(factory, waiter)
    timeouts = closed_total("handshake_timeout")
    start = gauge()
    try:
        silent = yield connect_raw(port)
        yield until_connections(factory, waiter, 1, "the silent socket")
        _, d = connect(port)
        with pytest.raises(ConnectionError, match="503"):
            yield d  # the silent socket holds the only connection
        reason = yield silent.lost.addTimeout(TIMEOUT, reactor)
        assert not isinstance(reason, ConnectionDone), reason  # aborted by the server
        assert silent.received == b""
        yield until_connections(factory, waiter, 0, "the silent socket forgotten")
        assert closed_total("handshake_timeout") == timeouts + 1
        assert gauge() == start
        _, d2 = connect(port)
        client = yield d2
        assert client.state == client.STATE_OPEN
    finally:
        yield stop(factory, port)


def test_handshake_timeout_runs_on_the_factory_clock():
    """The handshake timer is the factory's clock's: it fires at the timeout, not before, and
    a completed handshake cancels it."""
    clock = task.Clock()
    factory = FeedServerFactory(FeedHub(FeedCore(INSTRUMENTS)), handshake_timeout_s=5.0,
                                clock=clock)
    peer = IPv4Address("TCP", "10.0.0.1", 40000)
    silent = factory.buildProtocol(peer)
    silent_transport = StringTransport(peerAddress=peer)
    silent.makeConnection(silent_transport)
    opening = factory.buildProtocol(peer)
    opening_transport = StringTransport(peerAddress=peer)
    opening.makeConnection(opening_transport)
    start = gauge()
    opening.dataReceived(UPGRADE)
    assert opening_transport.value().startswith(b"HTTP/1.1 101")
    assert factory.per_address == {"10.0.0.1": 1} and gauge() == start + 1
    assert len(clock.getDelayedCalls()) == 1  # the silent one's timer only
    clock.advance(4.99)
    assert not silent_transport.disconnecting
    clock.advance(0.01)
    assert silent_transport.disconnecting and silent_transport.disconnected  # aborted
    assert silent.closed_cause == "handshake_timeout"
    silent.connectionLost(Failure(ConnectionAborted()))
    assert factory.connections == {opening}
    clock.advance(60)
    assert not opening_transport.disconnecting
    opening.connectionLost(Failure(ConnectionAborted()))
    assert factory.connections == set() and factory.per_address == {} and gauge() == start
    assert not clock.getDelayedCalls()
