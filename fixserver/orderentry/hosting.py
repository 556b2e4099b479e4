"""Twisted glue for order entry: session life events to the application, and the HTTP admin
resource (``POST /admin/kill-switch?firm=X&active=1``)."""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from fixserver.http import StateHashResource
from fixserver.protocol import FixProtocol, SessionHost

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


class KillSwitchResource(Resource):
    """``POST /admin/kill-switch?firm=X&active=1|0``: answers once the state is durable."""

    isLeaf = True

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_POST(self, request: Request) -> Any:
        args = request.args or {}
        firm = (args.get(b"firm") or [b""])[0].decode("utf-8", "replace")
        active = (args.get(b"active") or [b""])[0]
        request.setHeader(b"content-type", b"application/json")
        if not firm or active not in (b"0", b"1"):
            request.setResponseCode(400)
            return b'{"error":"expected ?firm=X&active=1 or active=0"}\n'
        try:
            self.service.app.set_kill_switch(firm, active == b"1")
        except KeyError:
            request.setResponseCode(404)
            return json.dumps({"error": f"unknown firm {firm}"}).encode() + b"\n"
        except Exception as exc:  # the pipeline is stopped
            request.setResponseCode(503)
            return json.dumps({"error": f"the exchange is not accepting commands: {exc}"}
                              ).encode() + b"\n"
        log.warn("admin.kill_switch firm={firm} active={active}", firm=firm,
                 active=active == b"1")
        # Journaled as an engine command: matched now, answered once durable and released.
        self.service.pipeline.tick()
        d = self.service.pipeline.when_idle()

        def done(_: Any) -> None:
            app = self.service.app
            if self.service.pipeline.failure is not None:
                request.setResponseCode(500)
                request.write(b'{"error":"the journal failed; the kill switch is not durable"}\n')
            else:
                body = {"firm": firm, "active": active == b"1",
                        "canceled": app.kill_canceled.get(firm, 0) if active == b"1" else 0,
                        "killed": sorted(app.killed)}
                request.write(json.dumps(body).encode() + b"\n")
            request.finish()

        d.addCallback(done)
        return NOT_DONE_YET


def admin_resource(service: Any) -> Resource:
    """The ``/admin`` subtree."""
    admin = Resource()
    kill_switch: Any = KillSwitchResource(service)  # IResource by inheritance (stubs)
    admin.putChild(b"kill-switch", kill_switch)
    pipeline = service.pipeline
    state_hash: Any = StateHashResource(  # the live engine, for the crash test's replay check
        lambda: (pipeline.sequencer.position()[0] - 1, pipeline.engine.state_hash()))
    admin.putChild(b"state-hash", state_hash)
    return admin
