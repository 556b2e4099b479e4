"""The composition root: builds sessions from the config, listens, syncs stores, shuts down.

Seams for what comes later: ``application_factory`` (order entry replaces the reject-all
application), ``store_factory`` (e.g. a Postgres-backed store), ``clock`` and ``now_ns``
(tests). Order entry (fixserver.orderentry.wiring) and market data (fixserver.feeds_wiring)
are built by the default application factory.

Fail-stop: when the order pipeline stops because a journal commit failed (disk full, I/O
error), nothing can be matched or released any more, and only a restart, which recovers from
the journal, brings the exchange back. :meth:`FixServer.pipeline_failed` (the pipeline's
``on_failure``) makes that loud and quick: ``/health`` answers 503 with the reason, a
critical ``exchange.failed`` line is logged (the pipeline's ``journal_failed`` gauge and
``journal_commit_failures_total`` say it in the metrics), the FIX ports stop listening, every
session is logged out with :data:`PIPELINE_FAILED_TEXT`, and once they are gone, or after
``ShutdownTimeout``, the process exits with :data:`EXIT_PIPELINE_FAILED` so that its
supervisor restarts it. ``exit_process`` is a seam (tests).
"""

from __future__ import annotations

import os
import sys
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer, ssl, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from fixserver import metrics
from fixserver.application import Application, UnsupportedMessageApplication
from fixserver.config import ConfigError, ServerConfig
from fixserver.dictionary import DataDictionary, DictionaryError
from fixserver.filestore import FileMessageStore, WriteBatch
from fixserver.http import build_admin_site, build_site
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore, MessageStore

if TYPE_CHECKING:
    from fixserver.pg.session_writer import SessionStateWriter

log = Logger(namespace="fixserver")

ApplicationFactory = Callable[["FixServer"], Application]

#: exit status after the order pipeline failed: restart me (start-up recovers the journal)
EXIT_PIPELINE_FAILED = 3
#: Text (58) of the Logout every session gets when the order pipeline fails
PIPELINE_FAILED_TEXT = "the exchange stopped accepting orders (journal failure); it restarts"


