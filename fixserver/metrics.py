"""Prometheus metrics of the FIX acceptor, and the cheap wire scan that feeds the counters.

The metric objects live in prometheus-client's default registry (served by ``/metrics``).
Message counters are labelled by session id and MsgType. The MsgType label is clipped to
what a real MsgType looks like (one or two letters or digits) so that a client sending
junk cannot grow the label set without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

# Message counts are kept in plain dicts on the reactor thread and added to the counters
# only when /metrics is read (or :func:`fold_counts` is called): a counter's ``inc`` takes a
# lock, and at a few thousand orders/s each write and read is one message, so counting there
# was a per-message metrics call on the hot path. The folding collector is registered before
# the counters, so a scrape folds first and then reads them (the registry collects in
# registration order); it yields no metrics of its own.
_PENDING_SENT: dict[tuple[str, bytes], int] = {}
_PENDING_RECEIVED: dict[tuple[str, bytes], int] = {}
# Keys are raw MsgTypes (clipped to labels only when folded): a client sending junk types
# could grow the dicts between scrapes, so past this many keys they are folded at once.
_MAX_PENDING_KEYS = 1_024


class _FoldPendingCounts:
    def describe(self) -> Iterator[Any]:
        return iter(())  # no metrics of its own (and register() need not collect)

    def collect(self) -> Iterator[Any]:
        fold_counts()
        return iter(())


REGISTRY.register(_FoldPendingCounts())

SESSIONS_LOGGED_ON = Gauge("fix_sessions_logged_on", "FIX sessions currently logged on")
CONNECTIONS_OPEN = Gauge("fix_connections_open", "TCP connections open on the FIX ports")
MESSAGES_RECEIVED = Counter(
    "fix_messages_received_total", "FIX messages received", ["session", "msg_type"]
)
MESSAGES_SENT = Counter("fix_messages_sent_total", "FIX messages sent", ["session", "msg_type"])
GARBLED_MESSAGES = Counter(
    "fix_garbled_messages_total", "Garbled FIX frames ignored (bad length, checksum, framing)"
)
REJECTS_SENT = Counter(
    "fix_rejects_total",
    "Rejects sent: kind=session (35=3, reason 373) or business (35=j, reason 380)",
    ["kind", "reason"],
)
LOGONS = Counter("fix_logons_total", "Successful FIX logons", ["session"])
LOGOUTS = Counter("fix_logouts_total", "FIX sessions logged out", ["session"])
DISCONNECTS = Counter(
    "fix_disconnects_total",
    "Connections closed by the server, by cause",
    ["cause"],
)
ORDER_PROCESSING_LATENCY_MS = Histogram(
    "order_processing_latency_ms",
    "From an order message (D, F, G) reaching the application to its first report being "
    "released (after matching and the journal fsync), in milliseconds",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0),
)
STORE_SYNC_SECONDS = Histogram(
    "fix_store_sync_seconds",
    "Time of one group commit (fsync) of the message stores",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
STORE_SYNC_FAILURES = Counter("fix_store_sync_failures_total", "Failed message store fsyncs")
RESENDS_RUNNING = Gauge(
    "fix_resends_running", "ResendRequests being answered now (at most MaxConcurrentResends)"
)
RESENDS_WAITING = Gauge(
    "fix_resends_waiting", "ResendRequests waiting for one of the running resends to end"
)
RESEND_MESSAGES = Counter(
    "fix_resend_messages_total",
    "Messages written by resend chunks (resent, gap fills, and those held behind the resend)",
    ["session"],
)
RESEND_SECONDS = Histogram(
    "fix_resend_seconds",
    "From a ResendRequest's first turn to its last chunk (waiting for a place included)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
LOGON_FAILURES = Counter(
    "fix_logon_failures_total",
    "Failed Logons (credentials refused; session '-' = CompIDs of no configured session)",
    ["session"],
)
LOGON_LOCKOUTS = Counter(
    "fix_logon_lockouts_total", "Lockouts started after repeated failed Logons", ["scope"]
)
LOGON_REFUSED = Counter(
    "fix_logon_refused_total",
    "Logons and connections refused at once because their session or address is locked out",
    ["scope"],
)
CONNECTIONS_REJECTED = Counter(
    "fix_connections_rejected_total",
    "Connections closed without ever logging on, by cause (fixserver.connection_log)",
    ["cause"],
)
LOGON_LOCKOUTS_ACTIVE = Gauge(
    "fix_logon_lockouts_active", "Sessions and addresses locked out after failed Logons now"
)

UNBOUND_SESSION = "-"  # label for traffic of a connection not (yet) bound to a session

_MSG_TYPE = re.compile(rb"\x0135=([^\x01]*)\x01")
_REJECT_REASON = {b"3": (b"\x01373=", "session"), b"j": (b"\x01380=", "business")}


# Labelled children by (metric, session, MsgType label). ``labels()`` takes a lock and builds
# a tuple on every call: at thousands of messages a second that was a tenth of the reactor's
# time (py-spy, bench/bench_e2e.py). The label sets are bounded (configured sessions and
# clipped MsgTypes), so the cache is too.
_CHILDREN: dict[tuple[str, str, str], Any] = {}


def _message_counter(metric: Any, name: str, session: str, msg_type: bytes) -> Any:
    label = _label(msg_type)
    key = (name, session, label)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(session, label)
    return child


def _label(msg_type: bytes) -> str:
    if 0 < len(msg_type) <= 2 and msg_type.isalnum():
        return msg_type.decode("ascii")
    return "other"


def scan_msg_types(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(MsgType, offset after the field) of every ``35=`` field in a run of whole messages."""
    for match in _MSG_TYPE.finditer(data):
        yield match.group(1), match.end()


