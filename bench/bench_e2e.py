"""End-to-end order entry over FIX on loopback: orders/s and order-to-ack latency, against a
transport baseline measured in the same run.

What runs where: the exchange is ``python -m fixserver.cli serve`` with a bench config (N
order-entry sessions, each its own firm and account; journal with fsync on; durable FIX
message store; no throttle; no Postgres unless ``--postgres DSN``). The load client
(bench/fixload.py) is a second process driving every session from one thread. The baseline
is an echo server (Twisted, the project's codec) that answers each NewOrderSingle with a
canned ExecutionReport carrying the order's ClOrdID and the right MsgSeqNum: no session
layer, no validation, no engine, no journal. The ratio exchange/baseline is the cost of the
exchange over the transport floor with the same client.

Two runs per server, repeated (medians printed):

- max: as fast as a window of unanswered orders per session allows; orders/s counts first
  ExecutionReports (acks) received during the measured seconds;
- fixed rate (default 10,000 orders/s offered, evenly spaced): latency from the send of a
  NewOrderSingle to its first ExecutionReport, p50 / p99 / p99.9 / max.

Every order is a GTC limit at one price with sides alternating, so the sessions' orders
cross each other (about every other order trades; its ack is the New report).

Targets (issue "Performance"): server CPU per order <= 25 us at full load and <= 100 us at
1,000/s offered; closed-loop >= 50,000 acks/s; order to first ExecutionReport at 1,000/s and
10,000/s offered: p50 <= the same run's fdatasync p50 + 150 us, p99 <= 1 ms. The fdatasync
figures are measured in the run, on the data directory's disk (4 KiB appends to a file
there, as the journal does), before the exchange starts and after it stops.

    python bench/bench_e2e.py [--quick] [--sessions 10] [--repeat 3] [--profile]

``--profile`` also samples the exchange with py-spy during one max run and prints its
hottest functions (py-spy must be installed: it is a tool, not a dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from tests.crash.harness import REPO, ServerProcess, free_port, write_config

_LINE = re.compile(r":\d+\)$")

TARGET_RATE = 50_000
TARGET_US_PER_ORDER_MAX = 25.0
TARGET_US_PER_ORDER_1000 = 100.0
TARGET_P50_OVER_FSYNC_US = 150.0
TARGET_P99_US = 1_000.0


def fdatasync_us(directory: str, count: int = 300) -> list[float]:
    """Microseconds per fdatasync of a 4 KiB append (what a journal commit costs this
    disk), ``count`` times, sorted."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block = b"x" * 4096
    times = []
    try:
        for _ in range(count):
            os.write(fd, block)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return sorted(times)


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# -- the baseline echo server (run in its own process: ``--echo-server PORT``) --------------


def run_echo_server(port: int) -> None:
    """Answer Logon with Logon, TestRequest with Heartbeat, NewOrderSingle with one canned
    ExecutionReport (its ClOrdID, next MsgSeqNum); nothing else."""
    from twisted.internet import protocol, reactor

    from fixserver.codec import FrameDecoder, encode
    from fixserver.timeutil import format_utc_timestamp

    stamp: list = [0, b""]

    class Echo(protocol.Protocol):
        def connectionMade(self) -> None:
            self.decoder = FrameDecoder()
            self.seq = 0
            self.sender = b"EXCH"
            self.target = b"?"
            self.transport.setTcpNoDelay(True)

        def _send(self, msg_type: bytes, body: list, out: list) -> None:
            self.seq += 1
            now = time.time_ns()
            if now // 1_000_000 != stamp[0]:  # SendingTime formatted once per millisecond
                stamp[:] = [now // 1_000_000, format_utc_timestamp(now)]
            out.append(encode([(35, msg_type), (34, self.seq), (49, self.sender),
                               (52, stamp[1]), (56, self.target), *body]))

        def dataReceived(self, data: bytes) -> None:
            self.decoder.feed(data)
            out: list[bytes] = []
            while True:
                msg = self.decoder.next_message()
                if msg is None:
                    break
                mt = getattr(msg, "msg_type", None)
                if mt == b"D":
                    cl = msg.get(11)
                    self._send(b"8", [(37, b"1"), (11, cl), (17, cl), (150, b"0"), (39, b"0"),
                                      (55, b"BTC-PERP"), (54, msg.get(54)), (38, b"0.001"),
                                      (151, b"0.001"), (14, b"0"), (6, b"0")], out)
                elif mt == b"A":
                    self.target = msg.get(49) or b"?"
                    self._send(b"A", [(98, b"0"), (108, msg.get(108) or b"30")], out)
                elif mt == b"1":
                    self._send(b"0", [(112, msg.get(112) or b"")], out)
                elif mt == b"5":
                    self._send(b"5", [], out)
            if out:
                self.transport.write(b"".join(out))

    factory = protocol.Factory.forProtocol(Echo)
    reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


class EchoProcess:
    """The echo server as a child process."""

    def __init__(self) -> None:
        self.fix_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--echo-server",
                                      str(self.fix_port)], cwd=REPO)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.fix_port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the echo server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None