def exit_process(code: int) -> None:
    """Leave at once with ``code``, without the clean shutdown: that closes the journal the
    failure came from, and a hung disk would keep the process from ever exiting. Nothing is
    lost that a SIGKILL would not lose (the durability contract covers that): what clients
    were told is in the kernel (the message stores are written before every socket write)
    and the journal is what the restart recovers from."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def default_application_factory(server: FixServer) -> Application:
    """The config's Application: echo (conformance runs), else order entry with market data
    when the config has [FIRM]s (something to trade), else reject-all."""
    if server.config.application == "echo":
        from fixserver.echo_application import EchoApplication

        return EchoApplication()
    if server.config.firms:
        from fixserver.feeds_wiring import MarketDataFeeds
        from fixserver.orderentry.wiring import order_entry_factory

        service = order_entry_factory(server)
        # Market data (WebSocket, Redis, FIX V/x) from the service's released ticks.
        server.feeds = MarketDataFeeds(server, service)
        return server.feeds.application
    return UnsupportedMessageApplication()


StoreFactory = Callable[[SessionSettings], MessageStore]


def load_dictionary(settings: SessionSettings) -> DataDictionary:
    """The session's dictionary (its DataDictionary file, or the exchange's) and options."""
    options = {
        "validate_fields_out_of_order": settings.validate_fields_out_of_order,
        "validate_fields_have_values": settings.validate_fields_have_values,
        "validate_user_defined_fields": settings.validate_user_defined_fields,
        "allow_unknown_msg_fields": settings.allow_unknown_msg_fields,
    }
    try:
        if settings.data_dictionary:
            return DataDictionary.load(settings.data_dictionary, **options)
        return DataDictionary.standard(**options)
    except (DictionaryError, OSError, ET.ParseError) as exc:
        where = settings.data_dictionary or "the exchange's spec dictionary"
        raise ConfigError(
            f"DataDictionary {where} of session {settings.session_id} cannot be loaded: {exc}"
        ) from exc


class FixServer:
    """The FIX acceptor process: listening ports, sessions, HTTP side and store syncing."""

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any,
        application_factory: ApplicationFactory | None = None,
        store_factory: StoreFactory | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        exit_process: Callable[[int], None] = exit_process,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.now_ns = now_ns
        self.exit_process = exit_process
        #: why the exchange stopped (the order pipeline failed); None while it is healthy
        self.failure_reason: str | None = None
        #: FileMessageStore records gathered between socket writes (see fixserver.filestore)
        self.write_batch = WriteBatch()
        self._store_factory = store_factory or self._default_store
        self.sessions = [
            Session(s, self._store_factory(s), load_dictionary(s)) for s in config.sessions
        ]
        self.registry = SessionRegistry(self.sessions)
        #: market data (fixserver.feeds_wiring.MarketDataFeeds), set by the application factory
        self.feeds: Any = None
        self.application = (application_factory or default_application_factory)(self)
        # An application may bring its own host (order entry: logon/logout notifications),
        # its own start/stop (the order pipeline) and an /admin HTTP subtree.
        host_class = getattr(self.application, "host_class", SessionHost)
        self.host = host_class(
            self.registry,
            self.application,
            reactor,
            now_ns,
            config.socket_nodelay,
            before_write=self.write_batch.flush,
            max_concurrent_resends=config.max_concurrent_resends,
        )
        #: keeps the fix_sessions rows current (fixserver.pg.session_writer), with Postgres
        self.session_rows: SessionStateWriter | None = None
        if config.postgres_dsn:
            from fixserver.pg.session_writer import SessionStateWriter

            self.session_rows = SessionStateWriter(
                config.postgres_dsn, self.sessions, reactor, now_ns)
            self.host.observers.append(self.session_rows)
        self.fix_port: Any = None  # IListeningPort
        self.tls_port: Any = None
        self.http_port: Any = None
        self.admin_port: Any = None  # AdminPort: the admin API's own listening port
        self._sync_loop: task.LoopingCall | None = None
        self._sync_in_flight: defer.Deferred[None] | None = None
        self._status = "starting"
        self._shutdown_trigger: Any = None

    def _default_store(self, settings: SessionSettings) -> MessageStore:
        if self.config.file_store_path is None:
            return MemoryMessageStore(self.now_ns())
        return FileMessageStore(
            self.config.file_store_path, settings.session_id, self.now_ns(), self.write_batch
        )

    # --- start / stop ---

    def start(self) -> None:
        """Listen on the FIX port(s) and the HTTP port; start group-committing the stores."""
        config = self.config
        reactor = self.reactor
        start_application = getattr(self.application, "start", None)
        if start_application is not None:
            start_application()
        if self.feeds is not None:
            self.feeds.start()
        if self.session_rows is not None:
            self.session_rows.start()
        self.fix_port = reactor.listenTCP(
            config.accept_port, self.host, backlog=config.listen_backlog,
            interface=config.accept_address,
        )
        log.info("fix.listen address={address}", address=_address(self.fix_port))
        if config.tls is not None:
            with (
                open(config.tls.key_file, "rb") as key,
                open(config.tls.certificate_file, "rb") as cert,
            ):
                certificate = ssl.PrivateCertificate.loadPEM(key.read() + b"\n" + cert.read())
            self.tls_port = reactor.listenSSL(
                config.tls.port, self.host, certificate.options(),
                backlog=config.listen_backlog, interface=config.accept_address,
            )
            log.info("fix.listen_tls address={address}", address=_address(self.tls_port))
        admin = getattr(self.application, "admin_resource", None)
        if config.http_port is not None:
            self.http_port = reactor.listenTCP(
                config.http_port,
                build_site(
                    self.sessions,
                    lambda: self._status,
                    admin=admin if config.admin_port is None else None,
                    failure=lambda: self.failure_reason,
                    # order entry: stale index prices (fixserver.orderentry.risk_monitor)
                    degraded=getattr(self.application, "health_degraded", lambda: None),
                ),
                interface=config.http_address,
            )
            log.info("http.listen address={address}", address=_address(self.http_port))
        if config.admin_port is not None:
            if admin is None:
                log.warn("admin.no_api: AdminPort is set but the admin API needs order entry")
            else:
                self.admin_port = reactor.listenTCP(
                    config.admin_port, build_admin_site(admin), interface=config.admin_address)
                log.info("admin.listen address={address}", address=_address(self.admin_port))
        self._sync_loop = task.LoopingCall(self.sync_stores)
        self._sync_loop.clock = reactor
        self._sync_loop.start(config.store_sync_interval, now=False)
        self._status = "ok"
        self._shutdown_trigger = reactor.addSystemEventTrigger(
            "before", "shutdown", self._stop_at_shutdown
        )

    def sync_stores(self) -> defer.Deferred[None] | None:
        """One group commit: fsync every store with unsynced writes, in a worker thread."""
        self.write_batch.flush()  # records changed without a socket write since (e.g. resets)
        if self._sync_in_flight is not None:
            return None  # the previous commit is still running; the next tick covers these
        # Only durable stores (FileMessageStore) have needs_sync/sync; memory stores have not.
        dirty: list[Any] = [s.store for s in self.sessions if getattr(s.store, "needs_sync", False)]
        if not dirty:
            return None
        started = time.perf_counter()

        def sync_all() -> None:
            for store in dirty:
                store.sync()

        def done(result: object) -> None:
            self._sync_in_flight = None
            metrics.STORE_SYNC_SECONDS.observe(time.perf_counter() - started)

        def failed(failure: Failure) -> None:
            metrics.STORE_SYNC_FAILURES.inc()
            log.failure("store.sync_failed", failure=failure)

        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), sync_all)
        d.addErrback(failed)
        d.addBoth(done)
        self._sync_in_flight = d
        return d

    def pipeline_failed(self, failure: Failure) -> None:
        """The order pipeline stopped (a journal commit failed): fail-stop, see the module
        docstring. Safe to call from inside a tick or a pump: the logouts start on the next
        reactor turn."""
        if self.failure_reason is not None:
            return
        kind = failure.type.__name__ if failure.type is not None else "error"
        self.failure_reason = f"order pipeline stopped: {kind}: {failure.getErrorMessage()}"
        self._status = "failing"
        log.critical(
            "exchange.failed reason={reason!r} sessions={sessions} exit_code={code} "
            "exit_within_s={timeout}: the exchange stopped accepting orders; logging every "
            "session out, then exiting so that a restart recovers from the journal",
            reason=self.failure_reason, sessions=len(self.host.bound),
            code=EXIT_PIPELINE_FAILED, timeout=self.config.shutdown_timeout,
        )
        self.reactor.callLater(0, self._fail_stop)

    def _fail_stop(self) -> None:
        for port in (self.fix_port, self.tls_port):
            if port is not None:
                port.stopListening()  # clients retry elsewhere, or here after the restart
        done = self.host.shutdown(self.config.shutdown_timeout, PIPELINE_FAILED_TEXT)

        def leave(_: object) -> None:
            self.write_batch.flush()
            log.critical("exchange.exit code={code}", code=EXIT_PIPELINE_FAILED)
            self.exit_process(EXIT_PIPELINE_FAILED)

        done.addBoth(leave)

    def _stop_at_shutdown(self) -> defer.Deferred[None]:
        self._shutdown_trigger = None  # firing now; it must not be removed by stop()
        return self.stop()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, log every session out (bounded wait), then fsync and close stores."""
        if self._status == "stopped":
            return
        self._status = "stopping"
        if self._shutdown_trigger is not None:
            # Called directly (not by the reactor's shutdown): do not run again at shutdown.
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        log.info("fix.shutdown sessions={count}", count=len(self.host.bound))
        ports: list[Any] = [self.fix_port, self.tls_port]
        for port in ports:
            if port is not None and port.connected:
                yield port.stopListening()
        yield self.host.shutdown(self.config.shutdown_timeout)
        stop_application = getattr(self.application, "stop", None)
        if stop_application is not None:
            yield stop_application()
        if self.feeds is not None:  # after the pipeline released its last tick
            yield self.feeds.stop()
        if self.session_rows is not None:  # after the logouts and the last reports
            yield self.session_rows.stop()
        if self._sync_loop is not None and self._sync_loop.running:
            self._sync_loop.stop()
        if self._sync_in_flight is not None:
            yield self._sync_in_flight
        closers = [s.store for s in self.sessions if hasattr(s.store, "close")]
        if closers:
            yield threads.deferToThreadPool(
                self.reactor,
                self.reactor.getThreadPool(),
                lambda: [store.close() for store in closers],
            )
        if self.http_port is not None and self.http_port.connected:
            yield self.http_port.stopListening()
        if self.admin_port is not None and self.admin_port.connected:
            yield self.admin_port.stopListening()
        self._status = "stopped"
        log.info("fix.stopped")


def _address(port: Any) -> str:
    host = port.getHost()
    return f"{getattr(host, 'host', '?')}:{getattr(host, 'port', '?')}"
