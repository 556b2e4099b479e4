"""Commands: the engine's only input, one small frozen attrs class per kind.

Every command carries the sequencer's ``seq`` (unique, increasing) and ``ts`` (integer ns).
A NewOrder's order id *is* its ``seq``. Prices are integer ticks, quantities integer lots.
``cl_ord_id`` is an opaque string carried through to events for the FIX layer.
"""

from __future__ import annotations

from typing import Union

import attr

from engine.enums import (
    CancelReason,
    InstrumentStatus,
    MarginMode,
    OrdType,
    Side,
    StpMode,
    TimeInForce,
    TriggerBy,
)
from engine.instruments import normalise_tiers


@attr.s(slots=True, frozen=True, auto_attribs=True)
class NewOrder:
    """Enter an order; its order id is ``seq``.

    ``price`` is the limit price (limit and *_LIMIT types), ``stop_price`` the trigger price
    (STOP*, TAKE_PROFIT*). ``expire_ts`` is used by GTD. ``display_qty`` > 0 makes an iceberg.
    ``min_qty`` > 0 requires that much to be executable on entry. ``stp`` None means the
    account default.
    """

    seq: int
    ts: int
    account: str
    symbol: str
    side: Side
    qty: int
    price: int = 0
    ord_type: OrdType = OrdType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    cl_ord_id: str = ""
    stop_price: int = 0
    expire_ts: int = 0
    post_only: bool = False
    reduce_only: bool = False
    display_qty: int = 0
    min_qty: int = 0
    stp: StpMode | None = None
    trigger_by: TriggerBy | None = None  # None: mark for take-profits, last for stops


@attr.s(slots=True, frozen=True, auto_attribs=True)
class CancelOrder:
    """Cancel a live order of ``account``; ``cl_ord_id`` is the cancel request's own id.
    ``reason`` says who canceled it (USER for a client's cancel request)."""

    seq: int
    ts: int
    account: str
    order_id: int
    cl_ord_id: str = ""
    reason: CancelReason = CancelReason.USER


@attr.s(slots=True, frozen=True, auto_attribs=True)
class ReplaceOrder:
    """Change a live order's quantity and/or price (stop price too, for untriggered stops).

    A price change or a quantity increase loses time priority; a decrease keeps it; a new
    quantity at or below the filled quantity ends the order (leaves 0). ``stop_price`` 0 keeps
    the current one. ``cl_ord_id`` becomes the order's client id.
    """

    seq: int
    ts: int
    account: str
    order_id: int
    qty: int
    price: int
    cl_ord_id: str = ""
    stop_price: int = 0
    trigger_by: TriggerBy | None = None  # None: keep the order's trigger price source


@attr.s(slots=True, frozen=True, auto_attribs=True)
class MassCancel:
    """Cancel every live order matching all the given filters (None matches anything);
    ``reason`` is carried by each cancel (MASS_CANCEL for a client's request)."""

    seq: int
    ts: int
    account: str | None = None
    symbol: str | None = None
    side: Side | None = None
    cl_ord_id: str = ""
    reason: CancelReason = CancelReason.MASS_CANCEL


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetInstrumentStatus:
    """Change an instrument's trading status."""

    seq: int
    ts: int
    symbol: str
    status: InstrumentStatus


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetPosition:
    """Set an account's signed position (lots) in an instrument, e.g. from the risk system."""

    seq: int
    ts: int
    account: str
    symbol: str
    position: int


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetAccountStp:
    """Set an account's default self-trade-prevention mode."""

    seq: int
    ts: int
    account: str
    mode: StpMode


@attr.s(slots=True, frozen=True, auto_attribs=True)
class KillSwitch:
    """Turn a firm's kill switch on or off. On: every live order of ``accounts`` is canceled
    (reason KILL_SWITCH) and new orders and replaces for them are rejected until it is off."""

    seq: int
    ts: int
    firm: str
    accounts: tuple = ()
    active: bool = True


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SessionStatus:
    """A FIX session logged on or off, with its cancel-on-disconnect choice for that logon.
    The engine only records it (so it is journaled and in snapshots): after a restart the FIX
    layer knows which sessions were connected with cancel-on-disconnect on."""

    seq: int
    ts: int
    session_id: str
    connected: bool
    cancel_on_disconnect: bool = False


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetTradingDay:
    """Move the trading-day boundary: DAY orders entered from now on expire at the next
    ``day_offset_ns`` past midnight UTC (orders already resting keep their expiry)."""

    seq: int
    ts: int
    day_offset_ns: int


