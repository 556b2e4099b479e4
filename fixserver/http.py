"""The HTTP side (twisted.web): ``/metrics`` for Prometheus, ``/health`` and ``/admin``.

``/health`` answers 200 with a small JSON document while the reactor runs: the server's
status and, per configured session, whether it is logged on and its next sequence numbers.
Once the server is failing (its ``failure`` callable returns a reason: the order pipeline
stopped because a journal commit failed) it answers 503 with status ``failing`` and that
``reason``, so a load balancer or supervisor takes it out of service. While something the
exchange depends on is late but it still serves (``degraded`` returns what: the index prices
of margined instruments older than ``IndexStaleSeconds``), it answers 200 with status
``degraded`` and those details (e.g. ``"stale_index": ["BTC-PERP"]``).
``/metrics`` and ``/health`` are open (scrapers, load balancers); ``/admin`` is the
authenticated admin API (:mod:`fixserver.admin`), on this site or, with ``AdminPort``, on a
site of its own (:func:`build_admin_site`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

if TYPE_CHECKING:
    from fixserver.session import Session


def session_health(session: Session) -> dict[str, object]:
    """The health entry of one configured session."""
    store = session.store
    return {
        "id": session.settings.session_id,
        "role": session.settings.role.value,
        "logged_on": session.connection is not None,
        "next_sender_seq": store.next_sender_seq(),
        "next_target_seq": store.next_target_seq(),
    }


class HealthResource(Resource):
    """GET /health: ``{"status": ..., "sessions": [...]}``; 503 with a ``reason`` once
    ``failure()`` returns one."""

    isLeaf = True

    def __init__(
        self,
        sessions: Iterable[Session],
        status: Callable[[], str] = lambda: "ok",
        failure: Callable[[], str | None] = lambda: None,
        degraded: Callable[[], dict[str, object] | None] = lambda: None,
    ) -> None:
        super().__init__()
        self._sessions = sessions
        self._status = status
        self._failure = failure
        self._degraded = degraded

    def render_GET(self, request: Request) -> bytes:
        body: dict[str, object] = {"status": self._status()}
        reason = self._failure()
        if reason is not None:
            request.setResponseCode(503)
            body = {"status": "failing", "reason": reason}
        elif body["status"] == "ok":
            details = self._degraded()
            if details:
                body = {"status": "degraded", **details}
        body["sessions"] = [session_health(s) for s in self._sessions]
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


class _Root(Resource):
    """The site root: known children, and an escaped 404 page for everything else."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


def build_site(
    sessions: Iterable[Session],
    status: Callable[[], str] = lambda: "ok",
    registry: CollectorRegistry = REGISTRY,
    admin: Resource | None = None,
    failure: Callable[[], str | None] = lambda: None,
    degraded: Callable[[], dict[str, object] | None] = lambda: None,
) -> Site:
    """The HTTP site: ``/metrics``, ``/health`` and (order entry) ``/admin``."""
    root = _Root()
    metrics_page: Any = MetricsResource(registry=registry)
    health_page: Any = HealthResource(sessions, status, failure, degraded)
    root.putChild(b"metrics", metrics_page)
    root.putChild(b"health", health_page)
    if admin is not None:
        admin_page: Any = admin  # a Resource; twisted's stubs want the IResource interface
        root.putChild(b"admin", admin_page)
    return _site(root)


def build_admin_site(admin: Resource) -> Site:
    """The admin API's own site (``AdminPort``): ``/admin`` only."""
    root = _Root()
    admin_page: Any = admin
    root.putChild(b"admin", admin_page)
    return _site(root)


def _site(root: Resource) -> Site:
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False  # no "Starting factory" lines on every start
    return site
