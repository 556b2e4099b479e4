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

Each is a plain function ``(engine, command, events)`` like :func:`engine.replace.replace_order`.
"""

from __future__ import annotations

from typing import Any

from engine.enums import CancelReason, RejectReason, RequestKind
from engine.events import KillSwitchChanged

DAY_NS = 86_400 * 1_000_000_000


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
