"""Other sessions' order-to-ack latency while one session is sent a 100,000-message resend,
against a baseline without a resend in the same run, and the resend's throughput.

What runs where: the exchange is ``python -m fixserver.cli serve`` with a bench config (K
order-entry sessions LOAD0.., each its own firm and account, plus one session VICTIM; journal
with fsync on; durable FIX message store). Before the server starts, VICTIM's store file is
filled with N ExecutionReports (every 50th sequence number an admin message, so the answer
has gap fills too), as if it had been away while they were sent: ~19 MB for 100,000. The
load client (bench/fixload.py) is a process of its own sending NewOrderSingles from the K
sessions at a fixed rate, recording each ack's send time and latency.

Per server configuration, two phases with the same load:

- baseline: no resend;
- resend: after a warm-up VICTIM logs on (our Logon tells it it is N behind), sends
  ResendRequest(1, 0) and reads the answer as fast as it can (it only counts the messages
  while timing; it checks the whole answer afterwards: every number once, in order, resends
  with PossDupFlag). The latency of the orders sent between the ResendRequest and the
  answer's last message is compared with the baseline's; throughput = answer messages /
  that time.

Configurations (each its own server start):

- ``chunked``: the defaults (ResendChunkMessages=100, ResendChunkBytes=65536,
  ResendRate=50000 per session);
- ``chunked-unpaced``: the same chunks, ResendRate=0 (as fast as the reactor turns allow);
- ``one-piece``: one chunk for the whole range (ResendChunkMessages and ResendChunkBytes
  beyond it, ResendRate=0): what the server did before incremental resend, one reactor turn
  for all of it.

    python bench/bench_resend.py [--quick] [--messages 100000] [--rate 1000] [--sessions 4]
                                 [--repeat 1] [--configs chunked,chunked-unpaced,one-piece]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from bench.fixload import ClientSession, percentiles_us
from fixserver.admin_messages import HeaderBuilder
from fixserver.codec import FixMessage, FrameDecoder
from fixserver.filestore import FileMessageStore
from fixserver.retransmit import plan_retransmit
from fixserver.settings import SessionSettings
from fixserver.timeutil import format_utc_timestamp
from tests.crash.harness import REPO, ServerProcess, free_port, write_config

VICTIM = "VICTIM"
ADMIN_EVERY = 50  # every 50th sequence number of VICTIM's history is an admin message

CONFIGS: dict[str, list[str]] = {
    "chunked": [],
    "chunked-unpaced": ["ResendRate=0"],
    "one-piece": ["ResendChunkMessages=1000000000", "ResendChunkBytes=1000000000000",
                  "ResendRate=0"],
}


def fill_victim_store(store_dir: str, messages: int) -> tuple[int, int]:
    """VICTIM's store with ``messages`` sequence numbers sent (ExecutionReports, every
    ADMIN_EVERY-th an admin message, not stored). Returns (stored messages, their bytes)."""
    settings = SessionSettings("FIX.4.4", "EXCH", VICTIM)
    header = HeaderBuilder(settings)
    now = time.time_ns()
    store = FileMessageStore(store_dir, settings.session_id, now_ns=now)
    sent_at = format_utc_timestamp(now - 3600 * 10**9)
    stored = size = 0
    for seq in range(1, messages + 1):
        if seq % ADMIN_EVERY == 0:
            continue
        raw = header.encode(b"8", seq, sent_at, [
            (37, b"%d" % seq), (11, b"CL-%d" % seq), (17, b"E-%d" % seq), (150, b"0"),
            (39, b"0"), (1, b"ACCV"), (55, b"BTC-PERP"), (54, b"1"), (38, b"0.001"),
            (40, b"2"), (44, b"60000"), (151, b"0.001"), (14, b"0"), (6, b"0"),
            (60, sent_at)])
        store.save_sent(seq, raw)
        stored += 1
        size += len(raw)
    store.set_next_sender_seq(messages + 1)
    store.close()
    return stored, size


def answer_length(messages: int) -> int:
    """Messages in the answer to ResendRequest(1, 0) after our Logon (messages + 1)."""
    stored = [(s, b"") for s in range(1, messages + 1) if s % ADMIN_EVERY]
    return len(plan_retransmit(stored, 1, messages + 1))


def resend_to_victim(port: int, messages: int) -> dict[str, Any]:
    """Log VICTIM on, ask for everything, read the answer (only counting messages: the
    checks come later, off the clock and after the load); timing and the answer's bytes."""
    expected = answer_length(messages)
    client = ClientSession(VICTIM, "EXCH")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.sendall(client.build(b"A", [(98, 0), (108, 30)], time.time_ns()))
    head = b""
    while b"\x0135=A\x01" not in head:
        head += sock.recv(1 << 16)
    chunks: list[bytes] = []
    count = 0
    carry = b""
    t0 = time.perf_counter_ns()
    sock.sendall(client.build(b"2", [(7, 1), (16, 0)], time.time_ns()))
    while count < expected:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the exchange closed VICTIM's connection during the resend")
        chunks.append(data)
        count += (carry + data[:3]).count(b"\x0110=") + data.count(b"\x0110=")
        carry = data[-3:]
    t1 = time.perf_counter_ns()
    sock.sendall(client.build(b"5", [], time.time_ns()))
    sock.close()
    return {"t0": t0, "t1": t1, "messages": expected, "seconds": (t1 - t0) / 1e9,
            "answer": b"".join(chunks)}


