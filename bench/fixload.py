"""A fast raw-socket FIX 4.4 initiator for load tests, benchmarks and the crash test.

Theory of operation
-------------------
:class:`ClientSession` is the initiator side of one FIX session, sans-IO: ``build()`` turns a
body into framed bytes with the next MsgSeqNum, ``receive(data, now_ns)`` frames and checks
what the exchange sent and returns the application messages. It keeps both sequence numbers
across reconnects (no reset: ``logon()`` carries on from ``next_out``), answers TestRequests,
answers a ResendRequest with one SequenceReset-GapFill (stale orders are never resent), and
asks for a resend (``16=0``) when the exchange's MsgSeqNum jumps ahead. Only the message with
exactly ``next_in`` is processed; one above it is dropped (the resend brings it back) and one
below it must carry PossDupFlag=Y: it is returned flagged as a repeat, so the caller can check
that it is identical to the original. A lower MsgSeqNum without PossDupFlag, a garbled frame or
a session-level Reject is recorded in ``violations``.

:class:`Link` is one TCP connection of a session (non-blocking socket, output buffer).
:func:`run_load` drives many sessions from one thread with ``select`` (microsecond timeouts,
so the receive time of an ExecutionReport is taken when it arrives): it logs them on, sends
NewOrderSingles at a target rate (evenly spaced) or as fast as a window of unanswered orders
allows, and timestamps each order's send and its first ExecutionReport.

Run as a program it prints one JSON line of results (see ``main``); bench/bench_e2e.py runs it
in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from fixserver.codec import (
    FixMessage,
    FrameDecoder,
    GarbledMessage,
    encode,
    encode_body,
    frame_body,
)
from fixserver.timeutil import format_utc_timestamp

#: header and trailer tags: what may differ between an original and its PossDup resend
HEADER_TAGS = frozenset({8, 9, 10, 34, 35, 43, 49, 50, 52, 56, 57, 97, 115, 122, 128, 369})


class ClientSession:
    """The initiator side of one FIX session (see the module docstring)."""

    def __init__(
        self,
        sender: str,
        target: str,
        *,
        heartbeat_s: int = 30,
        begin_string: bytes = b"FIX.4.4",
    ) -> None:
        self.sender = sender.encode()
        self.target = target.encode()
        self.heartbeat_s = heartbeat_s
        self.begin_string = begin_string
        self.next_out = 1
        self.next_in = 1
        self.logged_on = False
        self.logout_received = False
        #: while a ResendRequest is out: the highest MsgSeqNum seen beyond the gap
        self.resend_until = 0
        self.resend_requests = 0
        self.violations: list[str] = []
        self.rejects: list[FixMessage] = []  # session-level Rejects (35=3) of our messages
        #: (MsgSeqNum, NewSeqNo) of gap fills over numbers already received (after a
        #: ResendRequest of ours for messages we had: the caller checks what they covered)
        self.stale_gap_fills: list[tuple[int, int]] = []
        self.last_sent_ns = 0
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._ts_ms = -1
        self._ts = b""

    # -- sending --------------------------------------------------------------------------

    def sending_time(self, now_ns: int) -> bytes:
        ms = now_ns // 1_000_000
        if ms != self._ts_ms:  # one formatting per millisecond, not per message
            self._ts_ms = ms
            self._ts = format_utc_timestamp(now_ns)
        return self._ts

    def build(self, msg_type: bytes, body: Sequence[tuple[int, Any]], now_ns: int,
              header: Sequence[tuple[int, Any]] = ()) -> bytes:
        """Framed bytes of one message with the next MsgSeqNum (also queued by ``send``)."""
        return self.build_raw(msg_type, encode_body([*header, *body]), now_ns)

    def build_raw(self, msg_type: bytes, body: bytes, now_ns: int) -> bytes:
        """Like ``build`` with the body (and extra header fields) already encoded: the load
        generator's fast path (only MsgSeqNum, SendingTime and the body vary)."""
        seq = self.next_out
        self.next_out = seq + 1
        self.last_sent_ns = now_ns
        head = b"35=%s\x0134=%d\x0149=%s\x0152=%s\x0156=%s\x01" % (
            msg_type, seq, self.sender, self.sending_time(now_ns), self.target)
        return frame_body(head + body, self.begin_string)

    def send(self, msg_type: bytes, body: Sequence[tuple[int, Any]], now_ns: int,
             header: Sequence[tuple[int, Any]] = ()) -> None:
        self._out.append(self.build(msg_type, body, now_ns, header))

    def queue(self, data: bytes) -> None:
        """Queue already framed bytes (from ``build``/``build_raw``)."""
        self._out.append(data)

    def logon(self, now_ns: int, reset: bool = False) -> None:
        """Queue a Logon that carries on from ``next_out`` (a reconnect starts a new decoder);
        ``reset``: ResetSeqNumFlag (141=Y), both sides start again at 1."""
        self._decoder = FrameDecoder()
        self.logged_on = False
        self.logout_received = False
        self.resend_until = 0
        body: list[tuple[int, Any]] = [(98, 0), (108, self.heartbeat_s)]
        if reset:
            self.next_out = self.next_in = 1
            body.append((141, b"Y"))
        self.send(b"A", body, now_ns)

    def logout(self, now_ns: int, text: str = "") -> None:
        self.send(b"5", [(58, text)] if text else [], now_ns)

    def on_timer(self, now_ns: int) -> None:
        """A Heartbeat when nothing was sent for HeartBtInt."""
        if self.logged_on and now_ns - self.last_sent_ns >= self.heartbeat_s * 1_000_000_000:
            self.send(b"0", [], now_ns)

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out = []
        return data

    # -- receiving ------------------------------------------------------------------------

    def receive(self, data: bytes, now_ns: int) -> list[tuple[FixMessage, bool]]:
        """Application messages in ``data``, in order: (message, is_a_PossDup_repeat)."""
        decoder = self._decoder
        decoder.feed(data)
        out: list[tuple[FixMessage, bool]] = []
        while True:
            msg = decoder.next_message()
            if msg is None:
                return out
            if type(msg) is GarbledMessage:
                self.violations.append(f"garbled frame from the exchange: {msg!r}")
                continue
            self._one(msg, now_ns, out)  # type: ignore[arg-type]

    def _one(self, msg: FixMessage, now_ns: int, out: list[tuple[FixMessage, bool]]) -> None:
        seq = msg.get_int(34) or 0
        mt = msg.msg_type
        if mt == b"2":  # ResendRequest: answered at once, in sequence or not (as QuickFIX)
            self._gap_fill(msg.get_int(7) or 1, now_ns)
        elif mt == b"5":
            self.logout_received = True
        elif mt == b"A":
            self.logged_on = True
        elif mt == b"4":
            self._sequence_reset(msg, seq, now_ns)
            return
        expected = self.next_in
        if seq < expected:
            if msg.get(43) == b"Y":
                if mt not in _ADMIN:
                    out.append((msg, True))
            else:
                self.violations.append(
                    f"MsgSeqNum {seq} (35={mt.decode()}) below the expected {expected} "
                    "without PossDupFlag: the exchange's sequence numbers went back")
            return
        if seq > expected:
            self._gap(seq, now_ns)
            return
        self.next_in = expected + 1
        if self.resend_until and self.next_in > self.resend_until:
            self.resend_until = 0
        if mt in _ADMIN:
            if mt == b"1":
                self.send(b"0", [(112, msg.get(112) or b"")], now_ns)
            elif mt == b"3":
                self.rejects.append(msg)
                self.violations.append(f"session-level Reject of our message: {msg!r}")
            return
        out.append((msg, False))

    def _sequence_reset(self, msg: FixMessage, seq: int, now_ns: int) -> None:
        new_seq = msg.get_int(36) or 0
        if msg.get(123) == b"Y":
            if seq < self.next_in:
                self.stale_gap_fills.append((seq, new_seq))
                return  # a gap fill we have already been past
            if seq > self.next_in:
                self._gap(seq, now_ns)
                return
        if new_seq < self.next_in:
            self.violations.append(f"SequenceReset to {new_seq} below the expected {self.next_in}")
            return
        self.next_in = new_seq
        if self.resend_until and self.next_in > self.resend_until:
            self.resend_until = 0

    def request_resend(self, begin: int, end: int, now_ns: int) -> None:
        """Ask for messages again (e.g. ones already received, to compare the resends)."""
        self.send(b"2", [(7, begin), (16, end)], now_ns)

    def _gap(self, seq: int, now_ns: int) -> None:
        if self.resend_until:  # one ResendRequest (to infinity) is out already
            self.resend_until = max(self.resend_until, seq)
            return
        self.resend_until = seq
        self.resend_requests += 1
        self.send(b"2", [(7, self.next_in), (16, 0)], now_ns)

    def _gap_fill(self, begin: int, now_ns: int) -> None:
        # Orders the exchange never got are not resent (they are stale): one gap fill.
        seq = min(begin, self.next_out)
        fields = [(35, b"4"), (34, seq), (49, self.sender), (52, self.sending_time(now_ns)),
                  (56, self.target), (43, b"Y"), (122, self.sending_time(now_ns)),
                  (123, b"Y"), (36, self.next_out)]
        self._out.append(encode(fields, self.begin_string))

    @property
    def caught_up(self) -> bool:
        """Logged on with no resend outstanding."""
        return self.logged_on and not self.resend_until


