"""The live order record shared by the matcher and both books.

An order is a small ``__slots__`` object holding only what changes or is read on the hot
path; everything fixed at entry that most orders share (type, time in force, flags, stop and
expiry data) lives in an immutable :class:`OrderSpec` tuple. Specs are interned by the
matcher, so a million plain GTC limit orders share one spec object (memory: see bench/).

Orders hold no reference to their book or level: nothing forms a reference cycle, so a
removed order is freed by reference counting the moment the last index drops it.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.enums import OrdType, Side, StpMode, TimeInForce


class OrderSpec(NamedTuple):
    """The immutable part of an order (replaced wholesale when a stop triggers or is amended)."""

    ord_type: OrdType
    tif: TimeInForce
    stop_price: int  # 0 if none
    display: int  # iceberg display quantity, 0 if not an iceberg
    min_qty: int
    stp: StpMode | None  # None: the account default at match time
    reduce_only: bool
    post_only: bool
    expire_ts: int  # GTD/DAY expiry (ns), 0 if none
    pending: bool  # an untriggered stop/take-profit (not in the book)
    trigger_mark: bool = False  # triggered by the mark price (else by the last trade)


class Order:
    """A live order. ``visible`` is the displayed quantity resting in the book (0: not resting)."""

    __slots__ = (
        "account",
        "cl_ord_id",
        "filled",
        "id",
        "leaves",
        "notional",
        "price",
        "qty",
        "side",
        "spec",
        "symbol",
        "visible",
    )
    id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    price: int
    qty: int
    leaves: int
    filled: int
    notional: int
    visible: int
    spec: OrderSpec

    def __init__(
        self,
        id: int,
        cl_ord_id: str,
        account: str,
        symbol: str,
        side: Side,
        price: int,
        qty: int,
        leaves: int,
        filled: int,
        notional: int,
        visible: int,
        spec: OrderSpec,
    ) -> None:
        self.id = id
        self.cl_ord_id = cl_ord_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.price = price
        self.qty = qty
        self.leaves = leaves
        self.filled = filled
        self.notional = notional
        self.visible = visible
        self.spec = spec

    def copy(self) -> Order:
        """A field-for-field copy (used when an order moves and so gets a new book entry)."""
        return Order(
            self.id,
            self.cl_ord_id,
            self.account,
            self.symbol,
            self.side,
            self.price,
            self.qty,
            self.leaves,
            self.filled,
            self.notional,
            self.visible,
            self.spec,
        )

    def as_tuple(self) -> tuple:
        """All fields, for snapshots, hashing and tests."""
        return (
            self.id,
            self.cl_ord_id,
            self.account,
            self.symbol,
            int(self.side),
            self.price,
            self.qty,
            self.leaves,
            self.filled,
            self.notional,
            self.visible,
            tuple(self.spec),
        )

    def __repr__(self) -> str:
        return f"Order{self.as_tuple()!r}"
