"""Events: the engine's only output, one immutable class per kind.

Events are ``typing.NamedTuple`` classes rather than frozen attrs classes. Measured on
CPython 3.11 for a 16-field event: attrs frozen/slots ~1010 ns to construct, a __slots__
class ~275 ns, a NamedTuple ~325 ns through its constructor and ~190 ns through
``tuple.__new__(Cls, (...))``, which is what the matcher's hot path uses. They are still
immutable, typed, compare by value and pack into msgpack as arrays. Note that two events of
different classes with the same field values compare equal as tuples: compare ``type()``
too when that matters.

Order events share a head of fields carrying what an ExecutionReport needs:

- ``seq``/``ts``: the command that caused the event; ``exec_id``: the engine's execution
  sequence (strictly increasing, one per ExecutionReport-worthy event; a Trade has one id,
  the FIX layer derives the maker's and taker's ExecIDs from it).
- ``order_id`` (the NewOrder's seq), ``cl_ord_id``, ``account``, ``symbol``, ``side``,
  ``ord_type``, ``tif``, ``price`` (ticks; 0 for market), ``stop_price`` (0 if none),
  ``qty`` (order quantity, lots), ``filled`` (CumQty), ``leaves`` (LeavesQty),
  ``notional`` (sum of price*qty over fills: AvgPx = notional / filled * tick_size exactly).

Fees are integers in fee units (see engine.instruments): negative is a rebate. Liquidity is
given by the role: the maker added liquidity, the taker removed it. OrdStatus follows from
the event: Trade -> FILLED if leaves == 0 else PARTIALLY_FILLED; Canceled/Expired/... as named.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from engine.enums import (
    CancelReason,
    InstrumentStatus,
    LedgerCause,
    MarginMode,
    OrdType,
    RejectReason,
    RequestKind,
    Side,
    TimeInForce,
    TransferKind,
)


class OrderAccepted(NamedTuple):
    """A new order was accepted (ExecType NEW; for stops: accepted, waiting for the trigger)."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int


class OrderRejected(NamedTuple):
    """A NewOrder was rejected (ExecType REJECTED); ``order_id`` is the seq it would have had."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    reason: RejectReason
    shortfall: int = 0  # INSUFFICIENT_MARGIN: minor units of the settlement asset missing


class RequestRejected(NamedTuple):
    """A cancel, replace, mass cancel or admin request was rejected (FIX OrderCancelReject)."""

    seq: int
    ts: int
    exec_id: int
    request: RequestKind
    order_id: int
    cl_ord_id: str
    account: str
    reason: RejectReason
    shortfall: int = 0  # INSUFFICIENT_MARGIN: minor units of the settlement asset missing


class Trade(NamedTuple):
    """A fill between a resting maker and an incoming taker, at the maker's price."""

    seq: int
    ts: int
    exec_id: int
    symbol: str
    price: int
    qty: int
    aggressor_side: Side
    maker_order_id: int
    maker_cl_ord_id: str
    maker_account: str
    maker_filled: int
    maker_leaves: int
    maker_notional: int
    maker_fee: int
    taker_order_id: int
    taker_cl_ord_id: str
    taker_account: str
    taker_filled: int
    taker_leaves: int
    taker_notional: int
    taker_fee: int
    taker_ord_type: OrdType
    taker_price: int


class OrderCanceled(NamedTuple):
    """A live order ended unfilled (partly or wholly); ``leaves`` is 0, ``reason`` says why."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int
    reason: CancelReason
    request_id: str  # the cancel request's cl_ord_id ("" when the engine canceled)


class OrderReplaced(NamedTuple):
    """An order's quantity/price changed; ``leaves`` 0 means the replace ended the order."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int
    orig_cl_ord_id: str
    priority_kept: bool


class OrderExpired(NamedTuple):
    """A GTD or DAY order reached its expiry time (reason is always EXPIRY)."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int
    reason: CancelReason


class OrderTriggered(NamedTuple):
    """A stop or take-profit order was triggered by the last trade price and now works."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int
    trigger_price: int


class OrderRestated(NamedTuple):
    """The engine reduced a live order's quantity (reduce-only shrink, STP decrement)."""

    seq: int
    ts: int
    exec_id: int
    order_id: int
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    price: int
    stop_price: int
    qty: int
    filled: int
    leaves: int
    notional: int
    reason: CancelReason


class MassCancelDone(NamedTuple):
    """A mass cancel finished; ``canceled`` orders were canceled (each also has its event)."""

    seq: int
    ts: int
    exec_id: int
    cl_ord_id: str
    account: object  # str or None
    symbol: object  # str or None
    side: object  # Side or None
    canceled: int


class InstrumentStatusChanged(NamedTuple):
    """An instrument's trading status changed."""

    seq: int
    ts: int
    symbol: str
    status: InstrumentStatus


class KillSwitchChanged(NamedTuple):
    """A firm's kill switch changed; ``canceled`` live orders were canceled by it."""

    seq: int
    ts: int
    firm: str
    accounts: tuple
    active: bool
    canceled: int


class InstrumentConfigured(NamedTuple):
    """An instrument was listed (``listed``) or its rules changed; ``instrument`` is the
    :class:`~engine.instruments.Instrument` now in force."""

    seq: int
    ts: int
    symbol: str
    instrument: Any
    listed: bool


