"""Start-up: the configured instruments against the journaled ones.

The engine's instruments are state like any other: they come from the journal (a snapshot
holds them, ``ConfigureInstrument`` commands change them). The configuration says what the
operator wants. :func:`plan` compares the two and returns the ``ConfigureInstrument``
commands that make the engine match the configuration, to be journaled before any client
request; or raises :class:`InstrumentConfigError` saying why the change cannot be made, so
the two never diverge silently:

- an instrument in the configuration and not in the engine is listed (with its ``Status``);
- one in both with different fees, band, quantity limits or reference price is updated;
- a tick size, lot size or multiplier change is refused while the instrument has live orders
  or open positions (prices and quantities in ticks and lots would change meaning);
- risk parameters (``MaxLeverage``, ``RiskTiers``, mark settings ...) are rules like the fees:
  a change is journaled; but a change of settlement asset or its decimals, or taking the
  margin away (no ``MaxLeverage`` any more), is refused while the instrument has live orders
  or open positions (their collateral is held in that asset);
- an instrument in the engine and not in the configuration is refused: delisting is not
  supported (keep its section, ``Status=halted`` stops trading);
- the status of a listed instrument is the operator's (admin API), not the configuration's.

Journals written before instruments were journaled start from the built-in demo set
(:func:`genesis_instruments`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from engine.commands import ConfigureInstrument
from engine.instruments import Instrument, demo_instruments
from fixserver.journal_file import JournalDirectory


class InstrumentConfigError(Exception):
    """The configured instruments cannot be applied to the journaled state."""


def instrument_command(inst: Instrument) -> ConfigureInstrument:
    """The command that lists ``inst`` (or brings a listed one to its rules)."""
    return ConfigureInstrument(
        0, 0, inst.symbol, inst.tick_size, inst.lot_size, inst.min_qty, inst.max_qty,
        inst.multiplier, inst.maker_fee_ppm, inst.taker_fee_ppm, inst.price_band_ppm,
        inst.reference_price, inst.status, inst.settlement_asset, inst.settlement_decimals,
        inst.max_leverage, inst.default_leverage, inst.risk_tiers, inst.mark_interval_ms,
        inst.mark_smoothing, inst.mark_basis_cap_ppm,
        liquidation_fee_ppm=inst.liquidation_fee_ppm, funding_interval_s=inst.funding_interval_s,
        funding_interest_e8=inst.funding_interest_e8, funding_clamp_e8=inst.funding_clamp_e8,
        funding_cap_e8=inst.funding_cap_e8, impact_notional=inst.impact_notional,
        margin_call_levels=inst.margin_call_levels,
    )


def _rules(inst: Instrument) -> tuple:
    return (Decimal(inst.tick_size), Decimal(inst.lot_size), inst.min_qty, inst.max_qty,
            inst.multiplier, inst.maker_fee_ppm, inst.taker_fee_ppm, inst.price_band_ppm,
            inst.reference_price, *_risk(inst))


def _risk(inst: Instrument) -> tuple:
    """The risk parameters (all of them mean nothing for an unmargined instrument)."""
    if not inst.margined:
        return (0,)
    return (inst.settlement_asset, inst.settlement_decimals, inst.max_leverage,
            inst.default_leverage, inst.risk_tiers, inst.mark_interval_ms, inst.mark_smoothing,
            inst.mark_basis_cap_ppm, inst.liquidation_fee_ppm, inst.funding_interval_s,
            inst.funding_interest_e8, inst.funding_clamp_e8, inst.funding_cap_e8,
            inst.impact_notional, inst.margin_call_levels)


def _collateral(inst: Instrument) -> tuple:
    return (inst.settlement_asset, inst.settlement_decimals) if inst.margined else ()


def plan(engine: Any, configured: Sequence[Instrument]) -> list[ConfigureInstrument]:
    """The commands that bring ``engine``'s instruments to ``configured`` (see module
    docstring); raises InstrumentConfigError."""
    current = {m.symbol: m.instrument for m in engine.markets.values()}
    wanted = {i.symbol: i for i in configured}
    gone = sorted(set(current) - set(wanted))
    if gone:
        raise InstrumentConfigError(
            f"instrument(s) {', '.join(gone)} are listed in the journal but have no "
            "[INSTRUMENT] section: delisting is not supported; keep the section (Status=halted "
            "stops trading)")
    commands = []
    for inst in configured:
        old = current.get(inst.symbol)
        if old is None:
            commands.append(instrument_command(inst))
            continue
        if _rules(old) == _rules(inst):
            continue
        grid = (Decimal(old.tick_size), Decimal(old.lot_size), old.multiplier)
        if grid != (Decimal(inst.tick_size), Decimal(inst.lot_size), inst.multiplier):
            in_use = _in_use(engine, inst.symbol)
            if in_use:
                raise InstrumentConfigError(
                    f"[INSTRUMENT] {inst.symbol}: TickSize/LotSize/Multiplier "
                    f"{old.tick_size}/{old.lot_size}/{old.multiplier} -> "
                    f"{inst.tick_size}/{inst.lot_size}/{inst.multiplier} refused: {in_use} "
                    "(prices and quantities are held in ticks and lots); cancel the orders and "
                    "close the positions first, or keep the old values")
        if _collateral(old) and _collateral(old) != _collateral(inst):
            in_use = _in_use(engine, inst.symbol)
            if in_use:
                was = "{} ({} decimals)".format(*_collateral(old))
                now = ("{} ({} decimals)".format(*_collateral(inst)) if inst.margined
                       else "no margin (MaxLeverage removed)")
                raise InstrumentConfigError(
                    f"[INSTRUMENT] {inst.symbol}: settlement {was} -> {now} refused: {in_use} "
                    "hold collateral in it; cancel the orders and close the positions first, "
                    "or keep the old values")
        commands.append(instrument_command(inst))
    return commands


def _in_use(engine: Any, symbol: str) -> str:
    orders = sum(1 for o in engine.orders.values() if o.symbol == symbol)
    positions = sum(1 for p in engine.markets[symbol].positions.values() if p)
    parts = []
    if orders:
        parts.append(f"{orders} live order(s)")
    if positions:
        parts.append(f"{positions} open position(s)")
    return " and ".join(parts)


def first_commands(journal_path: str) -> list[Any] | None:
    """The commands of the journal's first record, or None if it has none."""
    directory = JournalDirectory(journal_path, fsync=False)
    if not directory.segments():
        return None
    for record in directory.read_records(1):
        return [command for _, command in record.entries]
    return None


def genesis_instruments(first_commands: Iterable[Any] | None) -> list[Instrument]:
    """The instruments a fresh engine starts with before the journal is replayed: none for a
    journal that lists its instruments (it starts with ConfigureInstrument commands) or an
    empty one; the built-in demo set for a journal written before instruments were
    journaled."""
    if first_commands is None:
        return []
    for command in first_commands:
        if type(command).__name__ == "Tick":
            continue
        return [] if type(command) is ConfigureInstrument else demo_instruments()
    return []
