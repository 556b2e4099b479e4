"""Engine commands that change who may trade and when, rather than matching orders.

- :class:`~engine.commands.KillSwitch`: a firm's kill switch. Turning it on cancels every live
  order of the firm's accounts (reason KILL_SWITCH) and blocks their new orders and replaces
  in the engine itself, so an order already in flight when the switch was thrown is rejected
  when its turn comes: the firm has no live orders from that command on, whatever the timing.
- :class:`~engine.commands.SessionStatus`: recorded only, so that a FIX session's
  cancel-on-disconnect choice is journaled and survives a restart.
- :class:`~engine.commands.AdminAction`: an operator's action outside the engine, accepted
  and recorded nowhere (the journal entry itself is the audit record).
- :class:`~engine.commands.SetTradingDay`: where the trading day rolls (DAY order expiry).
- :class:`~engine.commands.ConfigureInstrument`: list an instrument or change its rules (the
  operator's ``[INSTRUMENT]`` configuration is applied through it at start-up, so the engine's
  instruments and the configuration never diverge silently).

Each is a plain function ``(engine, command, events)`` like :func:`engine.replace.replace_order`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import attr

from engine.enums import CancelReason, InstrumentStatus, RejectReason, RequestKind
from engine.events import InstrumentConfigured, KillSwitchChanged
from engine.instruments import PPM, Instrument
from engine.market import Market

DAY_NS = 86_400 * 1_000_000_000
_RISK_FIELDS = ("settlement_asset", "settlement_decimals", "max_leverage", "default_leverage",
                "risk_tiers", "mark_interval_ms", "mark_smoothing", "mark_basis_cap_ppm",
                "liquidation_fee_ppm", "funding_interval_s", "funding_interest_e8",
                "funding_clamp_e8", "funding_cap_e8", "impact_notional", "margin_call_levels")


def kill_switch(eng: Any, c: Any, ev: list) -> None:
    """Switch ``c.firm``'s kill switch; on: cancel its accounts' orders and block them."""
    accounts = tuple(sorted(str(a) for a in c.accounts))
    if c.active:
        eng.killed[c.firm] = accounts
    else:
        eng.killed.pop(c.firm, None)
    eng.blocked = {a for accts in eng.killed.values() for a in accts}
    canceled = 0
    if c.active:
        blocked = set(accounts)
        victims = sorted((o for o in eng.orders.values() if o.account in blocked),
                         key=lambda o: o.id)
        for o in victims:
            eng._cancel(eng.markets[o.symbol], o, CancelReason.KILL_SWITCH, c.seq, c.ts, ev)
        canceled = len(victims)
    ev.append(KillSwitchChanged(c.seq, c.ts, c.firm, accounts, bool(c.active), canceled))
    eng._finish_all(c.seq, c.ts, ev)


def session_status(eng: Any, c: Any, ev: list) -> None:
    """Record a FIX session's connection state and cancel-on-disconnect choice."""
    eng.sessions[str(c.session_id)] = (bool(c.connected), bool(c.cancel_on_disconnect))


def admin_action(eng: Any, c: Any, ev: list) -> None:
    """An operator's audit record: no state, no events (the journal holds it)."""


def set_trading_day(eng: Any, c: Any, ev: list) -> None:
    """Move the trading-day boundary (DAY expiry) for orders entered from now on."""
    offset = c.day_offset_ns
    if not isinstance(offset, int) or not 0 <= offset < DAY_NS:
        eng._request_reject(c, RequestKind.ADMIN, 0, None, RejectReason.INVALID_DAY_OFFSET, ev)
        return
    eng.day_offset_ns = offset


def configure_instrument(eng: Any, c: Any, ev: list) -> None:
    """List an instrument or change its rules (see ConfigureInstrument)."""
    reason = _instrument_problem(c)
    m = eng.markets.get(c.symbol)
    risk_fields = {name: getattr(c, name) for name in _RISK_FIELDS}
    if not reason:
        try:
            candidate = Instrument(c.symbol, c.tick_size, c.lot_size, c.min_qty, c.max_qty,
                                   c.multiplier, c.maker_fee_ppm, c.taker_fee_ppm,
                                   c.price_band_ppm, c.reference_price,
                                   InstrumentStatus(c.status), **risk_fields)
            reason = eng.risk.problem(candidate)
        except (TypeError, ValueError):
            reason = RejectReason.INVALID_INSTRUMENT
    if reason:
        eng._request_reject(c, RequestKind.ADMIN, 0, None, reason, ev)
        return
    if m is None:
        inst = candidate
        eng.instruments.append(inst)
        eng.markets[inst.symbol] = Market(inst, eng.book_factory(inst.symbol))
        eng.risk.configure(inst)
        ev.append(InstrumentConfigured(c.seq, c.ts, inst.symbol, inst, True))
        return
    old = m.instrument
    if old.max_leverage and not c.max_leverage and (
            any(p for p in m.positions.values())
            or any(o.symbol == c.symbol for o in eng.orders.values())):
        # unmargining an instrument with open positions or orders would strand their margin
        eng._request_reject(c, RequestKind.ADMIN, 0, None, RejectReason.INSTRUMENT_IN_USE, ev)
        return
    grid_changed = (Decimal(c.tick_size) != Decimal(old.tick_size)
                    or Decimal(c.lot_size) != Decimal(old.lot_size)
                    or c.multiplier != old.multiplier)
    if grid_changed and (any(p for p in m.positions.values())
                         or any(o.symbol == c.symbol for o in eng.orders.values())):
        eng._request_reject(c, RequestKind.ADMIN, 0, None, RejectReason.INSTRUMENT_IN_USE, ev)
        return
    inst = attr.evolve(old, tick_size=c.tick_size, lot_size=c.lot_size, min_qty=c.min_qty,
                       max_qty=c.max_qty, multiplier=c.multiplier,
                       maker_fee_ppm=c.maker_fee_ppm, taker_fee_ppm=c.taker_fee_ppm,
                       price_band_ppm=c.price_band_ppm, reference_price=c.reference_price,
                       **risk_fields)
    m.instrument = inst
    eng.risk.configure(inst)
    m.reset_band()
    if grid_changed:
        m.last_price = 0  # in ticks of the old grid: the band falls back to the new reference
    eng.instruments = [inst if i.symbol == inst.symbol else i for i in eng.instruments]
    ev.append(InstrumentConfigured(c.seq, c.ts, inst.symbol, inst, False))


def _instrument_problem(c: Any) -> RejectReason | None:
    try:
        tick, lot = Decimal(c.tick_size), Decimal(c.lot_size)
    except (InvalidOperation, TypeError, ValueError):
        return RejectReason.INVALID_INSTRUMENT
    ints = (c.min_qty, c.max_qty, c.multiplier, c.maker_fee_ppm, c.taker_fee_ppm,
            c.price_band_ppm, c.reference_price)
    if (not c.symbol or not isinstance(c.symbol, str) or not tick.is_finite() or tick <= 0
            or not lot.is_finite() or lot <= 0
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
            or not 1 <= c.min_qty <= c.max_qty or c.multiplier < 1
            or not 0 <= c.price_band_ppm < PPM or c.reference_price < 0
            or not -PPM < c.maker_fee_ppm < PPM or not -PPM < c.taker_fee_ppm < PPM):
        return RejectReason.INVALID_INSTRUMENT
    try:
        InstrumentStatus(c.status)
    except ValueError:
        return RejectReason.INVALID_STATUS
    return None
