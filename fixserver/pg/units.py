"""Engine integers -> the exact values Postgres stores (pure): ns timestamps to UTC datetimes,
minor units to asset units, ticks and lots to prices and quantities (fixserver.pg.rows)."""

from __future__ import annotations

import datetime
from decimal import Decimal

from engine.instruments import PPM, Instrument

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_US = datetime.timedelta(microseconds=1)


def ns_to_datetime(ts: int) -> datetime.datetime:
    """Integer ns since the epoch -> aware UTC datetime (floored to the microsecond)."""
    return _EPOCH + (ts // 1000) * _US


def asset_amount(minor: int, decimals: int) -> Decimal:
    """Minor units of an asset -> the exact amount in asset units (1_500_000, 6 -> 1.5)."""
    return Decimal(minor).scaleb(-decimals)


class Scale:
    """Integer ticks/lots/fee units of one instrument -> exact Decimals."""

    __slots__ = ("fee_unit", "lot", "quote_unit", "tick")

    def __init__(self, instrument: Instrument) -> None:
        self.tick = Decimal(instrument.tick_size)
        self.lot = Decimal(instrument.lot_size)
        self.quote_unit = self.tick * self.lot  # one tick*lot, in quote currency
        self.fee_unit = self.quote_unit / PPM

    def price(self, ticks: int) -> Decimal | None:
        """A price; 0 ticks (market orders, no stop) is None."""
        return Decimal(ticks) * self.tick if ticks else None

    def qty(self, lots: int) -> Decimal:
        return Decimal(lots) * self.lot

    def avg(self, notional: int, filled: int) -> Decimal | None:
        """Average price from ticks*lots and lots (the engine's AvgPx formula); None if unfilled."""
        if not filled:
            return None
        return Decimal(notional) / Decimal(filled) * self.tick

