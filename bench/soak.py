"""Soak: the exchange under a steady offered load for a long time; its memory, throughput and
CPU per order, interval by interval.

What runs where: the exchange is ``python -m fixserver.cli serve`` (tests/crash/harness.py's
``write_config`` and ``ServerProcess``): a few order-entry sessions, each its own firm and
account, journal with fsync, durable FIX message stores, default snapshot settings, no
Postgres. The load client is a second process (this file with ``--client``): bench.fixload's
``ClientSession``, ``Link`` and ``OrderFlow`` driven from one thread at a fixed offered rate
(evenly spaced; GTC limits at one price, sides alternating, so the sessions' orders cross each
other and the book stays nearly empty: almost every order ends, filled). The sessions stay
logged on for the whole run (no sequence reset after the first Logon).

Every ``--every`` minutes the client prints its interval (orders sent, acks = first
ExecutionReports, latency send -> ack p50/p99/max) and this process adds the server's side:

- RSS (``VmRSS`` of /proc/PID/status) and its growth since the previous line;
- server CPU per acked order (utime + stime from /proc/PID/stat over the interval);
- snapshots the server took in the interval (its ``snapshot.taken ... stall_ms=`` log lines)
  and the largest stall;
- the ledger's kept ended orders: counted in the newest snapshot file (the order-entry
  ``extra`` carries them as ``ended``; the count is read from the msgpack array header, not
  decoded), so it is the number at that snapshot, not at the line's time;
- the load average.

    python bench/soak.py [--minutes 30] [--rate 3000] [--every 5] [--sessions 4]

``--max-rss-mb`` (default 12,000) stops the run if the server grows past it (the machine is
shared and has no swap). The data directory (journal, stores, server log) is removed at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from bench.fixload import ClientSession, Link, OrderFlow, percentiles_us, wait_logged_on
from tests.crash.harness import REPO, ServerProcess, free_port, write_config

_SNAPSHOT_LINE = re.compile(r"snapshot\.taken next_seq=(\d+) bytes=(\d+) stall_ms=([\d.]+)")


# -- the load: fixload's sessions at a fixed offered rate, with per-ack samples --------------


class SteadyLoad:
    """NewOrderSingles from several sessions at a fixed total rate, one thread.

    ``pump(until_ns)`` runs the select loop until ``perf_counter_ns()`` reaches ``until_ns``
    (sending when ``send``); every order's first ExecutionReport (its ack) adds
    ``(send time, latency)`` in perf_counter nanoseconds to ``samples`` (the caller takes the
    list away when it likes). ``flow`` makes each session's order bodies (default: fixload's
    crossing OrderFlow). With ``max_unacked``, an order that falls due while that many are
    unanswered is not sent (counted in ``skipped``): an exchange that cannot keep up then
    runs at its capacity with a bounded queue instead of an ever longer one (which would end
    in the exchange disconnecting the client as a slow reader)."""

    def __init__(self, host: str, port: int, sessions: Sequence[tuple[str, str, str]],
                 rate: float, flow: Callable[[int, str, str], Any] | None = None,
                 max_unacked: int = 0) -> None:
        self.links = [Link(ClientSession(s, t), host, port) for s, t, _ in sessions]
        for link in self.links:
            link.session.logon(time.time_ns(), reset=True)
        wait_logged_on(self.links)
        run = f"{time.time_ns() // 1_000_000 % 10**9:x}"
        make = flow or (lambda i, account, run: OrderFlow(i, account, run=run))
        self.flows = [make(i, account, run) for i, (_, _, account) in enumerate(sessions)]
        self.interval_ns = int(1e9 / rate)
        self.max_unacked = max_unacked
        self.next_due: int | None = None
        self.sent_at: dict[bytes, int] = {}
        self.samples: list[tuple[int, int]] = []
        self.sent = 0
        self.acks = 0
        self.ers = 0
        self.rejects = 0  # acks that are ExecType=8 (the order was refused)
        self.skipped = 0  # orders due while max_unacked were outstanding: not sent
        self._rr = 0
        self._burst: list[bytes] = []
        self._by_fd = {link.fileno(): link for link in self.links}

    def _send_one(self) -> None:
        i = self._rr
        self._rr = (i + 1) % len(self.links)
        session = self.links[i].session
        wall = time.time_ns()
        cl, body = self.flows[i].next(session.sending_time(wall))
        session.queue(session.build_raw(b"D", body, wall))
        self._burst.append(cl)
        self.sent += 1

    def pump(self, until_ns: int, *, send: bool = True) -> None:
        perf = time.perf_counter_ns
        links = self.links
        sent_at = self.sent_at
        while True:
            now = perf()
            if now >= until_ns:
                break
            if send:
                if self.next_due is None:
                    self.next_due = now
                while self.next_due <= now:
                    if self.max_unacked and len(sent_at) + len(self._burst) >= self.max_unacked:
                        self.skipped += 1
                    else:
                        self._send_one()
                    self.next_due += self.interval_ns
                for link in links:
                    link.flush()
                t = perf()  # the send time: when the bytes went to the socket
                for cl in self._burst:
                    sent_at[cl] = t
                self._burst.clear()
                timeout = max(0.0, (min(self.next_due, until_ns) - perf()) / 1e9)
            else:
                self.next_due = None  # sending resumes evenly spaced, not with a burst
                timeout = min(0.05, (until_ns - now) / 1e9)
            writers = [link for link in links if link.wants_write]
            ready, writable, _ = select.select(links, writers, [], timeout)
            for link in writable:
                link.flush()
            if not ready:
                continue
            now = perf()
            wall = time.time_ns()
            for link in ready:
                for msg, repeat in link.read(wall):
                    if repeat or msg.msg_type != b"8":
                        continue
                    self.ers += 1
                    cl = msg.get(11)
                    t0 = sent_at.pop(cl, None) if cl is not None else None
                    if t0 is None:
                        continue  # not the order's first report
                    self.acks += 1
                    if msg.get(150) == b"8":
                        self.rejects += 1
                    self.samples.append((t0, now - t0))
                if link.closed:
                    raise ConnectionError(f"{link.session.sender.decode()}: connection closed")
                link.flush()

    @property
    def violations(self) -> list[str]:
        return [v for link in self.links for v in link.session.violations]

    def close(self) -> None:
        for link in self.links:
            link.session.logout(time.time_ns())
            link.flush()
            link.close()


def run_client(port: int, sessions: list[tuple[str, str, str]], rate: float, minutes: float,
               every: float, drain: float, max_unacked: int) -> None:
    """The load client process: one JSON line per interval on stdout."""
    load = SteadyLoad("127.0.0.1", port, sessions, rate, max_unacked=max_unacked)
    perf = time.perf_counter_ns
    start = perf()
    end = start + int(minutes * 60e9)
    step = int(every * 60e9)
    boundary = start
    cpu0 = time.process_time()
    last = {"sent": 0, "skipped": 0, "acks": 0, "ers": 0, "rejects": 0}
    print(json.dumps({"started": True}), flush=True)
    while boundary < end:
        boundary = min(boundary + step, end)
        t_from = perf()
        load.pump(boundary)
        if boundary >= end:  # the last interval also waits for its acks
            while load.sent_at and perf() < boundary + int(drain * 1e9):
                load.pump(perf() + 50_000_000, send=False)
        samples, load.samples = load.samples, []
        lat = sorted(s[1] for s in samples)
        now = perf()
        line: dict[str, Any] = {
            "t_s": round((now - start) / 1e9, 1),
            "interval_s": round((now - t_from) / 1e9, 2),
            **{k: getattr(load, k) - v for k, v in last.items()},
            "unacked": len(load.sent_at),
            "latency_us": percentiles_us(lat),
            "client_cpu": round((time.process_time() - cpu0) / ((now - start) / 1e9), 2),
            "violations": load.violations[:3],
            "resend_requests": sum(link.session.resend_requests for link in load.links),
        }
        last = {k: getattr(load, k) for k in last}
        print(json.dumps(line), flush=True)
        if line["violations"]:
            break
    load.close()


# -- the server's side ----------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LogFollower:
    """The server log's new ``snapshot.taken`` lines since the last call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0

    def snapshots(self) -> list[tuple[int, int, float]]:
        """(next_seq, engine bytes, stall_ms) of each snapshot logged since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        cut = data.rfind(b"\n") + 1  # a partly written last line waits for the next call
        self.offset += cut
        text = data[:cut].decode("utf-8", "replace")
        return [(int(m[1]), int(m[2]), float(m[3])) for m in _SNAPSHOT_LINE.finditer(text)]


def newest_snapshot(journal_dir: str) -> str | None:
    try:
        names = sorted(n for n in os.listdir(journal_dir)
                       if n.startswith("snapshot-") and n.endswith(".snap"))
    except OSError:
        return None
    return os.path.join(journal_dir, names[-1]) if names else None


def kept_ended_orders(path: str) -> tuple[int, int | None]:
    """(next_seq, ended orders the ledger kept) of a snapshot file, read by streaming the
    msgpack (engine.recovery's layout: magic, frame header, [version, next_seq, last_ts,
    last_tick_ts, state_hash, engine, extra]): only the ``ended`` array's header is read."""
    import msgpack

    from engine.recovery import EXTRA_PACKED, SNAPSHOT_MAGIC

    with open(path, "rb") as f:  # an open file survives the server's pruning of it
        if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            return 0, None
        f.read(8)  # the frame header (length, CRC32)
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False,
                                    max_buffer_size=1 << 31)
        if unpacker.read_array_header() != 7:
            return 0, None
        unpacker.skip()  # version
        next_seq = int(unpacker.unpack())
        for _ in range(4):  # last_ts, last_tick_ts, state_hash, engine bytes
            unpacker.skip()
        try:
            keys = unpacker.read_map_header()
        except Exception:  # no map: None, or the extra packed by a forked child (an ExtType)
            extra = unpacker.unpack()
            if isinstance(extra, msgpack.ExtType) and extra.code == EXTRA_PACKED:
                inner = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         max_buffer_size=len(extra.data) + 1)
                inner.feed(extra.data)
                return next_seq, _ended_count(inner, inner.read_map_header())
            return next_seq, None
        return next_seq, _ended_count(unpacker, keys)