def check_answer(data: bytes, messages: int) -> None:
    """Every number 1..messages+1 answered once and in order; resends with PossDupFlag."""
    decoder = FrameDecoder()
    decoder.feed(data)
    cursor = 1
    while (msg := decoder.next_message()) is not None:
        assert isinstance(msg, FixMessage), msg
        seq = msg.get_int(34)
        if seq is None or seq < cursor:
            continue  # a Heartbeat of ours may follow; nothing else is expected
        assert seq == cursor, f"expected MsgSeqNum {cursor}, got {seq}"
        assert msg.get(43) == b"Y", f"{seq} without PossDupFlag"
        cursor = (msg.get_int(36) or 0) if msg.msg_type == b"4" else seq + 1
    assert cursor == messages + 2, f"the answer ended at {cursor}, not {messages + 2}"


def run_load(port: int, specs: list[str], rate: float, duration: float, warmup: float,
             samples_path: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, os.path.join(REPO, "bench", "fixload.py"), "--port", str(port),
           "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
           "--drain", "60", "--samples", samples_path]
    for spec in specs:
        cmd += ["--session", spec]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_load(proc: subprocess.Popen[str], samples_path: str) -> list[tuple[int, int]]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"fixload failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if result["violations"]:
        raise RuntimeError(f"session violations: {result['violations']}")
    with open(samples_path) as f:
        return [tuple(s) for s in json.load(f)]  # type: ignore[misc]


def latency(samples: list[tuple[int, int]], start: int, end: int) -> dict[str, float]:
    return percentiles_us(sorted(lat for sent, lat in samples if start <= sent < end))


