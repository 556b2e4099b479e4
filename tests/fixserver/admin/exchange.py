"""An in-process exchange with the admin API on loopback (HttpPort=0), an HTTP caller that
runs urllib in a thread (the reactor keeps serving), and a minimal FIX client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint

from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.config import parse_config
from fixserver.server import FixServer
from fixserver.timeutil import format_utc_timestamp
from tests.fixserver.inprocess_exchange import CONFIG

TOKEN = "ops-admin-token-0123456789"
AUDITOR_TOKEN = "auditor-admin-token-0123456789"
TIMEOUT = 20.0


def admin_config(tmp: Any, tokens: bool = True, extra: str = "") -> str:
    """The in-process exchange's config (firms ACME and BETA, sessions ACME1 and BETA1)
    with the HTTP side on a free port and, optionally, two admin tokens (ops, auditor)."""
    lines = ["HttpAddress=127.0.0.1", "HttpPort=0"]
    if tokens:
        lines.append(f"AdminToken=ops:{TOKEN}, auditor:{AUDITOR_TOKEN}")
    return CONFIG.format(tmp=tmp, default_extra="\n".join([*lines, extra]), sessions_extra="")


def start(tmp: Any, tokens: bool = True, extra: str = "") -> FixServer:
    server = FixServer(parse_config(admin_config(tmp, tokens, extra), base_dir=str(tmp)),
                       reactor)
    server.start()
    return server


def base_url(server: FixServer, admin_port: bool = False) -> str:
    port = server.admin_port if admin_port else server.http_port
    return f"http://127.0.0.1:{port.getHost().port}"


def api(url: str, method: str, path: str, token: str | None = TOKEN, body: Any = None,
        headers: dict[str, str] | None = None, raw: bytes | None = None) -> defer.Deferred:
    """Deferred (status, decoded JSON or text, response headers) of one request."""
    sent = dict(headers or {})
    if token is not None:
        sent.setdefault("Authorization", f"Bearer {token}")
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")

    def call() -> tuple[int, Any, Any]:
        request = urllib.request.Request(url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
                return r.status, _decode(r.read()), r.headers
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read()), exc.headers

    return threads.deferToThread(call)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class FixClient(protocol.Protocol):
    """Logs on as ``sender`` and collects what the server sends."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.decoder = FrameDecoder()
        self.messages: list[FixMessage] = []
        self.waiting: list[tuple[Any, defer.Deferred]] = []
        self.closed: defer.Deferred = defer.Deferred()
        self.seq = 1

    def send(self, msg_type: str, body: Any = ()) -> None:
        fields = [(35, msg_type), (34, self.seq), (49, self.sender),
                  (52, format_utc_timestamp(int(reactor.seconds() * 1e9))), (56, "EXCH"),
                  *body]
        self.seq += 1
        self.transport.write(encode(fields))

    def connectionMade(self) -> None:
        self.send("A", [(98, 0), (108, 30)])

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)
        while (item := self.decoder.next_message()) is not None:
            self.messages.append(item)
            for match, d in list(self.waiting):
                if match(item):
                    self.waiting.remove((match, d))
                    d.callback(item)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def wait_for(self, match: Any) -> defer.Deferred:
        """The first message (already received or to come) ``match(message)`` accepts."""
        for item in self.messages:
            if match(item):
                return defer.succeed(item)
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((match, d))
        return d.addTimeout(TIMEOUT, reactor)


def is_type(msg_type: bytes) -> Any:
    return lambda m: m.msg_type == msg_type


@defer.inlineCallbacks
def logged_on(server: FixServer, sender: str) -> Any:
    """A FixClient logged on to the server as ``sender``."""
    factory = protocol.Factory()
    factory.buildProtocol = lambda addr: FixClient(sender)  # type: ignore[method-assign]
    port = server.fix_port.getHost().port
    client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    yield client.wait_for(is_type(b"A"))
    return client