def _ended_count(unpacker: Any, keys: int) -> int | None:
    """The length of the ``ended`` array in a map of ``keys`` entries being unpacked."""
    for _ in range(keys):
        if unpacker.unpack() == "ended":
            return int(unpacker.read_array_header())
        unpacker.skip()
    return None


def git_state() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{git('rev-parse', '--short', 'HEAD')}{' + uncommitted changes' if dirty else ''}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="duration of the load")
    parser.add_argument("--rate", type=float, default=3000.0, help="orders/s offered in total")
    parser.add_argument("--every", type=float, default=5.0, help="minutes between reports")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds the last interval waits for outstanding acks")
    parser.add_argument("--max-unacked", type=int, default=0,
                        help="orders unanswered at most; due orders beyond it are skipped "
                             "(default: half a second of the offered rate)")
    parser.add_argument("--max-rss-mb", type=float, default=12000.0,
                        help="stop if the server's RSS passes this")
    parser.add_argument("--no-ledger", action="store_true",
                        help="do not read the kept ended orders from snapshot files")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--session", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        sessions = [tuple(s.split(":", 2)) for s in args.session]
        run_client(args.client, sessions, args.rate, args.minutes,  # type: ignore[arg-type]
                   args.every, args.drain, args.max_unacked)
        return 0

    if not args.max_unacked:
        args.max_unacked = max(1, int(args.rate / 2))
    clients = [(f"SOAK{i}", f"F{i}", f"ACC{i}") for i in range(args.sessions)]
    specs = [f"{c}:EXCH:{a}" for c, _, a in clients]
    tmp = tempfile.mkdtemp(prefix="bench-soak-")
    fix_port, http_port = free_port(), free_port()
    # DefaultSTP=M: an account's order that meets its own resting order cancels that one
    # (the default, T, cancels the incoming order: at one price about a fifth of the orders,
    # the sells, then stayed on the book for good and the soak measured a growing book)
    stp = {c: ["DefaultSTP=M"] for c, _, _ in clients}
    config = write_config(tmp, clients, fix_port=fix_port, http_port=http_port,
                          session_extra=stp)
    journal = os.path.join(tmp, "journal")
    server = ServerProcess(config, fix_port, http_port, os.path.join(tmp, "server.log"))
    print(f"soak: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; code {git_state()}; "
          f"{platform.python_implementation()} {platform.python_version()}; "
          f"cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    print(f"  {args.sessions} sessions, {args.rate:,.0f} orders/s offered for "
          f"{args.minutes:g} min, a line every {args.every:g} min; journal fsync on, durable "
          f"stores, default snapshots; data in {tmp}", flush=True)
    server.start()
    pid = server.proc.pid  # type: ignore[union-attr]
    log = LogFollower(server.log_path)
    rss0 = proc_status_kb(pid, "VmRSS") / 1024
    print(f"  server pid {pid}, RSS at start {rss0:,.1f} MB")
    print("\ncolumns: minutes since the load began; server RSS and its growth over the interval;"
          " acks/s received; orders/s skipped (max unacked reached); server CPU us per ack;"
          " order-to-ack latency; orders unanswered at the line; snapshots logged and the"
          " largest stall; the ledger's kept ended orders @ the newest snapshot's seq;"
          " client CPU (cores); load average")
    print(f"{'min':>6s} {'RSS MB':>8s} {'+MB':>7s} {'acks/s':>7s} {'skip/s':>6s} {'us CPU':>7s}"
          f" {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>8s} {'unacked':>7s} {'snaps':>5s}"
          f" {'stall ms':>8s} {'ended kept':>20s} {'client':>6s} {'load':>5s}", flush=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--client", str(fix_port),
           "--rate", str(args.rate), "--minutes", str(args.minutes), "--every", str(args.every),
           "--drain", str(args.drain), "--max-unacked", str(args.max_unacked)]
    for s in specs:
        cmd += ["--session", s]
    client = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    rows: list[dict[str, Any]] = []
    prev_rss, prev_cpu = rss0, cpu_seconds(pid)
    stopped = ""
    try:
        assert client.stdout is not None
        for raw in client.stdout:
            line = json.loads(raw)
            if line.get("started"):
                prev_rss, prev_cpu = proc_status_kb(pid, "VmRSS") / 1024, cpu_seconds(pid)
                continue
            rss = proc_status_kb(pid, "VmRSS") / 1024
            cpu = cpu_seconds(pid)
            snaps = log.snapshots()
            ended: str = "-"
            if not args.no_ledger:
                path = newest_snapshot(journal)
                if path is not None:
                    try:
                        seq, n = kept_ended_orders(path)
                        ended = f"{n:,} @{seq:,}" if n is not None else "n/a"
                    except Exception as exc:  # a report line is worth more than this
                        ended = f"unreadable ({type(exc).__name__})"
            lat = line["latency_us"]
            row = {**line, "rss_mb": rss, "rss_growth_mb": rss - prev_rss,
                   "acks_per_s": line["acks"] / max(line["interval_s"], 1e-9),
                   "us_cpu_per_order": (cpu - prev_cpu) * 1e6 / max(line["acks"], 1),
                   "snapshots": len(snaps), "max_stall_ms": max((s[2] for s in snaps),
                                                                default=0.0),
                   "ended": ended, "load": os.getloadavg()[0]}
            rows.append(row)
            print(f"{line['t_s'] / 60:6.1f} {rss:8,.1f} {rss - prev_rss:+7,.1f}"
                  f" {row['acks_per_s']:7,.0f}"
                  f" {line['skipped'] / max(line['interval_s'], 1e-9):6,.0f}"
                  f" {row['us_cpu_per_order']:7,.0f}"
                  f" {lat.get('p50', 0) / 1000:7,.1f} {lat.get('p99', 0) / 1000:7,.1f}"
                  f" {lat.get('max', 0) / 1000:8,.1f} {line['unacked']:7,d}"
                  f" {len(snaps):5d} {row['max_stall_ms']:8,.1f} {ended:>20s}"
                  f" {line['client_cpu']:6.2f} {row['load']:5.1f}", flush=True)
            if line["violations"] or line["rejects"]:
                print(f"  rejects {line['rejects']}, violations {line['violations']}")
            prev_rss, prev_cpu = rss, cpu
            if rss > args.max_rss_mb:
                stopped = f"stopped: server RSS {rss:,.0f} MB > --max-rss-mb {args.max_rss_mb:g}"
                break
    finally:
        if client.poll() is None:
            client.terminate()
        client.wait(30)
        hwm = proc_status_kb(pid, "VmHWM") / 1024 if server.proc is not None else 0.0
        try:
            server.stop(timeout=300)
        except Exception as exc:  # the summary is still worth printing
            print(f"  server stop: {exc!r}")
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if stopped:
        print(stopped)
    if not rows:
        print("no interval completed")
        return 1
    full = [r for r in rows if r["interval_s"] >= args.every * 60 * 0.9]
    growth = [r["rss_growth_mb"] for r in full]
    acked = sum(r["acks"] for r in full)
    print(f"\nsummary ({len(full)} full intervals of {args.every:g} min; peak RSS {hwm:,.0f} MB):")
    print(f"  RSS {rss0:,.0f} MB at start -> {rows[-1]['rss_mb']:,.0f} MB at the end; growth per "
          f"interval median {median(growth):+,.0f} MB (range {min(growth, default=0):+,.0f}"
          f" .. {max(growth, default=0):+,.0f}); "
          f"{sum(growth) * 1024 * 1024 / max(acked, 1):,.0f} bytes per acked order")
    print(f"  acks/s median {median([r['acks_per_s'] for r in full]):,.0f} of "
          f"{args.rate:,.0f} offered; server CPU per order median "
          f"{median([r['us_cpu_per_order'] for r in full]):,.0f} us; latency p50 median "
          f"{median([r['latency_us'].get('p50', 0) for r in full]) / 1000:,.1f} ms, p99 median "
          f"{median([r['latency_us'].get('p99', 0) for r in full]) / 1000:,.1f} ms; "
          f"load average median {median([r['load'] for r in rows]):.1f}")
    print(f"  snapshots {sum(r['snapshots'] for r in rows)}, largest logged stall "
          f"{max(r['max_stall_ms'] for r in rows):,.1f} ms; rejects "
          f"{sum(r['rejects'] for r in rows)}")
    print("SOAK_JSON " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