# -- measuring -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, sessions: list[str], pid: int, *, rate: float, duration: float,
         warmup: float, window: int) -> dict[str, Any]:
    """One fixload run in its own process; its JSON result plus the server's CPU use."""
    cmd = [sys.executable, os.path.join(REPO, "bench", "fixload.py"), "--port", str(port),
           "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
           "--window", str(window), "--drain", "120"]
    for s in sessions:
        cmd += ["--session", s]
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=duration * 4 + 180)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    if out.returncode != 0:
        raise RuntimeError(f"fixload failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu"] = round((cpu1 - cpu0) / (t1 - t0), 2)  # cores busy, whole run
    # CPU time per order: what the exchange costs whatever else shares the machine
    result["server_us_per_order"] = round((cpu1 - cpu0) * 1e6 / max(result["acked"], 1), 1)
    if result["violations"]:
        raise RuntimeError(f"session violations: {result['violations']}")
    return result


def profile(pid: int, seconds: float, out_dir: str) -> str:
    """py-spy samples of ``pid`` for ``seconds``: the hottest functions, as text."""
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    raw = os.path.join(out_dir, "profile.txt")
    subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                    "--format", "raw", "--output", raw, "--rate", "250", "--nonblocking"],
                   capture_output=True, timeout=seconds + 60)
    own: dict[str, int] = {}
    total_with: dict[str, int] = {}
    samples = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            if "_bootstrap" in frames[0]:
                continue  # the journal/snapshot/store threads: fdatasync, not Python
            samples += n
            frames = [_LINE.sub(")", f) for f in frames]  # per function, not per line
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                total_with[frame] = total_with.get(frame, 0) + n
    lines = [f"{samples} samples of the reactor thread; self time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {100 * n / max(samples, 1):5.1f}%  {frame}")
    lines.append("inclusive time (project code):")
    ours = {f: n for f, n in total_with.items() if "twisted/" not in f and "runpy" not in f
            and "cli.py" not in f}
    for frame, n in sorted(ours.items(), key=lambda kv: -kv[1])[:30]:
        lines.append(f"  {100 * n / max(samples, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def print_run(name: str, mode: str, rep: int, r: dict[str, Any]) -> None:
    lat = r["latency_us"]
    print(f"  {name:8s} {mode:4s} #{rep + 1}: {r['acks_per_s']:>9,.0f} acks/s"
          f"  p50 {lat.get('p50', 0):>7,.0f} us  p99 {lat.get('p99', 0):>7,.0f}"
          f"  p99.9 {lat.get('p99.9', 0):>7,.0f}  max {lat.get('max', 0):>7,.0f}"
          f"  cpu server {r['server_cpu']:.2f} ({r['server_us_per_order']:.0f} us/order)"
          f" client {r['client_cpu']:.2f}  load {os.getloadavg()[0]:.1f}", flush=True)


def profile_under_load(server: Any, specs: list[str], duration: float, window: int,
                       out_dir: str) -> str:
    """py-spy the server (in a thread) during one max-throughput run."""
    import threading

    pid = server.proc.pid
    report: list[str] = []
    t = threading.Thread(target=lambda: report.append(profile(pid, duration, out_dir)))
    t.start()
    load(server.fix_port, specs, pid, rate=0.0, duration=duration, warmup=0.5, window=window)
    t.join()
    return report[0] if report else "(no profile)"


def median_of(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for r in runs:
        v: Any = r
        for k in keys:
            v = v.get(k, 0.0) if isinstance(v, dict) else 0.0
        values.append(float(v))
    return statistics.median(values) if values else 0.0


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]], rates: list[float],
              fsync: list[float]) -> None:
    """Medians per server and mode, the exchange/baseline ratios and the targets."""
    print("\nmedians:")
    print(f"{'':10s} {'mode':>9s} {'acks/s':>9s} {'p50 us':>9s} {'p99 us':>9s} {'p99.9 us':>9s}"
          f" {'max us':>9s} {'us CPU/order':>13s}")
    for name, runs in results.items():
        for mode, rs in runs.items():
            print(f"{name:10s} {mode:>9s} {median_of(rs, 'acks_per_s'):>9,.0f}"
                  + "".join(f" {median_of(rs, 'latency_us', q):>9,.0f}"
                            for q in ("p50", "p99", "p99.9", "max"))
                  + f" {median_of(rs, 'server_us_per_order'):>13,.1f}")
    if "exchange" not in results:
        return
    ex = results["exchange"]
    fsync_p50, fsync_p99 = pct(fsync, 0.50), pct(fsync, 0.99)
    tput = median_of(ex["max"], "acks_per_s")
    per = median_of(ex["max"], "server_us_per_order")
    print(f"exchange CPU per order at max load: {per:,.1f} us (one core: "
          f"{1e6 / max(per, 0.1):,.0f} orders/s)")
    if "baseline" in results:
        base = results["baseline"]
        print(f"exchange/baseline: max throughput "
              f"{tput / max(median_of(base['max'], 'acks_per_s'), 1):.3f}x, CPU per order "
              f"{per / max(median_of(base['max'], 'server_us_per_order'), 0.1):.1f}x")
        for mode in ex:
            if mode != "max" and mode in base:
                print(f"exchange/baseline p50 latency at {mode}: "
                      f"{median_of(ex[mode], 'latency_us', 'p50') / max(median_of(base[mode], 'latency_us', 'p50'), 1):.1f}x")  # noqa: E501
    print(f"fdatasync of a 4 KiB append on the data disk (this run): p50 {fsync_p50:,.0f} us, "
          f"p99 {fsync_p99:,.0f} us")
    print("targets:")
    met = lambda ok: "MET" if ok else "NOT MET"  # noqa: E731
    print(f"  CPU per order at full load <= {TARGET_US_PER_ORDER_MAX:g} us: {per:,.1f} us "
          f"{met(per <= TARGET_US_PER_ORDER_MAX)}")
    if "1000/s" in ex:
        per_1000 = median_of(ex["1000/s"], "server_us_per_order")
        print(f"  CPU per order at 1,000/s <= {TARGET_US_PER_ORDER_1000:g} us: {per_1000:,.1f} us "
              f"{met(per_1000 <= TARGET_US_PER_ORDER_1000)}")
    print(f"  closed-loop throughput >= {TARGET_RATE:,}/s: {tput:,.0f}/s "
          f"{met(tput >= TARGET_RATE)}")
    for mode in ex:
        if mode == "max":
            continue
        p50 = median_of(ex[mode], "latency_us", "p50")
        p99 = median_of(ex[mode], "latency_us", "p99")
        bound = fsync_p50 + TARGET_P50_OVER_FSYNC_US
        print(f"  at {mode}: p50 {p50:,.0f} us <= fdatasync p50 + {TARGET_P50_OVER_FSYNC_US:g} = "
              f"{bound:,.0f} us {met(p50 <= bound)}; p99 {p99:,.0f} us <= {TARGET_P99_US:,.0f} us "
              f"{met(p99 <= TARGET_P99_US)} (acks/s while offered: "
              f"{median_of(ex[mode], 'acks_per_s'):,.0f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short runs, one repetition")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rates", default="10000,1000",
                        help="fixed-rate runs, orders/s offered (comma-separated; the first "
                             "is the one the latency targets are stated at)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--window", type=int, default=100, help="max run: unanswered per session")
    parser.add_argument("--postgres", metavar="DSN", help="also write rows to this Postgres")
    parser.add_argument("--profile", action="store_true", help="py-spy the exchange once")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    if args.echo_server:
        run_echo_server(args.echo_server)
        return 0
    if args.quick:
        args.repeat, args.duration = 1, 3.0
    warmup = 1.0
    rates = [float(r) for r in args.rates.split(",") if r]
    clients = [(f"LOAD{i}", f"F{i}", f"ACC{i}") for i in range(args.sessions)]
    specs = [f"{c}:EXCH:{a}" for c, _, a in clients]
    tmp = tempfile.mkdtemp(prefix="bench-e2e-")
    fix_port, http_port = free_port(), free_port()
    config = write_config(tmp, clients, fix_port=fix_port, http_port=http_port,
                          postgres_dsn=args.postgres)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    fsync = fdatasync_us(tmp)
    print(f"bench_e2e: {args.sessions} sessions, {args.repeat} repetition(s) of "
          f"{args.duration:g} s (+{warmup:g} s warm-up), fixed rates {args.rates}/s; "
          f"journal fsync on; Postgres {'on' if args.postgres else 'off'}; cpus {os.cpu_count()}")
    try:
        for name in ("baseline", "exchange"):
            server: Any
            if name == "baseline":
                if args.no_baseline:
                    continue
                server = EchoProcess()
            else:
                server = ServerProcess(config, fix_port, http_port, os.path.join(tmp, "log"))
            server.start()
            pid = server.proc.pid
            # low rates first: an overloaded run leaves a backlog (drained before the next)
            modes = [("max", 0.0)] + [(f"{rate:g}/s", rate) for rate in sorted(rates)]
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _ in modes}
            try:
                for rep in range(args.repeat):
                    for mode, rate in modes:
                        r = load(server.fix_port, specs, pid, rate=rate, duration=args.duration,
                                 warmup=warmup, window=args.window)
                        runs[mode].append(r)
                        print_run(name, mode, rep, r)
                if args.profile and name == "exchange":
                    print("py-spy profile of the exchange under max load:\n"
                          + profile_under_load(server, specs, args.duration, args.window, tmp))
            finally:
                server.stop()
            results[name] = runs
        fsync = sorted(fsync + fdatasync_us(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summarise(results, rates, fsync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
