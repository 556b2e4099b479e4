"""WebSocket feed benchmark: trade-to-subscriber latency and messages delivered per second.

The server (engine + FeedHub + Autobahn, 10 ms batching) runs in one process and the
Autobahn clients in ``--client-processes`` others (default 4; the subscribers are spread
evenly over them), over loopback, so that one client process decoding every subscriber's
messages is not what is measured. Each client process writes its latencies to a file; the
percentiles are over all of them together. The server stamps every
command with ``time.time_ns()`` when it generates it (the sequencer's ts), so a trade's event
ts is its generation time; a client takes ``time.time_ns()`` when its ``onMessage`` runs for
the trades message, on the same machine clock. Each client subscribes to ``trades@BTC-PERP``.

Two loads:
- latency: a burst of order flow at random times (mean 100 ms apart; about 10 trade
  messages per second per client), p50/p99/max of trade -> client onMessage;
- throughput: order flow every millisecond (a trades message in nearly every 10 ms batch),
  messages per second received by all clients together.

Each scenario runs for the baseline (1 subscriber) and for N subscribers (1,000), in JSON and
msgpack, ``--repeats`` times; the medians are printed. Usage:
    python bench/bench_ws.py [--subscribers 1000] [--seconds 5] [--repeats 3] [--client-processes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH_S = 0.010


# -- server process ------------------------------------------------------------------------

def run_server(mode: str, subscribers: int) -> None:
    """Serve the feed on a loopback port (printed); once ``subscribers`` have subscribed,
    generate flow until stdin closes (so connecting clients are not flooded meanwhile)."""
    from twisted.internet import reactor, stdio
    from twisted.internet.protocol import Protocol
    from twisted.internet.task import LoopingCall

    from engine.instruments import demo_instruments
    from engine.matcher import MatchingEngine
    from feeds.batcher import FeedBatcher
    from feeds.core import FeedCore
    from feeds.hub import FeedHub
    from feeds.websocket import FeedServerFactory
    from tests.feeds.orderflow import OrderFlow

    instruments = [i for i in demo_instruments() if i.symbol == "BTC-PERP"]
    engine = MatchingEngine(instruments)
    hub = FeedHub(FeedCore(instruments))
    factory = FeedServerFactory(hub, max_connections_per_address=5000)
    port = reactor.listenTCP(0, factory, backlog=2048, interface="127.0.0.1")
    flow = OrderFlow(instruments, seed=7)
    rng = random.Random(1)
    # Warm the book so that aggressive orders find liquidity from the start.
    for _ in range(300):
        hub.publish(engine.process(flow.next_command(time.time_ns())))

    def burst(n: int) -> None:
        for _ in range(n):
            hub.publish(engine.process(flow.next_command(time.time_ns())))

    def start_flow() -> None:
        if hub.subscriber_count("trades@BTC-PERP") < subscribers:
            reactor.callLater(0.05, start_flow)
            return
        if mode == "latency":
            def next_burst() -> None:
                burst(10)
                reactor.callLater(rng.uniform(0.0, 0.2), next_burst)
            next_burst()
        else:
            LoopingCall(burst, 3).start(0.001)

    start_flow()
    FeedBatcher(hub, BATCH_S).start()

    class StopOnEOF(Protocol):
        def connectionLost(self, reason: object = None) -> None:
            reactor.stop()

    stdio.StandardIO(StopOnEOF())
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


# -- client process ------------------------------------------------------------------------

def run_clients(port: int, n: int, fmt: str, seconds: float, out_path: str) -> None:
    """Connect ``n`` clients, measure for ``seconds``, write every latency (ns, int64) to
    ``out_path`` and print one JSON line of counts."""
    from array import array

    import msgpack
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import defer, reactor, task

    latencies: list[int] = []
    state = {"measuring": False, "messages": 0, "opened": 0, "acked": 0, "closed": 0}
    all_acked: defer.Deferred = defer.Deferred()
    subscribe = json.dumps({"op": "subscribe", "channels": ["trades@BTC-PERP"]}).encode()
    binary = fmt == "msgpack"
    loads = msgpack.unpackb if binary else json.loads

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:
            state["opened"] += 1
            self.sendMessage(subscribe, False)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            now = time.time_ns()
            msg = loads(payload)
            if "event" in msg:
                if msg["event"] == "subscribed":
                    state["acked"] += 1
                    if state["acked"] == n:
                        all_acked.callback(None)
                return
            if state["measuring"]:
                state["messages"] += 1
                for trade in msg["data"]:
                    latencies.append(now - trade["ts"])

        def onClose(self, wasClean: bool, code: object, reason: object) -> None:
            state["closed"] += 1

    url = f"ws://127.0.0.1:{port}/?format={fmt}"
    factory = WebSocketClientFactory(url)
    factory.protocol = Client
    factory.setProtocolOptions(utf8validateIncoming=False, autoPingInterval=0)

    @defer.inlineCallbacks
    def main() -> defer.Deferred:
        for i in range(n):
            reactor.connectTCP("127.0.0.1", port, factory, timeout=30)
            if i % 50 == 49:
                yield task.deferLater(reactor, 0.02, lambda: None)
        yield all_acked
        yield task.deferLater(reactor, 1.0, lambda: None)  # the server starts its flow
        state["measuring"] = True
        started = time.perf_counter()
        yield task.deferLater(reactor, seconds, lambda: None)
        state["measuring"] = False
        elapsed = time.perf_counter() - started
        with open(out_path, "wb") as f:
            f.write(array("q", latencies).tobytes())
        result = {"subscribers": n, "messages": state["messages"], "elapsed": elapsed,
                  "closed": state["closed"]}
        print(json.dumps(result), flush=True)
        reactor.stop()

    def fail(err: object) -> None:
        print(json.dumps({"error": str(err)}), flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addErrback(fail))
    def give_up() -> None:
        print(json.dumps({"error": f"timed out; state {state}"}), flush=True)
        reactor.stop()

    reactor.callLater(seconds + 120, give_up)  # hard bound
    reactor.run()


# -- orchestration -------------------------------------------------------------------------

def one_run(mode: str, n: int, fmt: str, seconds: float, processes: int) -> dict:
    """Start a server and ``processes`` client processes (at most one per subscriber),
    return the merged result."""
    import tempfile
    from array import array

    me = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, me, "server", mode, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    tmp = tempfile.mkdtemp(prefix="bench_ws_")
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        port = int(line.split()[1])
        processes = max(1, min(processes, n))
        shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        clients = [
            subprocess.Popen(
                [sys.executable, me, "clients", str(port), str(share), fmt, str(seconds),
                 os.path.join(tmp, f"lat{i}")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, share in enumerate(shares)]
        results = []
        for i, client in enumerate(clients):
            out, err = client.communicate(timeout=seconds + 180)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if not lines:
                return {"error": f"client {i} printed nothing: {err[-300:]}"}
            result = json.loads(lines[-1])
            if "error" in result:
                return result
            results.append(result)
        lat = array("q")
        for i in range(len(clients)):
            with open(os.path.join(tmp, f"lat{i}"), "rb") as f:
                lat.frombytes(f.read())
        ordered = sorted(lat)
        return {
            "subscribers": n, "format": fmt, "trades": len(ordered),
            "p50_ms": ordered[len(ordered) // 2] / 1e6 if ordered else None,
            "p99_ms": ordered[int(len(ordered) * 0.99)] / 1e6 if ordered else None,
            "max_ms": ordered[-1] / 1e6 if ordered else None,
            "msgs_per_s": sum(r["messages"] / r["elapsed"] for r in results),
            "closed": sum(r["closed"] for r in results),
        }
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Run every scenario ``--repeats`` times and print the medians."""
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        run_server(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        run_clients(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]),
                    sys.argv[6])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="json,msgpack")
    ap.add_argument("--client-processes", type=int, default=4,
                    help="processes the subscribers are spread over")
    ap.add_argument("--modes", default="latency,throughput")
    args = ap.parse_args()
    print(f"WebSocket feed: batching {BATCH_S * 1000:.0f} ms, {args.seconds:.0f} s per run, "
          f"medians of {args.repeats} runs; latency = trade event ts -> client onMessage; "
          f"subscribers spread over up to {args.client_processes} client processes")
    header = (f"{'load':<10} {'format':<8} {'subs':>5} {'trades':>7} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'max ms':>7} {'msgs/s':>9} {'closed':>6}")
    print(header)
    for mode in args.modes.split(","):
        for fmt in args.formats.split(","):
            for n in (1, args.subscribers):
                runs = [one_run(mode, n, fmt, args.seconds, args.client_processes)
                        for _ in range(args.repeats)]
                bad = [r for r in runs if "error" in r or r.get("p50_ms") is None]
                if bad:
                    print(f"{mode:<10} {fmt:<8} {n:>5} failed: {bad[0]}")
                    continue

                def med(key: str, runs: list = runs) -> float:
                    return statistics.median(r[key] for r in runs)
                print(f"{mode:<10} {fmt:<8} {n:>5} {med('trades'):>7.0f} {med('p50_ms'):>7.2f} "
                      f"{med('p99_ms'):>7.2f} {med('max_ms'):>7.2f} {med('msgs_per_s'):>9.0f} "
                      f"{med('closed'):>6.0f}", flush=True)


if __name__ == "__main__":
    main()
