"""``[INSTRUMENT]`` sections: the instruments the exchange lists, from the configuration.

One section per instrument::

    [INSTRUMENT]
    Symbol=SOL-PERP
    TickSize=0.001
    LotSize=0.1
    MinQty=0.1
    MaxQty=100000
    MakerFeePpm=-100
    TakerFeePpm=500
    PriceBandPpm=50000
    ReferencePrice=150
    Status=trading

Quantities and prices are decimals in the instrument's units (checked against its lot and
tick grid); fees and the band are integers in parts per million (100 ppm = 1 basis point;
a negative maker fee is a rebate). ``Status`` is the status of a *new* listing only: after
that, the status is the operator's (admin API) and survives restarts.

At start-up the order-entry wiring compares these with the instruments the journal holds and
journals the difference (:func:`fixserver.orderentry.instrument_sync.plan`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from engine.enums import InstrumentStatus
from engine.instruments import PPM, Instrument

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")

STATUS_NAMES: dict[str, InstrumentStatus] = {
    "trading": InstrumentStatus.TRADING,
    "halted": InstrumentStatus.HALTED,
    "cancel-only": InstrumentStatus.CANCEL_ONLY,
    "post-only": InstrumentStatus.POST_ONLY,
}


def _symbol(value: str) -> str:
    if not _SYMBOL.match(value):
        raise ValueError("expected 1-32 characters A-Z, 0-9, '.', '_' or '-' (e.g. SOL-PERP)")
    return value


def _positive_decimal(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("expected a positive decimal number") from None
    if not number.is_finite() or number <= 0:
        raise ValueError("expected a positive decimal number")
    return value


def _decimal(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("expected a decimal number >= 0") from None
    if not number.is_finite() or number < 0:
        raise ValueError("expected a decimal number >= 0")
    return value


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("expected a whole number > 0")
    return int(value)


def _fee_ppm(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("expected a whole number of ppm (100 = 1 basis point)") from None
    if not -PPM < number < PPM:
        raise ValueError("expected a rate between -1000000 and 1000000 ppm")
    return number


def _band_ppm(value: str) -> int:
    if not value.isdigit() or int(value) >= PPM:
        raise ValueError("expected a whole number of ppm, 0 (no band) to 999999")
    return int(value)


def _status(value: str) -> InstrumentStatus:
    status = STATUS_NAMES.get(value.lower())
    if status is None:
        raise ValueError(f"expected one of {', '.join(STATUS_NAMES)}")
    return status


#: key -> parser (values as the parser returns them; grids are checked per instrument after)
INSTRUMENT_KEYS: dict[str, Callable[[str], Any]] = {
    "Symbol": _symbol,
    "TickSize": _positive_decimal,
    "LotSize": _positive_decimal,
    "Multiplier": _positive_int,
    "MinQty": _positive_decimal,
    "MaxQty": _positive_decimal,
    "MakerFeePpm": _fee_ppm,
    "TakerFeePpm": _fee_ppm,
    "PriceBandPpm": _band_ppm,
    "ReferencePrice": _decimal,
    "Status": _status,
}
REQUIRED_KEYS = ("Symbol", "TickSize", "LotSize")


def _units(value: str, unit: str) -> int | None:
    """``value`` as a whole number of ``unit``s, or None if it is off the grid."""
    q = Decimal(value) / Decimal(unit)
    return int(q) if q == q.to_integral_value() else None


def build_instrument(values: dict[str, Any], fail: Callable[[str, str], Exception]
                     ) -> Instrument:
    """An Instrument from one section's parsed values; ``fail(key, message)`` builds the
    error to raise for a value that is well-formed but wrong for this instrument."""
    tick, lot = values["TickSize"], values["LotSize"]

    def lots(key: str, default: int) -> int:
        if key not in values:
            return default
        n = _units(values[key], lot)
        if n is None:
            raise fail(key, f"not a multiple of LotSize {lot}")
        if n < 1:
            raise fail(key, f"must be at least one lot ({lot})")
        return n

    min_qty = lots("MinQty", 1)
    max_qty = lots("MaxQty", max(1_000_000, min_qty))
    if max_qty < min_qty:
        raise fail("MaxQty", f"below MinQty {values['MinQty']}")
    reference = 0
    if "ReferencePrice" in values:
        ref = _units(values["ReferencePrice"], tick)
        if ref is None:
            raise fail("ReferencePrice", f"not a multiple of TickSize {tick}")
        reference = ref
    return Instrument(
        symbol=values["Symbol"], tick_size=tick, lot_size=lot, min_qty=min_qty,
        max_qty=max_qty, multiplier=values.get("Multiplier", 1),
        maker_fee_ppm=values.get("MakerFeePpm", 0), taker_fee_ppm=values.get("TakerFeePpm", 0),
        price_band_ppm=values.get("PriceBandPpm", 50_000), reference_price=reference,
        status=values.get("Status", InstrumentStatus.TRADING),
    )