def run_config(name: str, extra: list[str], tmp: str, pristine: str, args: Any,
               clients: list[tuple[str, str, str]]) -> dict[str, Any]:
    directory = os.path.join(tmp, name)
    os.makedirs(os.path.join(directory, "store"))
    for f in os.listdir(pristine):
        shutil.copy(os.path.join(pristine, f), os.path.join(directory, "store", f))
    fix_port, http_port = free_port(), free_port()
    config = write_config(directory, clients, fix_port=fix_port, http_port=http_port,
                          extra_default=extra)
    server = ServerProcess(config, fix_port, http_port, os.path.join(directory, "log"))
    specs = [f"{c}:EXCH:{a}" for c, _, a in clients if c != VICTIM]
    server.start()
    try:
        samples_path = os.path.join(directory, "samples.json")
        proc = run_load(fix_port, specs, args.rate, args.duration, args.warmup, samples_path)
        samples = finish_load(proc, samples_path)
        t_start = min(s for s, _ in samples)
        baseline = latency(samples, t_start + int(args.warmup * 1e9), 1 << 62)
        proc = run_load(fix_port, specs, args.rate, args.duration, args.warmup, samples_path)
        time.sleep(args.warmup + 1.0)
        resend = resend_to_victim(fix_port, args.messages)
        samples = finish_load(proc, samples_path)
        during = latency(samples, resend["t0"], resend["t1"])
    finally:
        server.stop()
    check_answer(resend.pop("answer"), args.messages)
    return {"baseline": baseline, "during": during, "resend": resend}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number the median over the runs."""
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    out: dict[str, Any] = {}
    for phase in ("baseline", "during"):
        keys = {k for r in runs for k in r[phase]}
        out[phase] = {k: med([r[phase].get(k, 0) for r in runs]) for k in keys}
    out["resend"] = {k: med([r["resend"][k] for r in runs]) for k in ("messages", "seconds")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages, short load")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=4, help="load sessions")
    parser.add_argument("--rate", type=float, default=1000.0, help="orders/s in total")
    parser.add_argument("--duration", type=float, default=8.0, help="measured s per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, of: " + ", ".join(CONFIGS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per config (medians)")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.duration = 20_000, 4.0
    clients = [(f"LOAD{i}", f"F{i}", f"ACC{i}") for i in range(args.sessions)]
    clients.append((VICTIM, "FV", "ACCV"))
    tmp = tempfile.mkdtemp(prefix="bench-resend-")
    try:
        pristine = os.path.join(tmp, "pristine")
        stored, size = fill_victim_store(pristine, args.messages)
        print(f"bench_resend: a {args.messages:,}-message resend ({stored:,} ExecutionReports, "
              f"{size / 1e6:.1f} MB, {answer_length(args.messages) - stored:,} gap fills) to "
              f"one session while {args.sessions} sessions send {args.rate:,.0f} orders/s "
              f"(journal fsync on); cpus {os.cpu_count()}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {}
        for rep in range(args.repeat):
            for name in args.configs.split(","):
                r = run_config(f"{name}-{rep}", CONFIGS[name], tmp, pristine, args, clients)
                runs.setdefault(name, []).append(r)
                print(f"  {name} #{rep + 1}: resend "
                      f"{r['resend']['messages'] / r['resend']['seconds']:,.0f} msgs/s in "
                      f"{r['resend']['seconds']:.2f} s; others' p99 "
                      f"{r['baseline'].get('p99', 0):,.0f} us -> "
                      f"{r['during'].get('p99', 0):,.0f} us during it; load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
        results = {name: median_run(rs) for name, rs in runs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nother sessions' order-to-ack latency (us){' (medians)' if args.repeat > 1 else ''}"
          ": baseline = no resend, same server and load; resend = orders sent while the "
          "resend ran")
    print(f"{'config':16s} {'phase':9s} {'orders':>7s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s}"
          f" {'max':>8s} {'p99 x':>6s} {'max x':>6s} {'resend msgs/s':>14s} {'resend s':>9s}")
    for name, r in results.items():
        base, during, resend = r["baseline"], r["during"], r["resend"]
        for phase, lat in (("baseline", base), ("resend", during)):
            ratio = phase == "resend"
            line = (f"{name:16s} {phase:9s} {lat.get('n', 0):>7,.0f} "
                    + " ".join(f"{lat.get(q, 0):>8,.0f}" for q in ("p50", "p99", "p99.9", "max")))
            if ratio:
                line += (f" {lat.get('p99', 0) / max(base.get('p99', 1), 1):>6.1f}"
                         f" {lat.get('max', 0) / max(base.get('max', 1), 1):>6.1f}"
                         f" {resend['messages'] / resend['seconds']:>14,.0f}"
                         f" {resend['seconds']:>9.2f}")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
