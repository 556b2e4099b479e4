"""Watch WebSocket feed channels: subscribe and print every message as one JSON line.

    python ops/watch_feed.py liquidations@BTC-PERP markPrice@BTC-PERP
    python ops/watch_feed.py --url ws://127.0.0.1:9200/ --seconds 60 trades@BTC-PERP

A demo and troubleshooting aid for the feed of `make run` (spec/websocket-feed.md): it
prints the server's answers too (subscribed, errors), stops after ``--seconds`` (default:
until interrupted) or when the server closes the connection, and exits 1 if it cannot
connect or a subscription is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import reactor

STATUS = {"code": 0}


class Watcher(WebSocketClientProtocol):
    """Subscribes on open, prints each message."""

    def onOpen(self) -> None:
        request = {"op": "subscribe", "channels": self.factory.channels, "id": 1}
        self.sendMessage(json.dumps(request).encode(), False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        text = payload.decode("utf-8")
        print(text, flush=True)
        if json.loads(text).get("event") == "error":
            STATUS["code"] = 1

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.stopping:
            print(f"watch_feed: connection closed ({code} {reason or ''})".rstrip(),
                  file=sys.stderr)
            STATUS["code"] = STATUS["code"] or (0 if wasClean else 1)
            stop()


class WatchFactory(WebSocketClientFactory):
    protocol = Watcher

    def __init__(self, url: str, channels: list[str]) -> None:
        super().__init__(url)
        self.channels = channels
        self.stopping = False

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        print(f"watch_feed: cannot connect to {self.url}: {reason.getErrorMessage()}",
              file=sys.stderr)
        STATUS["code"] = 1
        stop()


def stop() -> None:
    running: Any = reactor
    if running.running:
        running.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channels", nargs="+", help="channel names, e.g. liquidations@BTC-PERP")
    parser.add_argument("--url", default="ws://127.0.0.1:9200/", help="the feed's address")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this many seconds (default: until interrupted)")
    args = parser.parse_args()
    factory = WatchFactory(args.url, args.channels)
    connectWS(factory, timeout=10)
    running: Any = reactor
    if args.seconds > 0:
        def done() -> None:
            factory.stopping = True
            stop()
        running.callLater(args.seconds, done)
    running.run()
    return STATUS["code"]


if __name__ == "__main__":
    sys.exit(main())
