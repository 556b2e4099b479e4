"""Instrument configuration: perpetual futures contracts and their trading rules.

Inside the engine every price is an integer number of ticks and every quantity an integer
number of lots. Decimal strings appear only here, at the edge: ``tick_size`` and ``lot_size``
say what one tick and one lot are worth, and :meth:`Instrument.price_to_ticks` /
:meth:`Instrument.qty_to_lots` convert (rejecting values off the grid).

Fees: ``maker_fee_ppm`` and ``taker_fee_ppm`` are rates in parts per million of notional
(100 ppm = 1 basis point; negative maker rates are rebates). A trade of ``qty`` lots at
``price`` ticks has fee ``price * qty * multiplier * rate_ppm`` in *fee units*; one fee unit
is ``tick_size * lot_size / 1_000_000`` of the quote currency (:meth:`fee_to_quote`). Integer
and exact: no rounding happens inside the engine.

Price band: ``price_band_ppm`` around a reference price (last trade, else the mid, else
``reference_price``; 0 means none). Limit orders outside it are rejected; market orders are
bounded by it and never trade through it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attr

from engine.enums import InstrumentStatus, RejectReason

PPM = 1_000_000


class OffGridError(ValueError):
    """A decimal price or quantity that is not a whole number of ticks or lots.

    ``reason`` is the RejectReason the order-entry edge reports (PRICE_NOT_ON_TICK or
    QTY_NOT_ON_LOT).
    """

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.reason = reason


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Instrument:
    """One perpetual futures contract and its rules (integer fields are ticks, lots, ppm)."""

    symbol: str
    tick_size: str  # decimal string: quote currency per tick of price
    lot_size: str  # decimal string: contracts (base units) per lot
    min_qty: int = 1  # lots
    max_qty: int = 1_000_000  # lots
    multiplier: int = 1  # contract multiplier (integer factor on notional)
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    price_band_ppm: int = 50_000  # 5%
    reference_price: int = 0  # ticks; used for the band until a trade or a mid exists
    status: InstrumentStatus = InstrumentStatus.TRADING

    def price_to_ticks(self, price: str) -> int:
        """Convert a decimal price string to ticks; raise OffGridError when off the tick grid."""
        return _to_units(price, self.tick_size, RejectReason.PRICE_NOT_ON_TICK)

    def qty_to_lots(self, qty: str) -> int:
        """Convert a decimal quantity string to lots; raise OffGridError when off the lot grid."""
        return _to_units(qty, self.lot_size, RejectReason.QTY_NOT_ON_LOT)

    def ticks_to_price(self, ticks: int) -> str:
        """Render ticks as a decimal price string."""
        return str(Decimal(ticks) * Decimal(self.tick_size))

    def lots_to_qty(self, lots: int) -> str:
        """Render lots as a decimal quantity string."""
        return str(Decimal(lots) * Decimal(self.lot_size))

    def avg_price(self, notional: int, filled: int) -> str:
        """Exact average price (decimal string) from a notional numerator and a filled qty."""
        if filled == 0:
            return "0"
        return str(Decimal(notional) / Decimal(filled) * Decimal(self.tick_size))

    def fee_to_quote(self, fee: int) -> Decimal:
        """Convert engine fee units to quote currency (exact)."""
        return Decimal(fee) * Decimal(self.tick_size) * Decimal(self.lot_size) / PPM

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for snapshots)."""
        d = attr.asdict(self)
        d["status"] = int(self.status)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instrument:
        """Inverse of to_dict."""
        d = dict(d)
        d["status"] = InstrumentStatus(d["status"])
        return cls(**d)


def _to_units(value: str, unit: str, reason: RejectReason) -> int:
    q = Decimal(value) / Decimal(unit)
    if q != q.to_integral_value():
        raise OffGridError(f"{value} is not a multiple of {unit}", reason)
    return int(q)


def demo_instruments() -> list[Instrument]:
    """The demo venue: BTC-PERP and ETH-PERP (maker rebate 1 bp, taker 5 bp, band 5%)."""
    return [
        Instrument(
            symbol="BTC-PERP",
            tick_size="0.1",
            lot_size="0.001",
            min_qty=1,
            max_qty=1_000_000,
            multiplier=1,
            maker_fee_ppm=-100,
            taker_fee_ppm=500,
            price_band_ppm=50_000,
            reference_price=600_000,  # 60,000.0 USD
        ),
        Instrument(
            symbol="ETH-PERP",
            tick_size="0.01",
            lot_size="0.01",
            min_qty=1,
            max_qty=1_000_000,
            multiplier=1,
            maker_fee_ppm=-100,
            taker_fee_ppm=500,
            price_band_ppm=50_000,
            reference_price=300_000,  # 3,000.00 USD
        ),
    ]
