"""Redis key and channel names, and the encodings the sink writes and the followers read.

Layout (``P`` is the key prefix, ``md`` by default; one prefix per exchange or per test):

``P:meta`` (hash)
    ``version``, ``epoch`` (the sink's run id), ``seq`` (batch sequence of the state held),
    ``format`` (``msgpack`` or ``json``: the encoding of every message stored or published),
    ``symbols`` (comma separated), and ``status:SYM`` per symbol: the latest ``status``
    message (the instrument's trading status), exactly as a WebSocket subscriber gets it.
    (It lives here rather than under a key of its own so that a follower's one read of the
    state, which reads this hash whole, carries it.)
``P:book:SYM`` (hash)
    The full published L2 book of a symbol, kept in step batch by batch: one field per level,
    ``b:PRICE`` / ``a:PRICE`` -> ``QTY:COUNT`` (the wire's decimal strings), plus ``u`` (the
    full-depth update id), ``u:5`` and ``u:20`` (the last update id sent on the depth-5 and
    depth-20 channels) and ``ts``.
``P:top:SYM`` (string)
    The depth-20 ``snapshot`` message, exactly as a WebSocket subscriber gets it (top 20 levels,
    its update id and checksum), for readers that want the top of book in one GET.
``P:ticker:SYM`` (string)
    The latest ``ticker`` message (its ``mark`` and ``index`` are the latest mark and index
    price, as decimal strings, or null).
``P:mark:SYM`` (string)
    The latest ``markPrice`` message (index and mark of the latest mark computation, with its
    update id ``u`` and ``ts``), exactly as a WebSocket subscriber gets it.
``P:liquidations:SYM`` (string)
    The ``snapshot`` message of the ``liquidations`` channel (the latest liquidation steps,
    oldest first), exactly as a WebSocket subscriber gets it on subscribe; rewritten in every
    batch that has a step of the symbol.
``P:kline:SYM`` (hash)
    interval -> the latest ``kline`` message of that interval (its last candle is current).
``P:trades:SYM`` (list)
    The most recent trades, oldest first, one encoded trade object per element.
``P:updates`` (pub/sub channel)
    One envelope per batch (see :func:`pack_envelope`).

Every key of one batch is written in one MULTI/EXEC with the batch's PUBLISH, so a reader that
reads the state in one MULTI sees exactly the state after some batch ``seq``, and every later
batch arrives on the channel with a higher ``seq``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feeds.encoding import WireFormat

VERSION = 1
DEFAULT_PREFIX = "md"

BATCH = "batch"
"""Envelope kind: one feed batch, to apply on top of the state at ``seq - 1``."""
SYNC = "sync"
"""Envelope kind: the sink rewrote the whole state at ``seq``; followers read it anew."""

U_FULL = b"u"
U_DEPTH = {5: b"u:5", 20: b"u:20"}
TS = b"ts"
BID_PREFIX = "b:"
ASK_PREFIX = "a:"


class RedisKeys(NamedTuple):
    """Key and channel names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def meta(self) -> str:
        """The meta hash (epoch, seq, format, symbols)."""
        return f"{self.prefix}:meta"

    @property
    def updates(self) -> str:
        """The pub/sub channel of batch envelopes."""
        return f"{self.prefix}:updates"

    def book(self, symbol: str) -> str:
        """The full-book hash of ``symbol``."""
        return f"{self.prefix}:book:{symbol}"

    def top(self, symbol: str) -> str:
        """The depth-20 snapshot message of ``symbol``."""
        return f"{self.prefix}:top:{symbol}"

    def ticker(self, symbol: str) -> str:
        """The latest ticker message of ``symbol``."""
        return f"{self.prefix}:ticker:{symbol}"

    def mark(self, symbol: str) -> str:
        """The latest markPrice message of ``symbol``."""
        return f"{self.prefix}:mark:{symbol}"

    def liquidations(self, symbol: str) -> str:
        """The liquidations snapshot message of ``symbol``."""
        return f"{self.prefix}:liquidations:{symbol}"

    def kline(self, symbol: str) -> str:
        """The latest kline message per interval of ``symbol``."""
        return f"{self.prefix}:kline:{symbol}"

    def trades(self, symbol: str) -> str:
        """The recent-trades list of ``symbol``."""
        return f"{self.prefix}:trades:{symbol}"

    def symbol_keys(self, symbol: str) -> list[str]:
        """Every state key of one symbol (the trades list is history and not among them)."""
        return [self.book(symbol), self.top(symbol), self.ticker(symbol), self.kline(symbol),
                self.mark(symbol), self.liquidations(symbol)]


# -- book levels ---------------------------------------------------------------------------


def level_field(is_bid: bool, price: str) -> str:
    """The hash field of one level."""
    return (BID_PREFIX if is_bid else ASK_PREFIX) + price