_ADMIN = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})


def body_fields(msg: FixMessage) -> list[tuple[int, bytes]]:
    """A message's fields without the header and trailer (what a resend must repeat)."""
    return [(t, v) for t, v in msg.fields if t not in HEADER_TAGS]


class Link:
    """One TCP connection of a ClientSession (non-blocking, with an output buffer)."""

    def __init__(self, session: ClientSession, host: str, port: int,
                 connect_timeout: float = 5.0) -> None:
        self.session = session
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.closed = False
        self._pending = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def flush(self) -> None:
        """Write what the session queued (as much as the socket takes now)."""
        data = self.session.data_to_send()
        if data:
            self._pending = self._pending + data if self._pending else data
        if self._pending and not self.closed:
            try:
                n = self.sock.send(self._pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            self._pending = self._pending[n:]

    @property
    def wants_write(self) -> bool:
        return bool(self._pending)

    def read(self, now_ns: int) -> list[tuple[FixMessage, bool]]:
        """Read what arrived; a closed connection sets ``closed``."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.close()
            return []
        return self.session.receive(data, now_ns)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


def wait_logged_on(links: Sequence[Link], timeout: float = 10.0) -> None:
    """Pump until every link's session is logged on and caught up; raises on timeout/close."""
    deadline = time.monotonic() + timeout
    while not all(link.session.caught_up for link in links):
        for link in links:
            if link.closed:
                raise ConnectionError(f"{link.session.sender.decode()}: closed during logon")
            link.flush()
        if time.monotonic() > deadline:
            states = {link.session.sender.decode(): (link.session.logged_on,
                                                     link.session.resend_until)
                      for link in links}
            raise TimeoutError(f"sessions not logged on after {timeout}s: {states}")
        ready, _, _ = select.select(links, [], [], 0.05)
        for link in ready:
            link.read(time.time_ns())


# -- load generation ----------------------------------------------------------------------


class OrderFlow:
    """NewOrderSingle bodies of one session: limit orders at one price, sides alternating,
    so the sessions' orders cross each other (every other order trades)."""

    def __init__(self, index: int, account: str, symbol: str = "BTC-PERP",
                 price: str = "60000", qty: str = "0.001", run: str = "") -> None:
        # ClOrdIDs must be new to the exchange in every run (it refuses duplicates)
        self.prefix = f"L{index}-{run}-".encode()
        self.n = 0
        self.index = index
        common = [(1, account), (55, symbol)]
        rest = [(38, qty), (40, "2"), (44, price), (59, "1")]
        self.tail_buy = encode_body([*common, (54, "1"), *rest])
        self.tail_sell = encode_body([*common, (54, "2"), *rest])

    def next(self, transact_time: bytes) -> tuple[bytes, bytes]:
        """(ClOrdID, encoded body) of the next order."""
        self.n += 1
        cl = b"%s%d" % (self.prefix, self.n)
        tail = self.tail_buy if (self.n + self.index) & 1 else self.tail_sell
        return cl, b"11=%s\x0160=%s\x01%s" % (cl, transact_time, tail)


def run_load(
    host: str,
    port: int,
    sessions: Sequence[tuple[str, str, str]],  # (SenderCompID, TargetCompID, Account)
    *,
    rate: float = 0.0,  # orders/s offered in total; 0: as fast as the window allows
    duration: float = 5.0,
    warmup: float = 1.0,
    window: int = 200,  # unanswered orders per session (max-throughput mode)
    drain_timeout: float = 10.0,
    samples: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Send NewOrderSingles from every session; latencies and rates as a dict (see main)."""
    links = [Link(ClientSession(s, t), host, port) for s, t, _ in sessions]
    for link in links:
        link.session.logon(time.time_ns(), reset=True)  # every run starts at MsgSeqNum 1
    wait_logged_on(links)
    run = f"{time.time_ns() // 1_000_000 % 10**9:x}"
    flows = [OrderFlow(i, account, run=run) for i, (_, _, account) in enumerate(sessions)]
    outstanding = [0] * len(links)
    sent_at: dict[bytes, int] = {}  # ClOrdID -> perf_counter_ns at send
    latencies: list[int] = []
    acks = 0
    acked_in_window = 0
    sent_total = 0
    ers = 0
    perf = time.perf_counter_ns
    cpu0 = time.process_time()
    start = perf()
    measure_from = start + int(warmup * 1e9)
    stop_sending = measure_from + int(duration * 1e9)
    interval = int(1e9 / rate) if rate > 0 else 0
    next_due = start
    by_fd = {link.fileno(): (i, link) for i, link in enumerate(links)}
    rr = 0
    n_links = len(links)
    burst: list[bytes] = []

    def send_one() -> None:
        nonlocal rr, sent_total
        for _ in range(n_links):
            i = rr
            rr = (rr + 1) % n_links
            if rate > 0 or outstanding[i] < window:
                break
        else:
            return
        link = links[i]
        session = link.session
        wall = time.time_ns()
        cl, body = flows[i].next(session.sending_time(wall))
        session.queue(session.build_raw(b"D", body, wall))
        burst.append(cl)
        outstanding[i] += 1
        sent_total += 1

    def flush_burst() -> None:
        for link in links:
            link.flush()
        t = perf()  # the send time: when the bytes went to the socket
        for cl in burst:
            sent_at[cl] = t
        burst.clear()

    while True:
        now = perf()
        if now < stop_sending:
            if rate > 0:
                while next_due <= now:
                    send_one()
                    next_due += interval
                flush_burst()
                timeout = max(0.0, (next_due - perf()) / 1e9)
            else:
                before = sent_total
                for _ in range(n_links * 8):
                    send_one()
                flush_burst()
                timeout = 0.0 if sent_total != before else 0.05
        else:
            if not sent_at or now > stop_sending + int(drain_timeout * 1e9):
                break
            timeout = 0.05
        writers = [link for link in links if link.wants_write]
        ready, writable, _ = select.select(links, writers, [], timeout)
        for link in writable:
            link.flush()
        if not ready:
            continue
        now = perf()
        wall = time.time_ns()
        for link in ready:
            i, _ = by_fd[link.fileno()]
            for msg, repeat in link.read(wall):
                if repeat or msg.msg_type != b"8":
                    continue
                ers += 1
                cl = msg.get(11)
                t0 = sent_at.pop(cl, None) if cl is not None else None
                if t0 is None:
                    continue  # not the order's first report
                outstanding[i] -= 1
                acks += 1
                if measure_from <= now < stop_sending:
                    acked_in_window += 1  # throughput: acks that arrived in the window
                if measure_from <= t0 < stop_sending:
                    latencies.append(now - t0)  # latency: orders sent in the window
                if samples is not None:  # (send time, latency), perf_counter_ns
                    samples.append((t0, now - t0))
            if link.closed:
                raise ConnectionError(f"{link.session.sender.decode()}: connection closed")
            link.flush()
    elapsed = (min(perf(), stop_sending) - measure_from) / 1e9
    client_cpu = (time.process_time() - cpu0) / ((perf() - start) / 1e9)
    for link in links:
        link.session.logout(time.time_ns())
        link.flush()
        link.close()
    latencies.sort()
    violations = [v for link in links for v in link.session.violations]
    return {
        "sessions": len(links),
        "rate_offered": rate,
        "sent": sent_total,
        "acked": acks,
        "unacked": len(sent_at),
        "execution_reports": ers,
        "measured_s": round(elapsed, 3),
        "acks_per_s": round(acked_in_window / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_us": percentiles_us(latencies),
        "client_cpu": round(client_cpu, 2),  # cores busy in this process over the run
        "violations": violations[:5],
    }


def percentiles_us(sorted_ns: Sequence[int]) -> dict[str, float]:
    """p50, p99, p99.9 and max of sorted nanosecond samples, in microseconds."""
    if not sorted_ns:
        return {}
    n = len(sorted_ns)

    def at(q: float) -> float:
        return round(sorted_ns[min(n - 1, int(q * n))] / 1000.0, 1)

    return {"n": n, "p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999),
            "max": round(sorted_ns[-1] / 1000.0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FIX 4.4 NewOrderSingle load client")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--session", action="append", required=True, metavar="S:T:ACCOUNT",
                        help="SenderCompID:TargetCompID:Account (repeat per session)")
    parser.add_argument("--rate", type=float, default=0.0, help="orders/s in total; 0 = max")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for the last acks after sending stops")
    parser.add_argument("--samples", metavar="FILE",
                        help="also write every ack's [send time, latency] (perf_counter_ns, "
                             "CLOCK_MONOTONIC on Linux: comparable across processes) as JSON")
    args = parser.parse_args(argv)
    sessions = [tuple(s.split(":", 2)) for s in args.session]
    samples: list[tuple[int, int]] | None = [] if args.samples else None
    result = run_load(args.host, args.port, sessions,  # type: ignore[arg-type]
                      rate=args.rate, duration=args.duration, warmup=args.warmup,
                      window=args.window, drain_timeout=args.drain, samples=samples)
    if args.samples:
        with open(args.samples, "w") as f:
            json.dump(samples, f)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
