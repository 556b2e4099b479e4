"""A standalone WebSocket feed process that serves the exchange's feed from Redis.

    python -m feeds.feed_process --redis redis://127.0.0.1:6379/0 --port 9200

It follows the exchange through Redis (:class:`~feeds.redis_follower.RedisFollower`) and serves
the same WebSocket protocol as the exchange's own feed server (spec/websocket-feed.md), so
WebSocket fan-out scales by running more of these behind a load balancer (ops/feeds.md). The
port opens once the first bootstrap from Redis has succeeded (the symbols come from Redis);
then it prints one line ``feed_process ready port=N`` on stdout. ``--metrics-port`` adds an
HTTP side with ``/metrics`` (Prometheus) and ``/health`` (the follower's state as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from feeds.redis_follower import RedisFollower
from feeds.redis_keys import DEFAULT_PREFIX, RedisKeys, blocking_client
from feeds.websocket import FeedServerFactory

log = Logger(namespace="feeds.feed_process")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m feeds.feed_process",
                                description="WebSocket market-data feed served from Redis")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix the exchange writes")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=9200, help="WebSocket port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="HTTP port for /metrics and /health (default: none)")
    p.add_argument("--max-connections", type=int, default=10_000)
    p.add_argument("--max-connections-per-address", type=int, default=100)
    p.add_argument("--max-subscriptions", type=int, default=100)
    p.add_argument("--max-buffer-bytes", type=int, default=4 * 1024 * 1024,
                   help="per-connection send queue before a slow consumer is closed")
    p.add_argument("--no-verify-checksums", action="store_true",
                   help="do not check each order-book update's checksum against the copy")
    return p


class HealthResource(Resource):
    """GET /health: the follower's state (200 while in step with the exchange, else 503)."""

    isLeaf = True

    def __init__(self, follower: RedisFollower) -> None:
        super().__init__()
        self.follower = follower

    def render_GET(self, request: Any) -> bytes:
        f = self.follower
        body = {"status": "ok" if f.in_step else "degraded", "state": f.state,
                "epoch": f.relay.epoch, "seq": f.relay.seq, "bootstraps": f.bootstraps,
                "last_error": f.last_error}
        request.setResponseCode(200 if f.in_step else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode() + b"\n"


def serve(args: argparse.Namespace, reactor: Any) -> RedisFollower:
    """Start following Redis; open the WebSocket port after the first bootstrap."""
    follower = RedisFollower(
        blocking_client(args.redis), reactor, keys=RedisKeys(args.prefix),
        verify_checksums=not args.no_verify_checksums,
    )
    # Autobahn refuses port 0 in the URL (it is only the server's idea of its own address).
    url = f"ws://{args.host}:{args.port}" if args.port else f"ws://{args.host}"
    factory = FeedServerFactory(
        follower.hub, url,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_subscriptions=args.max_subscriptions, max_buffer_bytes=args.max_buffer_bytes,
    )
    if args.metrics_port is not None:
        root = Resource()
        metrics_page: Any = MetricsResource()
        health_page: Any = HealthResource(follower)
        root.putChild(b"metrics", metrics_page)
        root.putChild(b"health", health_page)
        reactor.listenTCP(args.metrics_port, Site(root), interface=args.host)

    def listen(_: object) -> None:
        port = reactor.listenTCP(args.port, factory, interface=args.host)
        sys.stdout.write(f"feed_process ready port={port.getHost().port}\n")
        sys.stdout.flush()
        log.info("feed_process.listening port={port} symbols={symbols}",
                 port=port.getHost().port, symbols=sorted(follower.relay.symbols))

    def failed(failure: Any) -> None:
        log.failure("feed_process start failed", failure)
        reactor.stop()

    follower.ready.addCallbacks(listen, failed)
    reactor.addSystemEventTrigger("before", "shutdown", follower.stop)
    follower.start()
    return follower


def main(argv: list[str] | None = None) -> int:
    """Run a feed process until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    observer: Any = textFileLogObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    serve(args, reactor)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
