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
    # -- risk (see spec/risk.md); max_leverage 0 means the instrument is not margined ------
    settlement_asset: str = "USDT"
    settlement_decimals: int = 6  # the asset's minor unit is 10**-decimals
    max_leverage: int = 0
    default_leverage: int = 0  # 0: min(20, max_leverage)
    # ((position notional cap in asset minor units, maintenance margin rate ppm, max leverage),
    # ...) ascending by cap; empty: one tier up to 2**62 at half the initial margin rate
    risk_tiers: tuple = attr.ib(default=(), converter=lambda t: normalise_tiers(t))
    mark_interval_ms: int = 1000  # the mark is recomputed at most this often (inside ticks)
    mark_smoothing: int = 60  # samples in the basis moving average (EMA, alpha = 1/n)
    mark_basis_cap_ppm: int = 5000  # the smoothed basis is clamped to +-this of the index
    # -- liquidation and funding (spec/risk.md) -------------------------------------------
    liquidation_fee_ppm: int = 5000  # of the liquidated notional, to the insurance fund
    funding_interval_s: int = 28_800  # funding at every multiple of this since the epoch (UTC)
    funding_interest_e8: int = 10_000  # interest rate per interval, 1e-8 units (0.01%)
    funding_clamp_e8: int = 50_000  # clamp(interest - premium) bound (0.05%)
    funding_cap_e8: int = 750_000  # the funding rate is capped at +-this (0.75%)
    impact_notional: int = 10_000_000_000  # minor units walked for the impact bid/ask
    # margin-ratio warning levels (ppm of equity); all instruments of an asset must agree
    margin_call_levels: tuple = attr.ib(default=(800_000, 900_000),
                                        converter=lambda t: tuple(int(x) for x in t))

    @property
    def margined(self) -> bool:
        """True if orders need collateral (the instrument has risk parameters)."""
        return self.max_leverage > 0

    def value_per_tick_lot(self) -> int:
        """One tick of price on one lot, in minor units of the settlement asset, times the
        multiplier (0 when tick * lot is not a whole number of minor units: a margined
        instrument with such a grid is refused)."""
        return self.unit_value() * self.multiplier

    def unit_value(self) -> int:
        """``tick_size * lot_size`` in minor units of the settlement asset (0 if not whole)."""
        v = Decimal(self.tick_size) * Decimal(self.lot_size) * (
            Decimal(10) ** self.settlement_decimals)
        return int(v) if v == v.to_integral_value() and v >= 1 else 0

    def tiers(self) -> tuple:
        """The risk-limit tiers in force (the default single tier when none is configured)."""
        if self.risk_tiers:
            return self.risk_tiers
        lev = self.max_leverage or 1
        return ((1 << 62, PPM // (2 * lev), lev),)

    def leverage_default(self) -> int:
        """Leverage of an account that never set one for this instrument."""
        if self.default_leverage:
            return min(self.default_leverage, self.max_leverage)
        return min(20, self.max_leverage)

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
        d["risk_tiers"] = [list(t) for t in self.risk_tiers]
        d["margin_call_levels"] = list(self.margin_call_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instrument:
        """Inverse of to_dict."""
        d = dict(d)
        d["status"] = InstrumentStatus(d["status"])
        return cls(**d)


def normalise_tiers(tiers: Any) -> tuple:
    """Risk tiers as a tuple of int triples (journal and snapshot decode them as lists)."""
    return tuple(tuple(int(x) for x in t) for t in (tiers or ()))


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
