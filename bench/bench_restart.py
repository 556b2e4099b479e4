"""Restart after SIGKILL: time to the first accepted logon, and memory, against journal size.

Phase 1 (a child process, killed with SIGKILL at the end): an in-process exchange (the real
FixServer with order entry, journal with fsync, file stores) takes ``--orders`` resting limit
orders from two sessions (through the FIX application, so ledger, stores and reports are the
real ones), takes a snapshot, then ``--commands`` more commands (new orders, cancels, some
crossing) that only the journal holds. Its RSS just before the kill is the *steady state*.

Phase 2 (a fresh child): builds the FixServer from the same config (recovery: snapshot load,
journal replay, ledger and report redelivery, feed seeding) and starts listening; a raw FIX
client then logs on. Prints seconds to listening and to the first accepted logon, the child's
peak RSS (ru_maxrss) and its RSS after recovery, against phase 1's steady state.

Usage: python bench/bench_restart.py [--orders N] [--commands N] [--dir PATH] [--keep]
Targets (issue "Hardening"): 1M resting orders + 1M commands since the snapshot -> first
accepted logon <= 10 s, peak memory <= 1.3x steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort={port}
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=1
StartTime=00:00:00
EndTime=00:00:00
[FIRM]
Firm=ACME
Accounts=A1
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _order(cl: str, account: str, side: str, qty: str, price: str) -> object:
    from tests.fixserver.inprocess_exchange import new_order

    return new_order(cl, account, side, qty, price)


def phase_fill(tmp: str, port: int, orders: int, commands: int, result_path: str) -> None:
    """Child process: build the state, report steady-state RSS, wait to be killed."""
    import random

    from twisted.internet import reactor, task

    from fixserver.config import parse_config
    from fixserver.server import FixServer
    from tests.fixserver.inprocess_exchange import fix_message, session_of

    server = FixServer(parse_config(CONFIG.format(port=port, tmp=tmp), base_dir=tmp), reactor)
    server.start()
    service = server.application
    acme, beta = session_of(server, "ACME1"), session_of(server, "BETA1")
    rng = random.Random(7)

    async def run() -> None:
        pipeline = service.pipeline
        batch = 2_000
        n = 0
        t0 = time.perf_counter()
        # resting orders: buys 59,000.0..59,999.9, sells 60,000.0..60,999.9 (never cross)
        while n < orders:
            for _ in range(min(batch, orders - n)):
                buy = n % 2 == 0
                ticks = rng.randrange(10_000)
                price = f"{59_000 + ticks / 10:.1f}" if buy else f"{60_000 + ticks / 10:.1f}"
                session, account = (acme, "A1") if buy else (beta, "B1")
                service.on_message(session, _order(f"R{n}", account, "1" if buy else "2",
                                                   "0.001", price), server.now_ns())
                n += 1
            pipeline.tick()
            await pipeline.when_idle()
        pipeline.take_snapshot()
        await pipeline.when_idle()
        await pipeline.when_snapshots_written() if hasattr(
            pipeline, "when_snapshots_written") else None
        filled_at = time.perf_counter() - t0
        # commands since the snapshot: new orders (a few crossing) and cancels of them
        done = 0
        live: list[str] = []
        while done < commands:
            for _ in range(min(batch, commands - done)):
                if live and rng.random() < 0.4:
                    cl = live.pop(rng.randrange(len(live)))
                    service.on_message(acme, fix_message(
                        "F", (11, f"X{done}"), (41, cl), (55, "BTC-PERP"), (54, "1"),
                        (60, "20240101-00:00:00")), server.now_ns())
                else:
                    cross = rng.random() < 0.05
                    price = "60000.0" if cross else f"{59_000 + rng.randrange(10_000) / 10:.1f}"
                    cl = f"N{done}"
                    service.on_message(acme, _order(cl, "A1", "1", "0.001", price),
                                       server.now_ns())
                    if not cross:
                        live.append(cl)
                done += 1
            pipeline.tick()
            await pipeline.when_idle()
        import gc
        gc.collect()
        with open(result_path, "w") as f:
            json.dump({"steady_rss_mb": rss_mb(), "fill_s": filled_at,
                       "live_orders": len(pipeline.engine.orders),
                       "next_seq": pipeline.sequencer.position()[0]}, f)
        await task.deferLater(reactor, 3600, lambda: None)  # killed long before

    task.react(lambda _r: __import__("twisted.internet.defer", fromlist=["x"])
               .ensureDeferred(run()))


def phase_restart(tmp: str, port: int, result_path: str) -> None:
    """Child process: recover, listen, accept one logon; report times and memory."""
    from twisted.internet import reactor, task, threads

    from bench.fixload import ClientSession
    from fixserver.config import parse_config
    from fixserver.server import FixServer

    t0 = time.perf_counter()
    server = FixServer(parse_config(CONFIG.format(port=port, tmp=tmp), base_dir=tmp), reactor)
    built = time.perf_counter() - t0
    server.start()
    listening = time.perf_counter() - t0

    def logon() -> float:
        client = ClientSession("ACME1", "EXCH")
        client.logon(time.time_ns())
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(client.data_to_send())
            s.settimeout(60)
            while not client.logged_on:
                data = s.recv(65536)
                if not data:
                    raise RuntimeError("connection closed before the logon answer")
                client.receive(data, time.time_ns())
        return time.perf_counter() - t0

    async def run() -> None:
        logged_on = await threads.deferToThread(logon)
        import gc
        gc.collect()
        with open(result_path, "w") as f:
            json.dump({"built_s": built, "listening_s": listening, "logon_s": logged_on,
                       "peak_rss_mb": peak_mb(), "rss_after_mb": rss_mb(),
                       "replayed": server.application.pipeline.recovered_commands}, f)
        await server.stop()

    task.react(lambda _r: __import__("twisted.internet.defer", fromlist=["x"])
               .ensureDeferred(run()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--phase", choices=["fill", "restart"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "fill":
        phase_fill(args.dir, args.port, args.orders, args.commands, args.result)
        return
    if args.phase == "restart":
        phase_restart(args.dir, args.port, args.result)
        return
    tmp = args.dir or tempfile.mkdtemp(prefix="bench-restart-")
    port = free_port()
    fill_result = os.path.join(tmp, "fill.json")
    child = subprocess.Popen([sys.executable, __file__, "--phase", "fill", "--dir", tmp,
                              "--port", str(port), "--orders", str(args.orders),
                              "--commands", str(args.commands), "--result", fill_result],
                             cwd=REPO)
    while not os.path.exists(fill_result):
        if child.poll() is not None:
            raise SystemExit(f"fill phase exited with {child.returncode}")
        time.sleep(0.5)
    time.sleep(0.5)  # the result file is written after everything is durable
    child.send_signal(signal.SIGKILL)
    child.wait()
    with open(fill_result) as f:
        fill = json.load(f)
    restart_result = os.path.join(tmp, "restart.json")
    subprocess.run([sys.executable, __file__, "--phase", "restart", "--dir", tmp, "--port",
                    str(port), "--result", restart_result], cwd=REPO, check=True)
    with open(restart_result) as f:
        restart = json.load(f)
    journal_mb = sum(os.path.getsize(os.path.join(tmp, "journal", n))
                     for n in os.listdir(os.path.join(tmp, "journal"))) / 1e6
    print(f"state: {fill['live_orders']:,} live orders, {fill['next_seq'] - 1:,} commands "
          f"journaled ({journal_mb:.0f} MB incl. snapshot), built in {fill['fill_s']:.1f} s "
          "before the second half")
    print(f"restart: {restart['replayed']:,} commands replayed after the snapshot")
    print(f"  recovery (FixServer built)   {restart['built_s']:.2f} s")
    print(f"  listening                    {restart['listening_s']:.2f} s")
    print(f"  first accepted logon         {restart['logon_s']:.2f} s   (target <= 10 s)")
    print(f"  steady state before the kill {fill['steady_rss_mb']:.0f} MB RSS")
    print(f"  peak during restart          {restart['peak_rss_mb']:.0f} MB "
          f"({restart['peak_rss_mb'] / fill['steady_rss_mb']:.2f}x; target <= 1.3x)")
    print(f"  after recovery               {restart['rss_after_mb']:.0f} MB")
    if not args.keep and not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
