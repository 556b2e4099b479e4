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

Risk (a *margined* instrument: orders need collateral) comes with ``MaxLeverage``::

    SettlementAsset=USDT
    SettlementDecimals=6
    MaxLeverage=100
    DefaultLeverage=20
    RiskTiers=50000:0.5%:100, 250000:1%:50, 1000000:2.5%:20
    MarkIntervalMs=1000
    MarkSmoothing=60
    MarkBasisCapPpm=5000
    LiquidationFeePpm=5000
    FundingIntervalSeconds=28800
    FundingInterestRate=0.01%
    FundingClamp=0.05%
    FundingCap=0.75%
    ImpactNotional=10000
    MarginCallLevels=80%, 90%

``RiskTiers`` are ``cap:maintenance rate:max leverage`` ascending by cap: a position's
notional up to ``cap`` (whole settlement-asset units, e.g. 50,000 USDT) keeps that
maintenance margin rate (a percentage, exact to 0.0001% = 1 ppm) and may use at most that
leverage. They become the engine's ``(cap in minor units, rate in ppm, leverage)`` exactly
(:func:`risk_tiers`); anything that would not convert exactly, or that the engine would
refuse (a rate times its leverage of 100% or more: maintenance margin at or above the
initial margin), is refused here with the key named.

At start-up the order-entry wiring compares these with the instruments the journal holds and
journals the difference (:func:`fixserver.orderentry.instrument_sync.plan`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import attr

from engine.enums import InstrumentStatus
from engine.instruments import PPM, Instrument

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
_ASSET = re.compile(r"^[A-Z][A-Z0-9]{1,11}$")
#: the engine's bounds (engine.risk.book.RiskBook.problem)
MAX_LEVERAGE = 1000
MAX_DECIMALS = 18

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


def _asset(value: str) -> str:
    if not _ASSET.match(value):
        raise ValueError("expected 2-12 characters A-Z, 0-9 starting with a letter (e.g. USDT)")
    return value


def _bounded_int(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise ValueError(f"expected a whole number {low} to {high}{what}")
        return int(value)

    return parse


def _rate_ppm(text: str) -> int:
    """``0.5%`` as parts per million (5000), exactly; ValueError otherwise."""
    if not text.endswith("%"):
        raise ValueError(f"rate {text!r} must be a percentage such as 0.5%")
    try:
        rate = Decimal(text[:-1].strip())
    except InvalidOperation:
        raise ValueError(f"rate {text!r} is not a number") from None
    ppm = rate * 10_000
    if not rate.is_finite() or ppm != ppm.to_integral_value():
        raise ValueError(f"rate {text!r} is finer than 0.0001% (1 ppm)")
    if not 0 < ppm < PPM:
        raise ValueError(f"rate {text!r} must be above 0% and below 100%")
    return int(ppm)


def _rate_e8(text: str) -> int:
    """``0.01%`` as 1e-8 units (10000), exactly, 0% to 100%; ValueError otherwise."""
    if not text.endswith("%"):
        raise ValueError(f"rate {text!r} must be a percentage such as 0.01%")
    try:
        rate = Decimal(text[:-1].strip())
    except InvalidOperation:
        raise ValueError(f"rate {text!r} is not a number") from None
    e8 = rate * 1_000_000
    if not rate.is_finite() or e8 != e8.to_integral_value():
        raise ValueError(f"rate {text!r} is finer than 0.000001% (1e-8)")
    if not 0 <= e8 < 100_000_000:
        raise ValueError(f"rate {text!r} must be from 0% to below 100%")
    return int(e8)


def _levels(value: str) -> tuple[int, ...]:
    """``80%, 90%``: margin-call levels as ppm of equity, ascending, each below 100%."""
    levels = tuple(_rate_ppm(part.strip()) for part in value.split(",") if part.strip())
    if list(levels) != sorted(set(levels)):
        raise ValueError(f"levels {value!r} must rise from one to the next")
    return levels


def _tiers(value: str) -> tuple[tuple[Decimal, int, int], ...]:
    """``cap:rate%:leverage, ...`` as (cap in asset units, rate ppm, leverage) triples (the
    cap becomes minor units in :func:`risk_tiers`, once SettlementDecimals is known)."""
    out = []
    for number, part in enumerate(value.split(","), start=1):
        fields = [f.strip() for f in part.split(":")]
        if len(fields) != 3:
            raise ValueError(f"tier {number} {part.strip()!r}: expected cap:rate%:leverage "
                             "(e.g. 50000:0.5%:100)")
        cap_text, rate_text, lev_text = fields
        try:
            cap = Decimal(cap_text.replace("_", ""))
        except InvalidOperation:
            cap = Decimal(-1)
        if not cap.is_finite() or cap <= 0:
            raise ValueError(f"tier {number}: cap {cap_text!r} must be a positive amount of "
                             "the settlement asset")
        try:
            rate = _rate_ppm(rate_text)
        except ValueError as exc:
            raise ValueError(f"tier {number}: {exc}") from None
        if not lev_text.isdigit() or not 1 <= int(lev_text) <= MAX_LEVERAGE:
            raise ValueError(f"tier {number}: leverage {lev_text!r} must be a whole number 1 "
                             f"to {MAX_LEVERAGE}")
        out.append((cap, rate, int(lev_text)))
    return tuple(out)


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
    "SettlementAsset": _asset,
    "SettlementDecimals": _bounded_int(0, MAX_DECIMALS, " (digits of the asset's minor unit)"),
    "MaxLeverage": _bounded_int(1, MAX_LEVERAGE, ""),
    "DefaultLeverage": _bounded_int(1, MAX_LEVERAGE, ""),
    "RiskTiers": _tiers,
    "MarkIntervalMs": _bounded_int(1, 86_400_000, " (milliseconds)"),
    "MarkSmoothing": _bounded_int(1, 1_000_000, " (samples)"),
    "MarkBasisCapPpm": _bounded_int(0, PPM - 1, " ppm"),
    "LiquidationFeePpm": _bounded_int(0, PPM - 1, " ppm"),
    "FundingIntervalSeconds": _bounded_int(1, 7 * 86_400, " (seconds)"),
    "FundingInterestRate": _rate_e8,
    "FundingClamp": _rate_e8,
    "FundingCap": _rate_e8,
    "ImpactNotional": _positive_decimal,
    "MarginCallLevels": _levels,
}
REQUIRED_KEYS = ("Symbol", "TickSize", "LotSize")
#: keys that only mean something for a margined instrument (one with MaxLeverage)
RISK_KEYS = ("SettlementAsset", "SettlementDecimals", "DefaultLeverage", "RiskTiers",
             "MarkIntervalMs", "MarkSmoothing", "MarkBasisCapPpm", "LiquidationFeePpm",
             "FundingIntervalSeconds", "FundingInterestRate", "FundingClamp", "FundingCap",
             "ImpactNotional", "MarginCallLevels")


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
    inst = Instrument(
        symbol=values["Symbol"], tick_size=tick, lot_size=lot, min_qty=min_qty,
        max_qty=max_qty, multiplier=values.get("Multiplier", 1),
        maker_fee_ppm=values.get("MakerFeePpm", 0), taker_fee_ppm=values.get("TakerFeePpm", 0),
        price_band_ppm=values.get("PriceBandPpm", 50_000), reference_price=reference,
        status=values.get("Status", InstrumentStatus.TRADING),
    )
    return _with_risk(inst, values, fail)


def _with_risk(inst: Instrument, values: dict[str, Any], fail: Callable[[str, str], Exception]
               ) -> Instrument:
    """``inst`` with its risk keys, checked as the engine would check them."""
    if "MaxLeverage" not in values:
        for key in RISK_KEYS:
            if key in values:
                raise fail(key, "only a margined instrument takes it: set MaxLeverage too")
        return inst
    max_lev = values["MaxLeverage"]
    decimals = values.get("SettlementDecimals", 6)
    asset = values.get("SettlementAsset", "USDT")
    default_lev = values.get("DefaultLeverage", 0)
    if default_lev > max_lev:
        raise fail("DefaultLeverage", f"above MaxLeverage {max_lev}")
    tiers: tuple = ()
    if "RiskTiers" in values:
        try:
            tiers = risk_tiers(values["RiskTiers"], decimals, max_lev)
        except ValueError as exc:
            raise fail("RiskTiers", str(exc)) from None
    inst = attr.evolve(
        inst, settlement_asset=asset, settlement_decimals=decimals, max_leverage=max_lev,
        default_leverage=default_lev, risk_tiers=tiers,
        mark_interval_ms=values.get("MarkIntervalMs", 1000),
        mark_smoothing=values.get("MarkSmoothing", 60),
        mark_basis_cap_ppm=values.get("MarkBasisCapPpm", 5000),
        liquidation_fee_ppm=values.get("LiquidationFeePpm", 5000),
        funding_interval_s=values.get("FundingIntervalSeconds", 28_800),
        funding_interest_e8=values.get("FundingInterestRate", 10_000),
        funding_clamp_e8=values.get("FundingClamp", 50_000),
        funding_cap_e8=values.get("FundingCap", 750_000),
        margin_call_levels=values.get("MarginCallLevels", (800_000, 900_000)))
    if "ImpactNotional" in values:
        minor = Decimal(values["ImpactNotional"]) * (Decimal(10) ** decimals)
        if minor != minor.to_integral_value() or minor < 1:
            raise fail("ImpactNotional", f"not a whole number of the asset's minor units "
                                         f"(SettlementDecimals={decimals})")
        inst = attr.evolve(inst, impact_notional=int(minor))
    if inst.unit_value() < 1:
        one = Decimal(inst.tick_size) * Decimal(inst.lot_size)
        raise fail("MaxLeverage", f"TickSize x LotSize = {one} {asset} is not a whole number "
                                  f"of the asset's minor units (SettlementDecimals={decimals}): "
                                  "margin and PnL could not be exact")
    return inst


def risk_tiers(parsed: tuple[tuple[Decimal, int, int], ...], decimals: int, max_leverage: int
               ) -> tuple[tuple[int, int, int], ...]:
    """Parsed ``RiskTiers`` as the engine's (cap in minor units, rate ppm, leverage),
    exactly; ValueError saying which tier is wrong."""
    out = []
    previous = 0
    for number, (cap, rate, lev) in enumerate(parsed, start=1):
        minor = cap * (Decimal(10) ** decimals)
        if minor != minor.to_integral_value():
            raise ValueError(f"tier {number}: cap {cap} has more than {decimals} decimals "
                             f"(SettlementDecimals={decimals})")
        if int(minor) <= previous:
            raise ValueError(f"tier {number}: caps must rise from tier to tier ({cap} after "
                             f"{Decimal(previous) / (Decimal(10) ** decimals)})")
        if lev > max_leverage:
            raise ValueError(f"tier {number}: leverage {lev} is above MaxLeverage "
                             f"{max_leverage}")
        if rate * lev >= PPM:
            raise ValueError(f"tier {number}: maintenance rate {Decimal(rate) / 10_000}% x "
                             f"leverage {lev} reaches 100%: the maintenance margin must stay "
                             "below the initial margin (1/leverage)")
        previous = int(minor)
        out.append((previous, rate, lev))
    return tuple(out)
