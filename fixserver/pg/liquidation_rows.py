"""Liquidation and funding events -> Postgres rows (pure; migration 009, built by
:class:`fixserver.pg.rows.RowBuilder`).

Each of these events is a fact that never changes once released, so its row is written once
and kept: inserts are ``ON CONFLICT DO NOTHING`` on a key the replay of the same journal
gives again (fixserver.pg.batch), which makes catch-up and repeated batches harmless:

- ``FundingPayment`` -> ``funding_payments``, key (seq, symbol, account): a funding tick
  charges each position of an instrument once (the next instant is always after the tick);
- ``FundingApplied`` -> ``funding_rates``, key (symbol, seq);
- ``Liquidated`` -> ``liquidations``, key ``order_id``: each step is one liquidation order,
  numbered by the engine's journaled counter (``LIQ_ID_BASE + n``), also its ``orders`` row;
- ``PositionTransferred`` -> ``position_transfers``, key ``exec_id`` (numbered like trades).

Money is NUMERIC in units of the settlement asset, prices and quantities NUMERIC decimals with
the instrument's tick and lot size, rates exact fractions (``rate_e8`` / 10**8: 0.0001 is
0.01%), like migration 008's tables.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, Callable, NamedTuple, Union

from engine.enums import Side, TransferKind
from engine.events import FundingApplied, FundingPayment, Liquidated, PositionTransferred
from fixserver.pg.units import Scale, asset_amount, ns_to_datetime


class FundingPaymentRow(NamedTuple):
    """One position's funding at a funding instant (``amount`` < 0: paid)."""

    seq: int
    ts: datetime.datetime
    account: str
    symbol: str
    asset: str
    amount: Decimal
    rate: Decimal
    size: Decimal  # signed: negative is short
    mark: Decimal


class FundingRateRow(NamedTuple):
    """One instrument's funding at one instant, and the next instant."""

    symbol: str
    seq: int
    ts: datetime.datetime
    asset: str
    rate: Decimal
    mark: Decimal
    paid: Decimal
    received: Decimal
    residual: Decimal  # paid - received: the rounding, credited to the insurance fund
    positions: int
    next_funding_ts: datetime.datetime


class LiquidationRow(NamedTuple):
    """One liquidation step (one liquidation order)."""

    order_id: int
    seq: int
    ts: datetime.datetime
    account: str
    asset: str
    symbol: str
    side: str  # the closing side of the liquidation order
    qty: Decimal
    filled: Decimal  # through the book
    avg_price: Decimal | None  # of the book fills; NULL when the book took nothing
    bankruptcy_price: Decimal
    taken_over: Decimal  # by the insurance fund, at the bankruptcy price
    deleveraged: Decimal  # against opposite positions (ADL), at the bankruptcy price
    fee: Decimal  # liquidation fee, to the insurance fund


class TransferRow(NamedTuple):
    """A position moved off the book (insurance fund takeover or ADL)."""

    exec_id: int
    seq: int
    ts: datetime.datetime
    kind: str  # TAKEOVER or ADL
    from_account: str  # the liquidated account
    to_account: str  # "~INSURANCE" or the deleveraged account
    symbol: str
    side: str  # from_account's closing side
    qty: Decimal
    price: Decimal  # the bankruptcy price


LiquidationFundingRow = Union[FundingPaymentRow, FundingRateRow, LiquidationRow, TransferRow]

#: row type -> (table, ON CONFLICT clause) for fixserver.pg.batch
TABLES: dict[str, tuple[Any, str]] = {
    "funding_payments": (FundingPaymentRow,
                         "ON CONFLICT (seq, symbol, account) DO NOTHING"),
    "funding_rates": (FundingRateRow, "ON CONFLICT (symbol, seq) DO NOTHING"),
    "liquidations": (LiquidationRow, "ON CONFLICT (order_id) DO NOTHING"),
    "position_transfers": (TransferRow, "ON CONFLICT (exec_id) DO NOTHING"),
}
TABLE_OF: dict[type, str] = {row_type: table for table, (row_type, _) in TABLES.items()}


def _rate(rate_e8: int) -> Decimal:
    return Decimal(rate_e8).scaleb(-8)


def _funding_payment(e: FundingPayment, sc: Scale, decimals: dict[str, int]
                     ) -> FundingPaymentRow:
    return FundingPaymentRow(
        e.seq, ns_to_datetime(e.ts), e.account, e.symbol, e.asset,
        asset_amount(e.amount, decimals[e.asset]), _rate(e.rate_e8), sc.qty(e.size),
        Decimal(e.mark) * sc.tick,
    )


def _funding_applied(e: FundingApplied, sc: Scale, decimals: dict[str, int]
                     ) -> FundingRateRow:
    d = decimals[e.asset]
    return FundingRateRow(
        e.symbol, e.seq, ns_to_datetime(e.ts), e.asset, _rate(e.rate_e8),
        Decimal(e.mark) * sc.tick, asset_amount(e.paid, d), asset_amount(e.received, d),
        asset_amount(e.residual, d), e.positions, ns_to_datetime(e.next_funding_ts),
    )


def _liquidated(e: Liquidated, sc: Scale, decimals: dict[str, int]) -> LiquidationRow:
    return LiquidationRow(
        e.order_id, e.seq, ns_to_datetime(e.ts), e.account, e.asset, e.symbol,
        Side(e.side).name, sc.qty(e.qty), sc.qty(e.filled), sc.avg(e.notional, e.filled),
        Decimal(e.bankruptcy_price) * sc.tick, sc.qty(e.taken_over), sc.qty(e.deleveraged),
        asset_amount(e.fee, decimals[e.asset]),
    )


def _transferred(e: PositionTransferred, sc: Scale, decimals: dict[str, int]) -> TransferRow:
    return TransferRow(
        e.exec_id, e.seq, ns_to_datetime(e.ts), TransferKind(e.kind).name, e.from_account,
        e.to_account, e.symbol, Side(e.side).name, sc.qty(e.qty), Decimal(e.price) * sc.tick,
    )


#: event class -> its row maker (event, the symbol's Scale, settlement asset -> decimals)
ROW_MAKERS: dict[type, Callable[[Any, Scale, dict[str, int]], LiquidationFundingRow]] = {
    FundingPayment: _funding_payment,
    FundingApplied: _funding_applied,
    Liquidated: _liquidated,
    PositionTransferred: _transferred,
}
