"""Twisted glue for the sans-IO session core: one ``FixProtocol`` per TCP (or TLS) connection.

Theory of operation
-------------------
``SessionHost`` is the protocol factory shared by every listening port. Each connection gets
a ``SessionConnection`` (the session core); the glue feeds it bytes and the time, then
*pumps*: hands the core's events to the application, logs and counts them, writes what the
core wants sent, closes when it says so, and re-arms one ``callLater`` for the core's next
deadline (heartbeats, TestRequests, logon and logout timeouts).

A slow reader must never hold up other sessions or grow memory without bound: the protocol
registers itself as a streaming producer on its transport, so Twisted tells it when the
socket's send buffer backs up (``pauseProducing``) and when it drains (``resumeProducing``).
Bytes written while paused are counted; past the session's ``max_output_buffer`` the
connection is aborted. A ResendRequest is served by the host's ``ResendDriver``
(``fixserver.resend_driver``): a chunk per reactor turn, none while paused; output the
session numbers meanwhile waits in the core behind the resend, and past
``max_output_buffer`` of it the connection is aborted too.

Failed Logons go through the host's ``LogonGuard`` (``fixserver.logon_guard``): a connection
from a locked-out address is closed as soon as it is made, the protocol is the core's
``LogonGate`` (a locked-out session is refused before its credentials are checked), and a
failed Logon's connection is closed only after the throttle's delay. A connection that closes
without ever logging on is reported once, rate-limited, by the host's ``ConnectionLog``
(``fixserver.connection_log``: ``fix.rejected`` with a cause), as are garbled frames.

A clean shutdown sends Logout on every logged-on connection and waits (bounded) until the
peers answer and the connections close.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable
from typing import Protocol as TypingProtocol

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from feeds.tcp_write import direct_socket, write_now
from fixserver import connection_log, metrics
from fixserver.connection_log import ConnectionLog
from fixserver.logon_guard import LogonGuard
from fixserver.logon_throttle import LogonThrottle
from fixserver.resend_driver import ResendDriver
from fixserver.session import SessionConnection
from fixserver.session_events import (
    ApplicationMessageReceived,
    ConnectionClosed,
    ConnectionState,
    GarbledLimitExceeded,
    GarbledMessageIgnored,
    LoggedOn,
    LoggedOut,
    LogonFailed,
)
from fixserver.settings import SessionSettings

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from fixserver.application import Application
    from fixserver.session import Session, SessionRegistry

log = Logger(namespace="fixserver")

#: output limit before a connection is bound to a session (its Logon has not been accepted)
DEFAULT_MAX_OUTPUT_BUFFER: int = attr.fields(SessionSettings).max_output_buffer.default or 0


class SessionObserver(TypingProtocol):
    """Told when a session logs on and when it stops being logged on (logout or lost
    connection), on the reactor thread; e.g. the fix_sessions writer (fixserver.pg)."""

    def session_logged_on(self, session: Session, now_ns: int) -> None: ...

    def session_logged_out(self, session: Session, now_ns: int) -> None: ...


def _peer(address: object) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


def _remote_host(address: object) -> str:
    """What the logon throttle counts failures of one remote address by."""
    host = getattr(address, "host", None)
    return str(host) if host is not None else str(address)


@implementer(IPushProducer)
class FixProtocol(Protocol):
    """One FIX connection: bytes in and out of a ``SessionConnection``."""

    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.connection: SessionConnection | None = None
        self.peer = "?"
        self.address = "?"
        #: why this connection, not logged on, is being closed (connection_log causes)
        self._cause: str | None = None
        #: the session core's reason for closing it
        self._close_reason: str | None = None
        #: a failed Logon's connection is closed this long after the failure (logon throttle)
        self._close_delay_ns = 0
        self._timer: Any = None  # IDelayedCall
        self._sock: Any = None  # the socket, for writes that need not wait (feeds.tcp_write)
        self._timer_deadline: int | None = None
        self._paused = False
        self._written_while_paused = 0
        self._closing = False
        self._inbound = metrics.InboundCounter()
        self._label = metrics.UNBOUND_SESSION

    # --- Protocol ---

    @property
    def _transport(self) -> Any:
        # Twisted's interfaces are zope interfaces, which mypy cannot check without a plugin.
        return self.transport

    def connectionMade(self) -> None:
        self.peer = _peer(self._transport.getPeer())
        self.address = _remote_host(self._transport.getPeer())
        if self.host.nodelay:
            set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
            if set_nodelay is not None:
                set_nodelay(True)
        self._transport.registerProducer(self, True)
        self._sock = direct_socket(self.transport)
        now = self.host.now_ns()
        self.host.protocols.add(self)
        metrics.CONNECTIONS_OPEN.inc()
        if self.host.logon_guard.refuse_connection(self.address, self.peer, now):
            self._closing = True  # a locked-out address: closed without a word
            self._cause = connection_log.LOCKED_OUT
            self._transport.loseConnection()
            return
        self.connection = SessionConnection(self.host.registry, now, gate=self)
        self.host.connection_log.connected(self.peer, now)
        self._pump(now)

    def dataReceived(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or self._closing:
            return
        now = self.host.now_ns()
        connection.receive_data(data, now)
        self._inbound.feed(self._label, data)
        self._pump(now)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self.host.resends.gone(self)
        self.host.protocols.discard(self)
        metrics.CONNECTIONS_OPEN.dec()
        connection = self.connection
        now = self.host.now_ns()
        if connection is not None:
            if connection.state is ConnectionState.AWAITING_LOGON and self._cause is None:
                self._cause = connection_log.PEER_CLOSED
            if connection.state is not ConnectionState.CLOSED:
                connection.connection_lost(now)
            self._closing = True  # nothing more goes out; events below are only reported
            self._handle_events(now)
        if self._label == metrics.UNBOUND_SESSION:  # never logged on: one rate-limited line
            self.host.connection_log.rejected(
                self.peer, self._cause or connection_log.REFUSED,
                self._close_reason or reason.getErrorMessage(), now)
        else:
            log.info(
                "fix.disconnect peer={peer} session={session} reason={reason}",
                peer=self.peer,
                session=self._label,
                reason=reason.getErrorMessage(),
            )
        self.host.connection_gone(self)

    # --- IPushProducer: Twisted calls these as the transport's send buffer fills/drains ---

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._written_while_paused = 0
        self.host.resends.wake(self)

    def stopProducing(self) -> None:
        self._paused = True

    # --- ResendTarget: the host's ResendDriver serves a resend a chunk per reactor turn ---

    @property
    def resend_label(self) -> str:
        return self._label

    def resend_blocked(self) -> bool:
        return self._paused

    def resend_rate(self) -> int:
        session = self.connection.session if self.connection is not None else None
        return session.settings.resend_rate if session is not None else 0

    def resend_chunk(self) -> tuple[int, bool]:
        connection = self.connection
        if connection is None or self._closing or connection.session is None:
            return 0, False
        settings = connection.session.settings
        now = self.host.now_ns()
        count = connection.continue_resend(
            settings.resend_chunk_messages, settings.resend_chunk_bytes, now
        )
        self._pump(now)
        return count, connection.resend_pending and not self._closing

    # --- the pump ---

    def flush(self) -> None:
        """Send what the session core has queued (e.g. after ``session.send`` from outside)."""
        if self.connection is not None and not self._closing:
            self._pump(self.host.now_ns())

    def logout(self, text: str) -> None:
        """Start a clean Logout (server shutdown); the core closes after the reply or timeout."""
        connection = self.connection
        if connection is None or self._closing:
            if self._timer is not None:  # a failed Logon's delayed close: close now
                self._cancel_timer()
                self._transport.loseConnection()
            return
        now = self.host.now_ns()
        if connection.state is ConnectionState.ACTIVE:
            connection.initiate_logout(text, now)
            self._pump(now)
        elif connection.state is ConnectionState.AWAITING_LOGON:
            self._closing = True
            self._cause = self._cause or connection_log.SHUTDOWN
            self._transport.loseConnection()

    def _pump(self, now: int) -> None:
        connection = self.connection
        assert connection is not None
        self._handle_events(now)
        if self._closing:
            return
        out = connection.data_to_send()
        if out:
            self._write(out)
            if self._closing:  # a slow reader was cut off
                return
        if connection.resend_pending:  # the rest is served by the host's ResendDriver
            if connection.held_output_bytes > self._output_limit():
                self._drop_slow_reader(self._output_limit(), connection.held_output_bytes)
                return
            self.host.resends.want(self)
        if connection.should_close:
            self._closing = True
            self._cancel_timer()
            if self._close_delay_ns > 0:  # a failed Logon: the close is held back (throttle)
                delay = self._close_delay_ns / 1e9
                self._timer = self.host.clock.callLater(delay, self._transport.loseConnection)
            else:
                self._transport.loseConnection()
            return
        self._reschedule(now)

    def _handle_events(self, now: int) -> None:
        connection = self.connection
        assert connection is not None
        while True:
            event = connection.next_event()
            if event is None:
                return
            if isinstance(event, ApplicationMessageReceived):
                self._deliver(event, now)
            elif isinstance(event, LoggedOn):
                self._label = event.session.settings.session_id
                self.host.logged_on(event.session, self)
            elif isinstance(event, LoggedOut):
                self.host.logged_out(event.session, self, event.reason)
            elif isinstance(event, GarbledMessageIgnored):
                self.host.connection_log.garbled(
                    self.peer, self._label, event.reason, event.raw, now)
                if self._label == metrics.UNBOUND_SESSION:
                    self._cause = self._cause or connection_log.GARBLED
            elif isinstance(event, GarbledLimitExceeded):
                self.host.connection_log.garbled_limit(
                    self.peer, self._label, event.count, event.window_s)
            elif isinstance(event, LogonFailed):
                self._cause = connection_log.LOGON_FAILED  # fix.logon_failed says it all
                self._close_delay_ns = self.host.logon_guard.failed(
                    self.address, self.peer, event.session, event.reason, now
                )
            elif isinstance(event, ConnectionClosed):
                if self._label == metrics.UNBOUND_SESSION:  # reported as fix.rejected
                    self._close_reason = event.reason
                    continue
                log.info(
                    "fix.close peer={peer} session={session} reason={reason}",
                    peer=self.peer,
                    session=self._label,
                    reason=event.reason,
                )

    def refuse_logon(self, session: Session | None, now_ns: int) -> str | None:
        """The session core's LogonGate: refused at once while locked out (logon throttle)."""
        refused = self.host.logon_guard.refuse_logon(self.address, self.peer, session, now_ns)
        if refused is not None:
            self._cause = connection_log.LOCKED_OUT
        return refused

    def _deliver(self, event: ApplicationMessageReceived, now: int) -> None:
        try:
            self.host.application.on_message(event.session, event.message, now)
        except Exception:
            # The message has consumed its sequence number; a bug in one handler must not
            # take the connection (or the reactor) down with it. Loudly logged.
            log.failure(
                "fix.application_error session={session} msg_type={msg_type}",
                session=self._label,
                msg_type=event.message.msg_type,
            )

    def _write(self, data: bytes) -> None:
        metrics.count_sent(self._label, data)
        if self._paused:
            self._written_while_paused += len(data)
            limit = self._output_limit()
            queued = self._queued() + len(data)
            if queued > limit:
                self._drop_slow_reader(limit, queued)
                return
        self.host.before_write()
        # straight to the socket when Twisted holds nothing unsent for it (feeds.tcp_write)
        write_now(self._transport, self._sock, data)

    def _queued(self) -> int:
        """Bytes the transport holds unsent. Twisted resumes a producer only once its buffer
        is empty, so under steady load a peer that reads may stay "paused" for long while
        its buffer goes up and down: what it has not read yet is the measure of a slow
        reader, not what was written since the pause. A TCP transport exposes its buffer
        (``twisted.internet.abstract.FileDescriptor``); for any other (TLS), the bytes
        written since the pause are the bound."""
        t = self._transport
        try:
            return len(t.dataBuffer) - t.offset + t._tempDataLen
        except (AttributeError, TypeError):
            return self._written_while_paused

    def _output_limit(self) -> int:
        session = self.connection.session if self.connection is not None else None
        if session is None:
            return DEFAULT_MAX_OUTPUT_BUFFER
        return session.settings.max_output_buffer

    def _drop_slow_reader(self, limit: int, queued: int) -> None:
        metrics.DISCONNECTS.labels("slow_reader").inc()
        log.warn(
            "fix.slow_reader peer={peer} session={session} queued={queued} limit={limit}",
            peer=self.peer,
            session=self._label,
            queued=queued,
            limit=limit,
        )
        self._closing = True
        self._cancel_timer()
        self._transport.abortConnection()

    # --- the one timer ---

    def _reschedule(self, now: int) -> None:
        connection = self.connection
        assert connection is not None
        deadline = connection.next_deadline_ns()
        armed = self._timer_deadline
        if self._timer is not None and deadline is not None and armed is not None \
                and armed <= deadline:
            # The armed timer fires no later than needed. Every message sent or received
            # moves the deadline later, so re-arming each time was a cancel and a callLater
            # per message (a tenth of a released tick's cost at a few thousand orders/s);
            # a timer that fires early only finds nothing due (the core checks ``now``
            # against each deadline) and arms the real one.
            return
        self._cancel_timer()
        if deadline is None:
            return
        delay = max(0.0, (deadline - now) / 1e9)
        self._timer_deadline = deadline
        self._timer = self.host.clock.callLater(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_deadline = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        connection = self.connection
        if connection is None or self._closing:
            return
        now = self.host.now_ns()
        awaiting_logon = connection.state is ConnectionState.AWAITING_LOGON
        connection.on_timer(now)
        if awaiting_logon and connection.state is ConnectionState.CLOSED:
            self._cause = self._cause or connection_log.LOGON_TIMEOUT
        self._pump(now)


class SessionHost(Factory):
    """The protocol factory of every FIX listening port: sessions, application, time."""

    protocol = FixProtocol
    noisy = False

    def __init__(
        self,
        registry: SessionRegistry,
        application: Application,
        clock: Any,  # IReactorTime
        now_ns: Callable[[], int] = time.time_ns,
        nodelay: bool = True,
        before_write: Callable[[], None] = lambda: None,
        logon_throttle: LogonThrottle | None = None,
        max_concurrent_resends: int = 4,
    ) -> None:
        self.registry = registry
        #: delays and lockouts after failed Logons; by default with the sessions' own limits
        #: (LogonLockoutFailures/LogonLockoutSeconds, the strictest for unknown CompIDs)
        if logon_throttle is None:
            logon_throttle = LogonThrottle.for_sessions(s.settings for s in registry)
        self.logon_guard = LogonGuard(logon_throttle, now_ns)
        #: called before any bytes go to a socket: hands batched store records to the kernel,
        #: so whatever a client may have seen survives a crash of the process
        self.before_write = before_write
        self.application = application
        self.clock = clock
        self.now_ns = now_ns
        self.nodelay = nodelay
        #: serves ResendRequests a chunk per reactor turn, MaxConcurrentResends at a time
        self.resends = ResendDriver(clock, now_ns, max_concurrent_resends)
        self.protocols: set[FixProtocol] = set()
        #: the protocol each logged-on session is bound to
        self.bound: dict[Session, FixProtocol] = {}
        #: told of every logon and logout (the composition root adds them)
        self.observers: list[SessionObserver] = []
        #: rate-limited lines and counters of connections never logged on, garbled frames
        self.connection_log = ConnectionLog()
        self._closed_waiters: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> FixProtocol:
        return FixProtocol(self)

    # --- called by the protocols ---

    def logged_on(self, session: Session, protocol: FixProtocol) -> None:
        self.bound[session] = protocol
        self.logon_guard.succeeded(session)
        for observer in self.observers:
            observer.session_logged_on(session, self.now_ns())
        metrics.SESSIONS_LOGGED_ON.inc()
        metrics.LOGONS.labels(session.settings.session_id).inc()
        log.info(
            "fix.logon session={session} peer={peer}",
            session=session.settings.session_id,
            peer=protocol.peer,
        )

    def logged_out(self, session: Session, protocol: FixProtocol, reason: str) -> None:
        if self.bound.get(session) is protocol:
            del self.bound[session]
            metrics.SESSIONS_LOGGED_ON.dec()
            for observer in self.observers:
                observer.session_logged_out(session, self.now_ns())
        metrics.LOGOUTS.labels(session.settings.session_id).inc()
        log.info(
            "fix.logout session={session} peer={peer} reason={reason}",
            session=session.settings.session_id,
            peer=protocol.peer,
            reason=reason,
        )

    def connection_gone(self, protocol: FixProtocol) -> None:
        for session, bound in list(self.bound.items()):
            if bound is protocol:  # lost without a LoggedOut event: keep the gauge right
                del self.bound[session]
                metrics.SESSIONS_LOGGED_ON.dec()
                for observer in self.observers:
                    observer.session_logged_out(session, self.now_ns())
        if not self.protocols:
            self._fire_closed_waiters()

    def _fire_closed_waiters(self) -> None:
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # --- called by the composition root ---

    def flush(self, session: Session | None = None) -> None:
        """Send output queued by ``session.send`` outside a pump (one session, or all)."""
        if session is not None:
            protocol = self.bound.get(session)
            if protocol is not None:
                protocol.flush()
            return
        for protocol in list(self.protocols):
            protocol.flush()

    def shutdown(self, timeout: float, text: str = "server shutting down") -> defer.Deferred[None]:
        """Log every connection out; fires when all are closed or ``timeout`` seconds passed
        (then the rest are aborted)."""
        for protocol in list(self.protocols):
            protocol.logout(text)
        if not self.protocols:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._closed_waiters.append(waiter)

        def abort_stragglers() -> None:
            for protocol in list(self.protocols):
                log.warn("fix.shutdown_abort peer={peer}", peer=protocol.peer)
                metrics.DISCONNECTS.labels("shutdown_abort").inc()
                if protocol.transport is not None:
                    protocol._transport.abortConnection()
            self._fire_closed_waiters()  # done waiting, whether or not the losses are reported

        timer = self.clock.callLater(timeout, abort_stragglers)

        def cancel_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        waiter.addBoth(cancel_timer)
        return waiter