class LevelChanged(NamedTuple):
    """L2: the level's new aggregate visible quantity and order count (0, 0: level gone).

    Emitted at the end of each command for every level the command touched, in the order the
    levels were first touched (a touched level whose aggregates did not change still appears).
    """

    seq: int
    symbol: str
    side: Side
    price: int
    qty: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose: feeds read .count


class BalanceChanged(NamedTuple):
    """One balance-ledger entry: ``amount`` (signed minor units of ``asset``) changed the
    account's balance to ``balance`` because of ``cause``. ``symbol`` is the instrument for
    trade-related causes ("" otherwise); ``ref`` is the deposit/withdrawal reference or the
    engine exec id of the fill (as a string)."""

    seq: int
    ts: int
    account: str
    asset: str
    amount: int
    balance: int
    cause: LedgerCause
    symbol: str
    ref: str


class AccountChanged(NamedTuple):
    """An account's collateral in one asset after a command touched it (one per command):
    ``balance`` (the ledger's sum, isolated margin included), the part of it held as
    ``isolated_margin``, and the ``order_margin`` its live orders hold."""

    seq: int
    ts: int
    account: str
    asset: str
    balance: int
    isolated_margin: int
    order_margin: int


class PositionChanged(NamedTuple):
    """A margined position after a command touched it (one per command and position).
    ``entry_cost`` is ticks*lots (entry price = entry_cost / abs(size)); ``realised_pnl``
    and ``fees`` are minor units of the settlement asset (fees: charged minus rebated)."""

    seq: int
    ts: int
    account: str
    symbol: str
    size: int
    entry_cost: int
    realised_pnl: int
    fees: int
    leverage: int
    mode: MarginMode
    isolated_margin: int
    last_exec_id: int


class RiskSettingsChanged(NamedTuple):
    """A leverage, margin mode or isolated margin request was applied (``request`` says
    which); the fields are the position's settings after it."""

    seq: int
    ts: int
    request: RequestKind
    account: str
    symbol: str
    leverage: int
    mode: MarginMode
    isolated_margin: int
    request_id: str


class IndexPriceUpdated(NamedTuple):
    """The index price of an instrument (ticks) was set by the index feed."""

    seq: int
    ts: int
    symbol: str
    price: int


class MarkPriceUpdated(NamedTuple):
    """The mark price (ticks) was recomputed inside a tick and changed. ``funding_rate_e8``
    is the rate the next funding would apply if it were now (1e-8 units) and
    ``next_funding_ts`` when it happens (0 and 0 on an unmargined instrument)."""

    seq: int
    ts: int
    symbol: str
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    mark: int
    funding_rate_e8: int = 0
    next_funding_ts: int = 0


class MarginBreached(NamedTuple):
    """At mark, an account's cross equity (``symbol`` "") or an isolated position's margin
    (``symbol`` set) fell below its maintenance margin. Emitted once per breach."""

    seq: int
    ts: int
    account: str
    asset: str
    symbol: str
    equity: int
    maintenance: int


class MarginCall(NamedTuple):
    """An account's margin ratio (cross: ``symbol`` "") or an isolated position's rose to
    or past a warning level (ppm). Emitted once per crossing, not per tick."""

    seq: int
    ts: int
    account: str
    asset: str
    symbol: str
    level_ppm: int
    ratio_ppm: int
    equity: int
    maintenance: int


class Liquidated(NamedTuple):
    """One liquidation step of an account (cross: ``symbol`` the position closed) or an
    isolated position: ``qty`` lots closed on ``side`` (the closing side), ``filled`` of them
    through the book for ``notional`` ticks*lots, ``taken_over`` by the insurance fund and
    ``deleveraged`` against opposite positions, both at ``bankruptcy_price``; ``fee``
    (minor units) went to the insurance fund; ``order_id`` is the liquidation order."""

    seq: int
    ts: int
    account: str
    asset: str
    symbol: str
    side: Side
    qty: int
    filled: int
    notional: int
    bankruptcy_price: int
    taken_over: int
    deleveraged: int
    fee: int
    order_id: int


class PositionTransferred(NamedTuple):
    """A position changed hands off the book at ``price`` (the bankruptcy price):
    ``from_account`` (the liquidated one) closed ``qty`` lots on ``side``, ``to_account``
    (the insurance fund for TAKEOVER, the deleveraged counterparty for ADL) took the other
    side. ``exec_id`` numbers it like a trade."""

    seq: int
    ts: int
    exec_id: int
    symbol: str
    kind: TransferKind
    from_account: str
    to_account: str
    side: Side
    qty: int
    price: int


class FundingPayment(NamedTuple):
    """One position's funding: ``amount`` minor units (negative: paid) for ``size`` lots at
    ``mark`` and ``rate_e8``. A BalanceChanged (cause FUNDING) carries the ledger entry."""

    seq: int
    ts: int
    account: str
    symbol: str
    asset: str
    amount: int
    rate_e8: int
    size: int
    mark: int


class FundingApplied(NamedTuple):
    """Funding of one instrument at a funding instant: ``rate_e8`` at ``mark``; ``paid``
    by one side, ``received`` by the other, the rounding ``residual`` (paid - received) to
    the insurance fund; ``positions`` charged; ``next_funding_ts`` the next instant."""

    seq: int
    ts: int
    symbol: str
    asset: str
    rate_e8: int
    mark: int
    paid: int
    received: int
    residual: int
    positions: int
    next_funding_ts: int


ORDER_EVENTS = (
    OrderAccepted,
    OrderCanceled,
    OrderReplaced,
    OrderExpired,
    OrderTriggered,
    OrderRestated,
)
