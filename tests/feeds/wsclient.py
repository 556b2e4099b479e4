"""An Autobahn WebSocket feed client for the loopback tests and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer


class FeedClient(WebSocketClientProtocol):
    """Keeps every decoded message; fires ``factory.opened`` / ``factory.closed``."""

    factory: FeedClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict] = []
        self.close_info: tuple | None = None

    def onOpen(self) -> None:
        self.factory.client = self
        if not self.factory.opened.called:
            self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = msgpack.unpackb(payload) if isBinary else json.loads(payload)
        self.messages.append(msg)
        self.factory.on_message(self, msg)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.close_info = (wasClean, code, reason)
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"not opened: {code} {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback(self.close_info)

    def send_json(self, obj: Any) -> None:
        """Send a request as a JSON text frame."""
        self.sendMessage(json.dumps(obj).encode(), False)


class FeedClientFactory(WebSocketClientFactory):
    """One client connection's factory (opened/closed Deferreds, message callback)."""

    protocol = FeedClient

    def __init__(self, url: str, on_message: Callable[[FeedClient, dict], None] | None = None):
        super().__init__(url)
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.client: FeedClient | None = None
        self.on_message = on_message or (lambda client, msg: None)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(reason)
