"""The admin API's twisted.web resource: thin glue around the gate and the route table.

One leaf resource serves every ``/admin...`` path: the request's method and headers go to
:func:`fixserver.admin.gate.admit` (token, cross-site checks), then the route table
(:class:`fixserver.admin.router.AdminRouter`) finds the action; parameters come from the
query string and a JSON object body. Every answer is JSON (``{"error": ...}`` with the HTTP
status on refusal), never cached. Each admitted action is logged with who did it and how it
ended; each refusal with the peer and why (never the token). Metric:
``admin_requests_total{action, code}``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from fixserver.admin.gate import Refusal, admit, media_type
from fixserver.admin.router import AdminCall, AdminError, AdminRouter, Route
from fixserver.admin.tokens import TokenVerifier

log = Logger(namespace="fixserver.admin")

ADMIN_REQUESTS = Counter(
    "admin_requests", "Admin API requests by action and HTTP status", ["action", "code"])
#: the largest request body read (an admin request is a few parameters)
MAX_BODY = 64 * 1024


def _json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"


class AdminResource(Resource):
    """``/admin`` and everything below it (see module docstring)."""

    isLeaf = True

    def __init__(self, verifier: TokenVerifier, router: AdminRouter) -> None:
        super().__init__()
        self.verifier = verifier
        self.router = router

    def render(self, request: Request) -> Any:
        method = (request.method or b"").decode("ascii", "replace").upper()
        segments = [*(request.prepath or []), *(request.postpath or [])]
        path = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
        try:
            route: Route | None = self.router.resolve(method, path)
        except AdminError:
            route = None
        action = route.name if route is not None else "unknown"
        headers = request.requestHeaders
        decision = admit(
            self.verifier, method,
            [v.decode("latin-1") for v in headers.getRawHeaders(b"authorization") or []],
            _header(request, b"content-type"), _header(request, b"origin"))
        if isinstance(decision, Refusal):
            log.warn("admin.refused method={method} path={path} code={code} reason={reason} "
                     "peer={peer}", method=method, path=path, code=decision.status,
                     reason=decision.error, peer=_peer(request))
            return self._answer(request, action, decision.status, {"error": decision.error},
                                decision.headers)
        who = decision.who
        try:
            route = self.router.resolve(method, path)
            values = _parameters(request, route)
            call = AdminCall(who, self.router.params_of(route, values))
            result = route.handler(call)
        except AdminError as exc:
            self._log_done(who, action, method, path, exc.status, exc.message)
            return self._answer(request, action, exc.status, exc.body(), exc.headers)
        except Exception:
            log.failure("admin.failed who={who} action={action}", who=who, action=action)
            return self._answer(request, action, 500, {"error": "internal error (see the log)"})
        if not isinstance(result, Deferred):
            self._log_done(who, action, method, path, 200, _detail(call))
            return self._answer(request, action, 200, result)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(answer: Any) -> None:
            self._log_done(who, action, method, path, 200, _detail(call))
            if not gone:
                request.write(self._answer(request, action, 200, answer))
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(AdminError):
                exc: Any = failure.value
                status, body, extra = exc.status, exc.body(), exc.headers
                self._log_done(who, action, method, path, status, exc.message)
            else:
                log.failure("admin.failed who={who} action={action}", failure, who=who,
                            action=action)
                status, body, extra = 500, {"error": "internal error (see the log)"}, ()
            if not gone:
                request.write(self._answer(request, action, status, body, extra))
                request.finish()

        result.addCallbacks(done, failed)
        return NOT_DONE_YET

    def _log_done(self, who: str, action: str, method: str, path: str, code: int,
                  detail: str) -> None:
        log.info("admin.action who={who} action={action} method={method} path={path} "
                 "code={code} detail={detail}", who=who, action=action, method=method,
                 path=path, code=code, detail=detail)

    def _answer(self, request: Request, action: str, status: int, body: Any,
                headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        ADMIN_REQUESTS.labels(action, str(status)).inc()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        for name, value in headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if status != 200 and "status" not in body:
            body = {**body, "status": status}
        return _json(body)


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def _peer(request: Request) -> str:
    address: Any = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '?')}" if host is not None else str(address)


def _detail(call: AdminCall) -> str:
    return json.dumps(call.params.values, sort_keys=True, separators=(",", ":"))


def _parameters(request: Request, route: Route) -> dict[str, Any]:
    """The query string's parameters and a JSON object body's; AdminError 400/413/415."""
    values: dict[str, Any] = {}
    query = urlsplit((request.uri or b"").decode("latin-1")).query
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in values:
            raise AdminError(400, f"parameter {name} is given twice")
        values[name] = value
    content = request.content
    body = b""
    if content is not None:
        content.seek(0)
        body = content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise AdminError(413, f"the request body is larger than {MAX_BODY} bytes")
    if not body.strip():
        return values
    if route.method == "GET":
        raise AdminError(400, "a GET request takes no body")
    if media_type(_header(request, b"content-type")) != "application/json":
        raise AdminError(415, "the body must be a JSON object (Content-Type: application/json)")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise AdminError(400, "the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise AdminError(400, "the body must be a JSON object")
    for name, value in parsed.items():
        if name in values:
            raise AdminError(400, f"parameter {name} is given twice")
        values[name] = value
    return values
