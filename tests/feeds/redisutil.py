"""Helpers of the Redis feed tests: unique key prefixes, a private redis-server, an exchange rig."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pytest
import redis
from twisted.internet import defer, reactor, task

from engine.enums import Side
from engine.events import LevelChanged, Trade
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.core import FeedCore
from feeds.diffs import FULL_DEPTH
from feeds.hub import FeedHub
from feeds.numbers import UnitFormatter
from feeds.redis_keys import RedisKeys, blocking_client
from feeds.redis_sink import RedisSink
from feeds.replica import BookReplica
from tests.feeds.orderflow import OrderFlow

SHARED_URL = "redis://127.0.0.1:6379/0"
INSTRUMENTS = demo_instruments()
FMT = {i.symbol: (UnitFormatter(i.tick_size), UnitFormatter(i.lot_size)) for i in INSTRUMENTS}
T0 = 1_700_000_000 * 10**9
TIMEOUT = 20.0


def shared_redis_or_skip() -> redis.Redis:
    """A client of the shared Redis at 127.0.0.1:6379 (the test is skipped if it is not up)."""
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {SHARED_URL}: {exc}")
    return client


def unique_keys() -> RedisKeys:
    """A key prefix no other test uses."""
    return RedisKeys(f"test:{uuid.uuid4().hex[:12]}")


def delete_prefix(client: redis.Redis, keys: RedisKeys) -> None:
    """Remove every key under the prefix."""
    names = list(client.scan_iter(match=f"{keys.prefix}:*", count=1000))
    if names:
        client.delete(*names)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server (no persistence) that a test may kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-outage-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"private redis-server on {self.port} did not start") from None
                time.sleep(0.02)  # waiting for a process to come up, not for test time
        client.close()

    def kill(self) -> None:
        """SIGKILL the server (an outage: no clean shutdown, connections reset)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT)
        self.proc = None

    def close(self) -> None:
        """Kill it and remove its folder."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def until(condition: Any, what: Any, timeout: float = TIMEOUT) -> defer.Deferred:
    """A Deferred firing once ``condition()`` holds (checked every 5 ms of reactor time).

    ``what`` (a string, or a callable giving one at the time of failure) names the wait.
    """
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def poll() -> Any:
        while not condition():
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout}s waiting for {said}")
            yield task.deferLater(reactor, 0.005, lambda: None)

    return poll()


class Exchange:
    """Engine, feed core, hub and a Redis sink, driven batch by batch with random order flow."""

    def __init__(self, url: str, keys: RedisKeys, seed: int = 7, **sink_options: Any) -> None:
        self.engine = MatchingEngine(INSTRUMENTS)
        self.core = FeedCore(INSTRUMENTS)
        self.hub = FeedHub(self.core)
        self.keys = keys
        self.sink = RedisSink(self.core, blocking_client(url), reactor, keys=keys,
                              **sink_options)
        self.hub.add_sink(self.sink)
        self.flow = OrderFlow(INSTRUMENTS, seed=seed)
        self.last_level_seq = {i.symbol: 0 for i in INSTRUMENTS}
        self.trades: dict[str, list[Trade]] = {i.symbol: [] for i in INSTRUMENTS}
        self.ts = T0
        self.messages: list[Any] = []

    def batch(self, commands: int) -> list:
        """Run ``commands`` commands through the engine and flush one batch."""
        for _ in range(commands):
            self.ts += 1_000_000
            events = self.engine.process(self.flow.next_command(self.ts))
            for e in events:
                if type(e) is LevelChanged:
                    self.last_level_seq[e.symbol] = e.seq
                elif type(e) is Trade:
                    self.trades[e.symbol].append(e)
            self.hub.publish(events)
        out = self.hub.flush()
        self.messages.extend(out)
        return out

    def levels(self, symbol: str, depth: int = FULL_DEPTH) -> tuple[list, list]:
        """The engine's book of ``symbol`` as wire (price, qty, count) tuples, best first."""
        price, qty = FMT[symbol]
        sides = []
        for side in (Side.BUY, Side.SELL):
            levels = self.engine.book(symbol).levels(side)
            if depth != FULL_DEPTH:
                levels = levels[:depth]
            sides.append([(price(p), qty(q), c) for p, q, c in levels])
        return sides[0], sides[1]


def decode(data: bytes) -> Any:
    """Decode a stored msgpack message."""
    return msgpack.unpackb(data, raw=False)


def sorted_levels(levels: list, bids: bool) -> list[tuple]:
    """Stored levels as wire tuples, best first."""
    out = [(lv.price, lv.qty, lv.orders) for lv in levels]
    out.sort(key=lambda lv: Decimal(lv[0]), reverse=bids)
    return out


class ReplicaSubscriber:
    """A hub subscriber (raw bytes) that keeps a BookReplica per order-book channel."""

    def __init__(self, wire_format: Any) -> None:
        self.wire_format = wire_format
        self.replicas: dict[str, BookReplica] = {}
        self.snapshots = 0
        self.other: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        msg = (msgpack.unpackb(frame, raw=False) if self.wire_format.is_binary
               else json.loads(frame))
        if msg.get("channel", "").startswith("orderbook@"):
            if msg["type"] == "snapshot":
                self.snapshots += 1
            self.replicas.setdefault(msg["channel"], BookReplica()).apply(msg)
        else:
            self.other.append(msg)