@attr.s(slots=True, frozen=True, auto_attribs=True)
class AdminAction:
    """An operator's action that changes no engine state (log a session out, set its
    sequence numbers, take a snapshot): accepted and recorded nowhere, so that the journal
    is the audit trail of who (``who``, the admin token's name) did what (``action``, with
    ``detail``) and when (``ts``)."""

    seq: int
    ts: int
    who: str
    action: str
    detail: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class ConfigureInstrument:
    """List a new instrument, or change an existing one's rules (the fields of
    :class:`~engine.instruments.Instrument`; ``status`` is the initial status of a new listing
    and ignored for an existing one, whose status only SetInstrumentStatus changes). Fees,
    band, quantity limits and reference price may change at any time; tick size, lot size and
    multiplier only while the instrument has no live order and no open position."""

    seq: int
    ts: int
    symbol: str
    tick_size: str
    lot_size: str
    min_qty: int = 1
    max_qty: int = 1_000_000
    multiplier: int = 1
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    price_band_ppm: int = 50_000
    reference_price: int = 0
    status: InstrumentStatus = InstrumentStatus.TRADING
    settlement_asset: str = "USDT"
    settlement_decimals: int = 6
    max_leverage: int = 0
    default_leverage: int = 0
    risk_tiers: tuple = attr.ib(default=(), converter=normalise_tiers)
    mark_interval_ms: int = 1000
    mark_smoothing: int = 60
    mark_basis_cap_ppm: int = 5000
    liquidation_fee_ppm: int = 5000
    funding_interval_s: int = 28_800
    funding_interest_e8: int = 10_000
    funding_clamp_e8: int = 50_000
    funding_cap_e8: int = 750_000
    impact_notional: int = 10_000_000_000
    margin_call_levels: tuple = attr.ib(default=(800_000, 900_000),
                                        converter=lambda t: tuple(int(x) for x in t))


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Deposit:
    """Credit ``amount`` minor units of ``asset`` to ``account`` (ledger cause DEPOSIT).
    ``ref`` is the operator's reference (a transfer id), carried to the ledger."""

    seq: int
    ts: int
    account: str
    asset: str
    amount: int
    ref: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Withdraw:
    """Debit ``amount`` minor units of ``asset``; refused (INSUFFICIENT_MARGIN, with the
    shortfall) if it would leave the account under its margin requirement."""

    seq: int
    ts: int
    account: str
    asset: str
    amount: int
    ref: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetLeverage:
    """Set an account's leverage in a margined instrument (1..the tier's maximum)."""

    seq: int
    ts: int
    account: str
    symbol: str
    leverage: int
    request_id: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetMarginMode:
    """Switch an account's margin mode in an instrument (only while it has no position and
    no live orders there)."""

    seq: int
    ts: int
    account: str
    symbol: str
    mode: MarginMode
    request_id: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class AdjustIsolatedMargin:
    """Add (``amount`` > 0) or remove (< 0) margin of an open isolated position."""

    seq: int
    ts: int
    account: str
    symbol: str
    amount: int
    request_id: str = ""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SetIndexPrice:
    """The index (spot reference) price of an instrument, in ticks, from the index feed."""

    seq: int
    ts: int
    symbol: str
    price: int


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Tick:
    """The sequencer's time tick: expires GTD and DAY orders whose time is at or before ``ts``."""

    seq: int
    ts: int


Command = Union[
    NewOrder, CancelOrder, ReplaceOrder, MassCancel, SetInstrumentStatus, SetPosition,
    SetAccountStp, KillSwitch, SessionStatus, SetTradingDay, ConfigureInstrument, Tick,
    AdminAction, Deposit, Withdraw, SetLeverage, SetMarginMode, AdjustIsolatedMargin,
    SetIndexPrice,
]
