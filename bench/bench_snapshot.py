"""Snapshot stall: other sessions' order-to-ack latency while the exchange takes a snapshot
with many resting orders, against the same run's baseline without one.

What runs where: the exchange is ``python -m fixserver.cli serve`` (tests/crash/harness.py's
``write_config`` and ``ServerProcess``; journal with fsync, durable stores, the admin API on
its HTTP port, automatic snapshots pushed out of the way where the config has the keys). Two
"book" sessions place ``--orders`` resting GTC limits through FIX as fast as a window of
unanswered orders allows (buys 59,000.0-59,899.9 from one account, sells 60,100.0-60,999.9
from another, random ticks, so they never cross), then log out (their orders stay). Then
``--probe-sessions`` other sessions send crossing limits at 60,000.0 at ``--rate`` orders/s
in total (bench/soak.py's ``SteadyLoad``: fixload's sessions and order flow) from this
process, and each repetition is:

1. baseline: ``--baseline`` seconds of probe orders with no snapshot;
2. ``POST /admin/snapshot`` (it answers once the snapshot file is written) while the probes
   go on, then ``--settle`` more seconds.

Printed per repetition and as medians: probe latency (send of a NewOrderSingle to its first
ExecutionReport) p50/p99/max in the baseline and for the orders in flight at any moment of
the snapshot request (sent before its answer, acked after it was made); the longest silence
between two acks in each window; the request's round trip; the server's own stall from its
log line ``snapshot.taken ... stall_ms=`` and from the ``snapshot_stall_ms`` histogram of
/metrics (the engine's serialisation only, on the reactor thread).

    python bench/bench_snapshot.py [--orders 200000] [--rate 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from bench.fixload import ClientSession, Link, percentiles_us, wait_logged_on
from bench.soak import LogFollower, SteadyLoad, git_state, proc_status_kb
from fixserver.codec import encode_body
from tests.crash.harness import ADMIN_TOKEN, ServerProcess, free_port, write_config

_METRIC = re.compile(r"^snapshot_stall_ms_(sum|count) ([0-9.e+]+)$", re.M)


def place_resting(port: int, orders: int, window: int = 200, seed: int = 7) -> dict[str, Any]:
    """``orders`` resting limits from two sessions (BOOKB buys, BOOKS sells), never crossing;
    returns counts and the time taken. Both sessions log out at the end."""
    rng = random.Random(seed)
    links = [Link(ClientSession("BOOKB", "EXCH"), "127.0.0.1", port),
             Link(ClientSession("BOOKS", "EXCH"), "127.0.0.1", port)]
    for link in links:
        link.session.logon(time.time_ns(), reset=True)
    wait_logged_on(links)
    tails = [encode_body([(1, "ACCB"), (55, "BTC-PERP"), (54, "1"), (38, "0.001"), (40, "2")]),
             encode_body([(1, "ACCS"), (55, "BTC-PERP"), (54, "2"), (38, "0.001"), (40, "2")])]
    tif = encode_body([(59, "1")])
    run = f"{time.time_ns() // 1_000_000 % 10**9:x}"
    outstanding = [0, 0]
    sent = acked = rejected = 0
    reject_text: list[str] = []
    t0 = time.perf_counter()
    while acked < orders:
        wall = time.time_ns()
        for i, link in enumerate(links):
            session = link.session
            while outstanding[i] < window and sent < orders:
                ticks = rng.randrange(9_000)
                price = f"{59_000 + ticks / 10:.1f}" if i == 0 else f"{60_100 + ticks / 10:.1f}"
                body = (b"11=B%s-%d\x0160=%s\x01%s44=%s\x01%s" % (
                    run.encode(), sent, session.sending_time(wall), tails[i], price.encode(),
                    tif))
                session.queue(session.build_raw(b"D", body, wall))
                outstanding[i] += 1
                sent += 1
            link.flush()
        ready, _, _ = select.select(links, [link for link in links if link.wants_write], [],
                                    0.05)
        for link in links:
            if link.wants_write:
                link.flush()
        for link in ready:
            i = links.index(link)
            for msg, repeat in link.read(time.time_ns()):
                if repeat or msg.msg_type != b"8":
                    continue
                outstanding[i] -= 1
                acked += 1
                if msg.get(150) == b"8":
                    rejected += 1
                    if len(reject_text) < 3:
                        reject_text.append((msg.get(58) or b"").decode())
            if link.closed:
                raise ConnectionError(f"{link.session.sender.decode()}: connection closed")
        violations = [v for link in links for v in link.session.violations]
        if violations:
            raise RuntimeError(f"session violations: {violations[:3]}")
    elapsed = time.perf_counter() - t0
    for link in links:
        link.session.logout(time.time_ns())
        link.flush()
        link.close()
    return {"orders": orders, "rejected": rejected, "reject_text": reject_text,
            "seconds": elapsed, "per_s": orders / elapsed}


def http_post(port: int, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stall_histogram(server: ServerProcess) -> tuple[float, float]:
    """(sum, count) of the ``snapshot_stall_ms`` histogram on /metrics."""
    status, text = server.http_get("/metrics")
    values = {m[1]: float(m[2]) for m in _METRIC.finditer(text if status == 200 else "")}
    return values.get("sum", 0.0), values.get("count", 0.0)


def longest_gap_ms(arrivals: list[int], start: int, end: int) -> float:
    """The longest time without an ack inside ``[start, end]`` (perf_counter ns)."""
    inside = sorted(a for a in arrivals if start <= a <= end)
    points = [start, *inside, end]
    return max((b - a for a, b in zip(points, points[1:])), default=0) / 1e6


def one_repetition(load: SteadyLoad, server: ServerProcess, log: LogFollower, baseline_s: float,
                   settle_s: float) -> dict[str, Any]:
    perf = time.perf_counter_ns
    load.samples = []
    log.snapshots()  # skip what is logged already
    hist0 = stall_histogram(server)
    t_base = perf()
    load.pump(t_base + int(baseline_s * 1e9))
    answer: dict[str, Any] = {}

    def request() -> None:
        answer["t_req"] = perf()
        answer["status"], answer["body"] = http_post(server.http_port, "/admin/snapshot")
        answer["t_ans"] = perf()

    thread = threading.Thread(target=request)
    thread.start()
    while thread.is_alive():
        load.pump(perf() + 20_000_000)
    thread.join()
    t_req, t_ans = answer["t_req"], answer["t_ans"]
    load.pump(perf() + int(settle_s * 1e9))
    samples, load.samples = load.samples, []
    if answer["status"] != 200:
        raise RuntimeError(f"POST /admin/snapshot: {answer['status']} {answer['body']}")
    base = sorted(lat for sent, lat in samples if t_base <= sent < t_req and sent + lat < t_req)
    during = sorted(lat for sent, lat in samples if sent <= t_ans and sent + lat >= t_req)
    arrivals = [sent + lat for sent, lat in samples]
    hist1 = stall_histogram(server)
    time.sleep(0.2)  # the log line is written before the answer; let the file catch up
    logged = log.snapshots()
    return {
        "baseline": percentiles_us(base),
        "during": percentiles_us(during),
        "gap_baseline_ms": longest_gap_ms(arrivals, t_base, t_req),
        "gap_during_ms": longest_gap_ms(arrivals, t_req, t_ans),
        "request_ms": (t_ans - t_req) / 1e6,
        "log_stall_ms": [s[2] for s in logged],
        "log_bytes": [s[1] for s in logged],
        "metric_stall_ms": (hist1[0] - hist0[0]) if hist1[1] > hist0[1] else None,
        "metric_count": hist1[1] - hist0[1],
        "load": os.getloadavg()[0],
    }


def fmt(p: dict[str, float]) -> str:
    if not p:
        return "(no samples)"
    return (f"p50 {p['p50'] / 1000:7.1f}  p99 {p['p99'] / 1000:7.1f}  max {p['max'] / 1000:7.1f}"
            f" ms (n={p['n']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000, help="resting orders")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="probe orders/s in total (other sessions)")
    parser.add_argument("--probe-sessions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds before each POST")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after its answer")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)

    probes = [(f"PROBE{i}", f"P{i}", f"PACC{i}") for i in range(args.probe_sessions)]
    clients = [("BOOKB", "FB", "ACCB"), ("BOOKS", "FS", "ACCS"), *probes]
    extra: list[str] = []
    from fixserver import config as config_module

    keys = getattr(config_module, "_SERVER_KEYS", {})
    if "SnapshotEveryCommands" in keys:  # only the requested snapshots, none of their own
        extra += ["SnapshotEveryCommands=1000000000", "SnapshotEverySeconds=1000000"]
    # DefaultSTP=M: a probe meeting its own resting order cancels that one, so the probes'
    # one-price flow does not pile up on the book (bench/soak.py says why)
    stp = {c: ["DefaultSTP=M"] for c, _, _ in probes}
    tmp = tempfile.mkdtemp(prefix="bench-snapshot-")
    fix_port, http_port = free_port(), free_port()
    config = write_config(tmp, clients, fix_port=fix_port, http_port=http_port,
                          extra_default=extra, session_extra=stp)
    server = ServerProcess(config, fix_port, http_port, os.path.join(tmp, "server.log"))
    print(f"bench_snapshot: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; code {git_state()}; "
          f"cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    print(f"  {args.orders:,} resting orders; {args.probe_sessions} probe sessions at "
          f"{args.rate:,.0f} orders/s; {args.repeat} x ({args.baseline:g} s baseline, POST "
          f"/admin/snapshot, {args.settle:g} s); automatic snapshots "
          f"{'off' if extra else 'on (this config has no SnapshotEvery* keys)'}", flush=True)
    server.start()
    pid = server.proc.pid  # type: ignore[union-attr]
    log = LogFollower(server.log_path)
    reps: list[dict[str, Any]] = []
    try:
        fill = place_resting(fix_port, args.orders)
        print(f"  placed {fill['orders']:,} in {fill['seconds']:.1f} s ({fill['per_s']:,.0f}/s),"
              f" {fill['rejected']:,} rejected {fill['reject_text']}; server RSS "
              f"{proc_status_kb(pid, 'VmRSS') / 1024:,.0f} MB", flush=True)
        load = SteadyLoad("127.0.0.1", fix_port, [(c, "EXCH", a) for c, _, a in probes],
                          args.rate,
                          max_unacked=max(1, int(args.rate)))
        load.pump(time.perf_counter_ns() + 3_000_000_000)  # warm-up
        for rep in range(args.repeat):
            r = one_repetition(load, server, log, args.baseline, args.settle)
            reps.append(r)
            print(f"  #{rep + 1} baseline {fmt(r['baseline'])}; longest ack gap "
                  f"{r['gap_baseline_ms']:,.0f} ms", flush=True)
            metric = (f"{r['metric_stall_ms']:,.1f}" if r["metric_stall_ms"] is not None
                      else "n/a")
            print(f"     snapshot {fmt(r['during'])}; longest ack gap {r['gap_during_ms']:,.0f}"
                  f" ms; POST answered in {r['request_ms']:,.0f} ms; logged stall_ms "
                  f"{r['log_stall_ms']} (engine bytes {r['log_bytes']}), metric {metric} ms;"
                  f" load {r['load']:.1f}", flush=True)
        if load.violations or load.rejects:
            print(f"  probe rejects {load.rejects}, violations {load.violations[:3]}")
        load.close()
    finally:
        try:
            server.stop(timeout=120)
        except Exception as exc:
            print(f"  server stop: {exc!r}")
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    def med(*keys: str) -> float:
        values = []
        for r in reps:
            v: Any = r
            for k in keys:
                v = v.get(k, 0.0) if isinstance(v, dict) else 0.0
            values.append(float(v))
        return statistics.median(values) if values else 0.0

    stalls = [s for r in reps for s in r["log_stall_ms"]]
    print(f"\nmedians of {len(reps)} (ms):   {'p50':>8s} {'p99':>8s} {'max':>8s} "
          f"{'ack gap':>8s}")
    for name, key, gap in (("baseline", "baseline", "gap_baseline_ms"),
                           ("during snapshot", "during", "gap_during_ms")):
        print(f"  {name:17s} {med(key, 'p50') / 1000:8.1f} {med(key, 'p99') / 1000:8.1f}"
              f" {med(key, 'max') / 1000:8.1f} {med(gap):8.0f}")
    base_max = max(med("baseline", "max"), 1.0)
    print(f"  snapshot/baseline: p50 {med('during', 'p50') / max(med('baseline', 'p50'), 1):.1f}x,"
          f" p99 {med('during', 'p99') / max(med('baseline', 'p99'), 1):.1f}x, max "
          f"{med('during', 'max') / base_max:.1f}x")
    print(f"  server stall (log, engine serialisation): median "
          f"{statistics.median(stalls) if stalls else float('nan'):,.1f} ms; POST round trip "
          f"median {med('request_ms'):,.0f} ms; load average median {med('load'):.1f}")
    print("SNAPSHOT_JSON " + json.dumps({"fill": fill, "reps": reps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
