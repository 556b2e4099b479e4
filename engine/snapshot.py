"""Snapshot, restore and state hash.

Theory of operation
-------------------
:func:`canonical_state` lists everything that decides future behaviour, in a canonical order
that does not depend on how a book stores things internally: the configuration, the
execution sequence, account STP defaults and, per instrument, status, last price, non-zero
positions, resting orders side by side in price-time priority and untriggered stops, plus
every live order's fields in id order. A snapshot is that structure packed with msgpack;
the state hash is the SHA-256 of the same bytes, so equal state means equal hash for the
fast and the reference book alike.

Restore rebuilds an engine from it: orders are re-added to a fresh book in priority order
(which recreates the same priorities), untriggered stops re-enter the trigger index,
reduce-only orders their index and GTD/DAY orders the expiry heap (its stale entries are
not state: they are skipped when popped).
"""

from __future__ import annotations

import hashlib
from heapq import heapify
from operator import attrgetter
from typing import Any, Callable

import msgpack

from engine.enums import InstrumentStatus, OrdType, Side, StpMode, TimeInForce
from engine.instruments import Instrument
from engine.order import Order, OrderSpec

#: the canonical state's format. 2: the risk engine's state (collateral, positions, marks,
#: funding, the margin monitor) and mark-triggered stop specs. A snapshot of an older format
#: still restores (what it lacks takes its defaults); see :func:`version_of`.
VERSION = 2
_READABLE = (1, 2)


def canonical_state(eng: Any) -> dict[str, Any]:
    """The engine's state as plain data in canonical order."""
    markets = []
    for sym, m in eng.markets.items():
        book = m.book
        sides = []
        for side in (Side.BUY, Side.SELL):
            sides.append([o.id for level in book.iter_side(side) for o in level])
        markets.append(
            [
                sym,
                int(m.status),
                m.last_price,
                sorted((a, p) for a, p in m.positions.items() if p),
                sides[0],
                sides[1],
            ]
        )
    state = {
        "v": VERSION,
        "instruments": [i.to_dict() for i in eng.instruments],
        "default_stp": int(eng.default_stp),
        "day_offset_ns": eng.day_offset_ns,
        "account_stp": sorted((a, int(s)) for a, s in eng.account_stp.items()),
        "exec_id": eng.exec_id,
        "markets": markets,
        "orders": _order_rows(eng.orders),
    }
    # Added later; present only when set, so a state without them hashes as it always did.
    if eng.killed:
        state["killed"] = sorted([f, list(a)] for f, a in eng.killed.items())
    if eng.sessions:
        state["sessions"] = sorted([s, c, d] for s, (c, d) in eng.sessions.items())
    risk = eng.risk.to_state()
    if risk is not None:
        state["risk"] = risk
    return state


_ORDER_FIELDS = attrgetter("id", "cl_ord_id", "account", "symbol", "side", "price", "qty",
                           "leaves", "filled", "notional", "visible", "spec")


def _order_rows(orders: dict) -> list[tuple]:
    """``Order.as_tuple()`` of every order in id order, built with one C-level getter per
    order and one tuple per distinct (interned) spec: a snapshot serialises every resting
    order on the reactor thread, so this is the stall's main cost. msgpack packs the int
    enums as the ints ``as_tuple`` gives, so the bytes (and the state hash) are the same."""
    get = _ORDER_FIELDS
    specs: dict[int, tuple] = {}
    rows: list[tuple] = []
    append = rows.append
    for k in sorted(orders):
        f = get(orders[k])
        spec = f[11]
        plain = specs.get(id(spec))
        if plain is None:
            # a last-price spec packs as the ten fields it always had (same hash as before)
            plain = specs[id(spec)] = tuple(spec) if spec.trigger_mark else tuple(spec)[:10]
        append((*f[:11], plain))
    return rows


def version_of(data: bytes) -> int:
    """The canonical-state format a snapshot's engine bytes were written in. Read without
    decoding the rest (the restore decodes it once): ``v`` is the map's first key."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    keys = unpacker.read_map_header()
    for _ in range(keys):
        if unpacker.unpack() == "v":
            return int(unpacker.unpack())
        unpacker.skip()
    raise ValueError("snapshot bytes without a version")


def dump(eng: Any) -> bytes:
    """Snapshot bytes."""
    return msgpack.packb(canonical_state(eng), use_bin_type=True)


def state_hash(eng: Any) -> str:
    """SHA-256 of the canonical state."""
    return hashlib.sha256(dump(eng)).hexdigest()


def _spec(t: list) -> OrderSpec:
    ot, tif, stop, display, min_qty, stp, ro, po, expire, pending = t[:10]
    return OrderSpec(
        OrdType(ot), TimeInForce(tif), stop, display, min_qty,
        None if stp is None else StpMode(stp), ro, po, expire, pending,
        bool(t[10]) if len(t) > 10 else False,
    )


def load(cls: Any, data: bytes, book_factory: Callable[[str], Any]) -> Any:
    """Rebuild an engine of class ``cls`` from snapshot bytes."""
    st = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if st["v"] not in _READABLE:
        raise ValueError(f"unsupported snapshot version {st['v']}")
    eng = cls(
        [Instrument.from_dict(d) for d in st["instruments"]],
        book_factory=book_factory,
        default_stp=StpMode(st["default_stp"]),
        account_stp={a: StpMode(s) for a, s in st["account_stp"]},
        day_offset_ns=st["day_offset_ns"],
    )
    eng.exec_id = st["exec_id"]
    eng.killed = {f: tuple(a) for f, a in st.get("killed", [])}
    eng.blocked = {a for accts in eng.killed.values() for a in accts}
    eng.sessions = {s: (bool(c), bool(d)) for s, c, d in st.get("sessions", [])}
    # A restart loads every resting order: most share a handful of specs (and two sides),
    # so each distinct spec list is converted once and the enum is a dict lookup.
    sides: dict[Any, Side] = Side._value2member_map_  # type: ignore[assignment]
    specs: dict[tuple, OrderSpec] = {}
    orders = eng.orders
    for t in st["orders"]:
        oid, cl, acct, sym, side, price, qty, leaves, filled, notional, visible, spec = t
        key = tuple(spec)
        order_spec = specs.get(key)
        if order_spec is None:
            order_spec = eng._intern(_spec(spec))
            if len(specs) < 4096:
                specs[key] = order_spec
        orders[oid] = Order(oid, cl, acct, sym, sides[side], price, qty, leaves, filled,
                            notional, visible, order_spec)
    for sym, status, last, positions, bids, asks in st["markets"]:
        m = eng.markets[sym]
        m.status = InstrumentStatus(status)
        m.last_price = last
        m.positions = {a: p for a, p in positions}
        for oid in bids + asks:
            o = eng.orders[oid]
            m.book.add(o)
            if o.spec.reduce_only:
                m.index_reduce_only(o)
        m.book.drain_levels(0, [])  # restoring is not a change to report
    for o in eng.orders.values():
        if o.spec.pending:
            eng.markets[o.symbol].add_stop(o)
        if o.spec.expire_ts:
            eng._expiry.append((o.spec.expire_ts, o.id))
    heapify(eng._expiry)
    if "risk" in st:
        eng.risk.load_state(st["risk"])
    return eng