def count_sent(session: str, data: bytes) -> None:
    """Count outbound messages (``data`` is whole messages) and the rejects among them."""
    _gather(_PENDING_SENT, session, data)
    if b"\x0135=3\x01" in data or b"\x0135=j\x01" in data:
        _count_rejects(data)


def _gather(pending: dict[tuple[str, bytes], int], session: str, data: bytes) -> None:
    """Add the MsgTypes of ``data``'s ``35=`` fields to ``pending`` (folded early if it
    holds too many keys)."""
    for msg_type in _MSG_TYPE.findall(data):
        key = (session, msg_type)
        pending[key] = pending.get(key, 0) + 1
    if len(pending) > _MAX_PENDING_KEYS:
        fold_counts()


def _count_rejects(data: bytes) -> None:
    for msg_type, end in scan_msg_types(data):
        reject = _REJECT_REASON.get(msg_type)
        if reject is None:
            continue
        tag, kind = reject
        stop = data.find(b"\x0110=", end)
        start = data.find(tag, end - 1, stop if stop >= 0 else len(data))
        reason = "none"
        if start >= 0:
            value_start = start + len(tag)
            reason = _label(data[value_start : data.find(b"\x01", value_start)])
        REJECTS_SENT.labels(kind, reason).inc()


def fold_counts() -> None:
    """Add the message counts gathered since the last fold to the counters."""
    for pending, metric, name in ((_PENDING_SENT, MESSAGES_SENT, "sent"),
                                  (_PENDING_RECEIVED, MESSAGES_RECEIVED, "received")):
        if not pending:
            continue
        counts = list(pending.items())
        pending.clear()
        for (session, msg_type), n in counts:
            _message_counter(metric, name, session, msg_type).inc(n)


class InboundCounter:
    """Counts inbound messages by MsgType across arbitrary TCP chunk boundaries.

    A ``35=`` field may be split between two reads, so the bytes from the last SOH on are
    carried over to the next chunk; a field is only counted once its closing SOH arrived.
    """

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, session: str, data: bytes) -> None:
        buffer = self._carry + data if self._carry else data
        last_soh = buffer.rfind(b"\x01")
        if last_soh < 0:
            # No SOH, so no ``35=`` field can start here (its leading SOH would be in it).
            self._carry = b""
            return
        _gather(_PENDING_RECEIVED, session, buffer)
        self._carry = buffer[last_soh:][:16]
