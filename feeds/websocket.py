"""Autobahn glue: the WebSocket feed server (thin; the protocol and fan-out are pure).

Theory of operation
-------------------
Each connection is a :class:`FeedServerProtocol`: a :class:`~feeds.hub.Subscriber` of the
hub with a :class:`~feeds.protocol.ClientSession` for its requests. The hub frames each
batch message once per format with the factory's ``prepareMessage`` and every connection
writes that same prepared frame (``sendPreparedMessage``).

Slow consumers: the connection registers itself as a streaming producer on its TCP
transport. Twisted pauses it when its write buffer passes the transport's ``bufferSize``
(the kernel's socket buffer is full); while paused, frames wait in a per-connection queue.
When the queue would pass ``max_buffer_bytes`` the client is too slow: the queue is dropped,
the connection leaves every channel and is closed with code 4008 "slow consumer" (it is
dropped outright if it does not answer the close within the close-handshake timeout).
Memory per connection is therefore bounded and nobody else waits for it.

Writes: a prepared frame is complete wire bytes, so the connection writes it itself rather
than through Autobahn's ``sendData`` (which only adds optional traffic statistics). When
Twisted's write buffer for the connection is empty it is sent straight to the socket:
Twisted's own ``write`` always defers the send to the next reactor iteration, at the cost of
two ``epoll_ctl`` calls and one wake-up per connection per message, which with 1,000
subscribers is most of a batch's fan-out time. Whatever the kernel does not take goes to
``transport.write`` as usual, so ordering, back-pressure and error handling stay Twisted's.
Transports other than plain TCP (TLS) always use ``transport.write``.

Limits: connections per peer address and in total (the opening handshake is refused with
HTTP 429 / 503), subscriptions per connection, inbound message size (Autobahn's
``maxMessagePayloadSize``: larger requests close the connection with 1009), request nesting
(:mod:`feeds.request_decoder`), and keepalive with Autobahn's auto ping (no pong within the
timeout drops the connection).

Accounting: every TCP connection is in ``factory.connections`` (the total limit counts it
from the moment it is accepted) until ``connectionLost``, which Twisted calls exactly once
however the connection ends (close handshake, abort, RST, timeout). A connection counts
against its address's limit, and in the ``active_websocket_connections`` gauge, only from
the completed opening handshake (``onOpen``) to ``connectionLost``; both are released there
and nowhere else, so an unclean end cannot leak them. A connection that has not completed
the handshake within ``handshake_timeout_s`` (a socket that connects and sends nothing) is
aborted, on the factory's ``clock``.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from feeds import metrics
from feeds.encoding import WireFormat, encode
from feeds.hub import FeedHub
from feeds.protocol import ClientSession, Reply, Subscribe, parse_format
from feeds.tcp_write import direct_socket, write_now

SLOW_CONSUMER_CODE = 4008
SLOW_CONSUMER_REASON = "slow consumer"
TOO_MANY_REQUESTS = 429


@implementer(IPushProducer)
class FeedServerProtocol(WebSocketServerProtocol):
    """One feed client connection."""

    factory: FeedServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.wire_format = WireFormat.JSON
        self.session: ClientSession | None = None
        self.peer_host = ""
        self.closed_cause = ""  # why the server closed it ("" if it did not)
        self._queue: deque[Any] = deque()
        self._queued_bytes = 0
        self._paused = False
        self._live = False  # open and not being closed by us: deliver() sends
        self._sock: Any = None  # the socket, when the direct-send fast path applies
        self._handshake_timer: Any = None  # IDelayedCall

    # -- connection lifecycle --------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.peer_host = getattr(transport.getPeer(), "host", "")
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)  # small frames must not wait for Nagle
        self.factory.connection_started(self)
        super().connectionMade()
        f = self.factory
        self._handshake_timer = f.clock.callLater(f.handshake_timeout_s, self._handshake_expired)

    def _handshake_expired(self) -> None:
        """Abort a connection that did not complete the opening handshake in time."""
        self._handshake_timer = None
        self.closed_cause = "handshake_timeout"
        metrics.CLOSED_CONNECTIONS.labels("handshake_timeout").inc()
        self.wasClean = False
        self.wasNotCleanReason = "opening handshake timeout"
        self.droppedByMe = True
        transport: Any = self.transport
        transport.abortConnection()  # also a refused one whose peer keeps the socket open

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            if self._handshake_timer.active():
                self._handshake_timer.cancel()
            self._handshake_timer = None

    def onConnect(self, request: Any) -> None:
        f = self.factory
        refusal = f.refusal(self.peer_host)
        if refusal is not None:
            metrics.REJECTED_CONNECTIONS.labels(refusal[2]).inc()
            raise ConnectionDeny(refusal[0], refusal[1])
        try:
            fmt = parse_format(request.params.get("format", [None])[0])
        except ValueError:
            metrics.REJECTED_CONNECTIONS.labels("bad_format").inc()
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST, "format must be json or msgpack"
            ) from None
        self.wire_format = fmt
        self.session = ClientSession(f.hub.core.symbols, fmt, f.max_subscriptions)

    def onOpen(self) -> None:
        self._cancel_handshake_timer()
        self.factory.connection_opened(self)
        self._live = True
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._sock = direct_socket(transport)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self._leave()
        self.session = None

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_handshake_timer()
        try:
            super().connectionLost(reason)
        finally:
            self._leave()
            self.factory.connection_ended(self)

    # -- requests --------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is None or not self._live:
            return
        hub = self.factory.hub
        for action in self.session.handle(payload, isBinary):
            if type(action) is Reply:
                self._reply(action.payload)
            elif type(action) is Subscribe:
                hub.subscribe(self, action.channel)
            else:
                hub.unsubscribe(self, action.channel)  # type: ignore[union-attr]
            if not self._live:
                return  # a snapshot overflowed the buffer and closed us

    def _reply(self, payload: dict) -> None:
        if payload.get("event") == "error":
            metrics.CLIENT_ERRORS.labels(str(payload["code"])).inc()
        fmt = self.wire_format
        self.deliver(self.factory.prepareMessage(encode(payload, fmt), fmt.is_binary))

    # -- Subscriber: outbound with a bounded queue -------------------------------------------

    def deliver(self, frame: Any) -> None:
        """Send a prepared frame now, or queue it while the transport is paused."""
        if not self._live:
            return
        if self._paused or self._queue:
            self._queue.append(frame)
            self._queued_bytes += len(frame.payloadHybi)
            if self._queued_bytes > self.factory.max_buffer_bytes:
                self.close_slow_consumer()
            return
        self._write(frame.payloadHybi)

    def _write(self, data: bytes) -> None:
        """Write frame bytes: straight to the socket when nothing is buffered (see top), and
        nothing is in Autobahn's own send queue either."""
        write_now(self.transport, None if self.send_queue else self._sock, data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        queue = self._queue
        while queue and not self._paused and self._live:
            frame = queue.popleft()
            self._queued_bytes -= len(frame.payloadHybi)
            self._write(frame.payloadHybi)

    def stopProducing(self) -> None:
        self._leave()

    def close_slow_consumer(self) -> None:
        """Drop what is queued, leave every channel and close with 4008."""
        self.closed_cause = "slow_consumer"
        metrics.CLOSED_CONNECTIONS.labels("slow_consumer").inc()
        self._leave()
        self.sendClose(SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON)

    def _leave(self) -> None:
        self._live = False
        self._queue.clear()
        self._queued_bytes = 0
        if self.session is not None:
            self.factory.hub.unsubscribe_all(self, self.session.subscriptions.values())

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames waiting for the transport."""
        return self._queued_bytes


class FeedServerFactory(WebSocketServerFactory):
    """The feed server: its hub, its limits and its connections."""

    protocol = FeedServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        hub: FeedHub,
        url: str = "ws://127.0.0.1",
        *,
        max_connections: int = 10_000,
        max_connections_per_address: int = 100,
        max_subscriptions: int = 100,
        max_buffer_bytes: int = 4 * 1024 * 1024,
        max_message_bytes: int = 4096,
        ping_interval_s: float = 20.0,
        ping_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        handshake_timeout_s: float = 5.0,
        clock: Any = None,  # IReactorTime (default: the reactor)
    ) -> None:
        if handshake_timeout_s <= 0:
            raise ValueError(f"handshake_timeout_s must be > 0, not {handshake_timeout_s!r}")
        super().__init__(url)
        self.hub = hub
        hub.framer = self.prepareMessage
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.max_subscriptions = max_subscriptions
        self.max_buffer_bytes = max_buffer_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.clock: Any = clock if clock is not None else self.reactor
        self.connections: set[FeedServerProtocol] = set()  # every TCP connection
        self.open_connections: set[FeedServerProtocol] = set()  # handshake completed
        self.per_address: Counter[str] = Counter()  # open connections per peer address
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_bytes,
            maxFramePayloadSize=max_message_bytes,
            autoPingInterval=ping_interval_s,
            autoPingTimeout=ping_timeout_s,
            closeHandshakeTimeout=close_timeout_s,
            openHandshakeTimeout=0,  # ours (handshake_timeout_s) runs on self.clock
            failByDrop=False,  # protocol violations get a close frame with the code
        )

    def connection_started(self, proto: FeedServerProtocol) -> None:
        """Count a TCP connection in the total (before its handshake: a flood counts at once)."""
        self.connections.add(proto)

    def connection_opened(self, proto: FeedServerProtocol) -> None:
        """Count a connection whose opening handshake completed against its address."""
        if proto in self.connections and proto not in self.open_connections:
            self.open_connections.add(proto)
            self.per_address[proto.peer_host] += 1
            metrics.ACTIVE_CONNECTIONS.inc()

    def connection_ended(self, proto: FeedServerProtocol) -> None:
        """Forget a TCP connection (called once, from ``connectionLost``)."""
        self.connections.discard(proto)
        if proto in self.open_connections:
            self.open_connections.discard(proto)
            metrics.ACTIVE_CONNECTIONS.dec()
            self.per_address[proto.peer_host] -= 1
            if self.per_address[proto.peer_host] <= 0:
                del self.per_address[proto.peer_host]

    def refusal(self, host: str) -> tuple[int, str, str] | None:
        """(HTTP status, reason, metric cause) if a connection from ``host`` is over a limit.

        Asked during the handshake of a connection that is counted in the total but not yet
        against its address.
        """
        if self.per_address[host] >= self.max_connections_per_address:
            return (TOO_MANY_REQUESTS, "too many connections from this address", "per_address")
        if len(self.connections) > self.max_connections:
            return (ConnectionDeny.SERVICE_UNAVAILABLE, "too many connections", "total")
        return None
