"""Twisted glue for order entry: session life events to the application, and the HTTP admin
API (:mod:`fixserver.admin`) over the order-entry service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.resource import Resource

from fixserver.admin.actions import ExchangeAdmin
from fixserver.admin.resource import AdminResource
from fixserver.admin.risk_actions import RiskAdmin
from fixserver.admin.tokens import TokenVerifier
from fixserver.protocol import FixProtocol, SessionHost

if TYPE_CHECKING:
    from fixserver.orderentry.wiring import OrderEntryService

log = Logger(namespace="fixserver.orderentry")


class OrderEntryHost(SessionHost):
    """SessionHost that tells the application when a session logs on, logs out or loses its
    connection (cancel-on-disconnect; CancelOnDisconnect 7929 on the Logon)."""

    def _hooks(self) -> Any:
        """The order-entry application: it has logon/logout hooks beyond ``Application``."""
        return self.application

    def logged_on(self, session: Any, protocol: FixProtocol) -> None:
        super().logged_on(session, protocol)
        # The session core keeps the accepted Logon as ``logon_message`` (when it does).
        logon = getattr(protocol.connection, "logon_message", None)
        self._hooks().on_logon(session, logon, self.now_ns())

    def logged_out(self, session: Any, protocol: FixProtocol, reason: str) -> None:
        was_bound = self.bound.get(session) is protocol
        super().logged_out(session, protocol, reason)
        if was_bound:
            self._hooks().on_logout(session, self.now_ns())

    def connection_gone(self, protocol: FixProtocol) -> None:
        lost = [s for s, p in self.bound.items() if p is protocol]
        super().connection_gone(protocol)
        for session in lost:  # lost without a LoggedOut event
            self._hooks().on_logout(session, self.now_ns())


def admin_resource(service: OrderEntryService) -> Resource:
    """The ``/admin`` subtree: the authenticated admin API over the order-entry service's
    pipeline and application and the server's sessions (fixserver.admin.actions), and its
    risk views (fixserver.admin.risk_actions)."""
    server = service.server
    verifier = TokenVerifier(server.config.admin_tokens)
    if verifier.enabled:
        log.info("admin.enabled tokens={names}", names=verifier.names)
    else:
        log.warn("admin.disabled: no AdminToken or AdminTokenFile is configured; every /admin "
                 "request is refused")
    actions = ExchangeAdmin(service.pipeline, service.app, server.sessions,
                            lambda: server.host)  # the host is built after the application
    router = actions.router()
    RiskAdmin(service.pipeline, service.app.directory, service.risk,
              actions.released, service.liquidations).add_routes(router)
    return AdminResource(verifier, router)