def level_value(qty: str, count: int) -> str:
    """The hash value of one level."""
    return f"{qty}:{count}"


def is_zero_qty(qty: str) -> bool:
    """True for a wire quantity of zero ("0", "0.000"): the level is gone.

    Wire quantities are non-negative decimal strings of digits and one point, so the quantity
    is zero exactly when nothing but zeros and the point is left.
    """
    return not qty.strip("0.")


class StoredLevel(NamedTuple):
    """One level as stored: wire price, wire quantity, order count."""

    price: str
    qty: str
    orders: int


def parse_book_hash(fields: dict[bytes, bytes]) -> tuple[dict[bytes, int], list[StoredLevel],
                                                          list[StoredLevel]]:
    """Split a book hash into (the id/ts fields as ints, bid levels, ask levels) unsorted."""
    ids: dict[bytes, int] = {}
    bids: list[StoredLevel] = []
    asks: list[StoredLevel] = []
    for key, value in fields.items():
        head = key[:2]
        if head == b"b:" or head == b"a:":
            qty, _, count = value.decode("ascii").rpartition(":")
            level = StoredLevel(key[2:].decode("ascii"), qty, int(count))
            (bids if head == b"b:" else asks).append(level)
        else:
            ids[key] = int(value)
    return ids, bids, asks


# -- meta ------------------------------------------------------------------------------------


class Meta(NamedTuple):
    """The meta hash, parsed."""

    version: int
    epoch: int
    seq: int
    format: WireFormat
    symbols: tuple[str, ...]
    #: (symbol, encoded ``status`` message) of the symbols that have one stored
    statuses: tuple[tuple[str, bytes], ...] = ()


STATUS_PREFIX = "status:"


def status_field(symbol: str) -> str:
    """The meta hash field of a symbol's latest ``status`` message."""
    return STATUS_PREFIX + symbol


def meta_mapping(epoch: int, seq: int, fmt: WireFormat, symbols: list[str],
                 statuses: Iterable[tuple[str, bytes]] = ()) -> dict[str, Any]:
    """The meta hash's fields (``statuses``: (symbol, encoded ``status`` message))."""
    mapping: dict[str, Any] = {
        "version": str(VERSION), "epoch": str(epoch), "seq": str(seq), "format": fmt.value,
        "symbols": ",".join(symbols)}
    for symbol, data in statuses:
        mapping[status_field(symbol)] = data
    return mapping


def parse_meta(fields: dict[bytes, bytes]) -> Meta | None:
    """The meta hash parsed; None if it is missing or incomplete (no sink has written yet)."""
    prefix = STATUS_PREFIX.encode("ascii")
    try:
        return Meta(
            int(fields[b"version"]), int(fields[b"epoch"]), int(fields[b"seq"]),
            WireFormat(fields[b"format"].decode("ascii")),
            tuple(s for s in fields[b"symbols"].decode("ascii").split(",") if s),
            tuple(sorted((k[len(prefix):].decode("ascii"), v) for k, v in fields.items()
                         if k.startswith(prefix))),
        )
    except (KeyError, ValueError):
        return None


# -- envelopes -------------------------------------------------------------------------------

_pack = msgpack.Packer(use_bin_type=True).pack


class Envelope(NamedTuple):
    """One published envelope: a batch (or a sync notice) of encoded channel messages."""

    version: int
    epoch: int
    seq: int
    kind: str  # BATCH or SYNC
    format: WireFormat
    messages: list[tuple[str, str, bytes]]  # (channel name, message kind, encoded payload)


def pack_envelope(epoch: int, seq: int, kind: str, fmt: WireFormat,
                  messages: list[tuple[str, str, bytes]]) -> bytes:
    """Encode an envelope (msgpack; payloads stay the bytes the WebSocket batch sends)."""
    return _pack([VERSION, epoch, seq, kind, fmt.value, messages])


def unpack_envelope(data: bytes) -> Envelope:
    """Decode an envelope (raises ValueError if it is not one)."""
    try:
        version, epoch, seq, kind, fmt, messages = msgpack.unpackb(data, raw=False)
        return Envelope(version, epoch, seq, kind, WireFormat(fmt),
                        [(c, k, bytes(p)) for c, k, p in messages])
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ValueError(f"not a feed envelope: {exc}") from exc


# -- connections -----------------------------------------------------------------------------


def blocking_client(url: str, timeout_s: float = 2.0) -> redis.Redis:
    """A blocking ``redis.Redis`` for a worker thread: fails fast, never retries on its own.

    The callers (sink and follower) own the retry policy and must see every failure: a client
    that silently reconnected under a pub/sub subscription would hide lost messages.
    """
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
    )
