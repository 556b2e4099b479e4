"""Risk command handlers, ``(engine, command, events)`` like engine.controls: each hands
the command to the engine's :class:`~engine.risk.book.RiskBook`."""

from __future__ import annotations

from typing import Any


def deposit(eng: Any, c: Any, ev: list) -> None:
    """Deposit: credit collateral."""
    eng.risk.deposit(c, ev)


def withdraw(eng: Any, c: Any, ev: list) -> None:
    """Withdraw: debit collateral unless it would leave the account under margin."""
    eng.risk.withdraw(c, ev)


def set_leverage(eng: Any, c: Any, ev: list) -> None:
    """SetLeverage."""
    eng.risk.set_leverage(c, ev)


def set_margin_mode(eng: Any, c: Any, ev: list) -> None:
    """SetMarginMode."""
    eng.risk.set_margin_mode(c, ev)


def adjust_isolated_margin(eng: Any, c: Any, ev: list) -> None:
    """AdjustIsolatedMargin."""
    eng.risk.adjust_isolated(c, ev)


def set_index_price(eng: Any, c: Any, ev: list) -> None:
    """SetIndexPrice."""
    eng.risk.set_index(c, ev)
