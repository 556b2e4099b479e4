"""Firms and accounts: who may trade what (from the ``[FIRM]``/``[ACCOUNT]`` config sections).

A firm owns accounts; an order-entry session belongs to one firm (its ``Firm`` setting) and
trades only that firm's accounts; a drop-copy session of a firm receives a copy of every
ExecutionReport on the firm's accounts. ``max_open_orders`` limits the live orders of one
account (0: no limit).
"""

from __future__ import annotations

from collections.abc import Iterable

import attr


@attr.s(frozen=True, slots=True, auto_attribs=True)
class AccountSettings:
    """One tradable account of a firm."""

    account: str
    firm: str
    #: live orders this account may have at once; 0 = unlimited
    max_open_orders: int = 0


@attr.s(frozen=True, slots=True, auto_attribs=True)
class FirmSettings:
    """One member firm and its accounts."""

    firm: str
    accounts: tuple[AccountSettings, ...] = ()


class FirmDirectory:
    """Lookups over the configured firms: an account's firm, a firm's accounts, limits."""

    def __init__(self, firms: Iterable[FirmSettings]) -> None:
        self.firms: dict[str, FirmSettings] = {}
        self.accounts: dict[str, AccountSettings] = {}
        for firm in firms:
            if firm.firm in self.firms:
                raise ValueError(f"firm {firm.firm} is configured twice")
            self.firms[firm.firm] = firm
            for account in firm.accounts:
                if account.account in self.accounts:
                    raise ValueError(f"account {account.account} belongs to two firms")
                self.accounts[account.account] = account

    def firm_of(self, account: str) -> str | None:
        """The firm owning ``account`` (None if the account is not configured)."""
        settings = self.accounts.get(account)
        return settings.firm if settings is not None else None

    def accounts_of(self, firm: str | None) -> tuple[str, ...]:
        """The firm's account ids, in configuration order (empty for an unknown firm)."""
        settings = self.firms.get(firm) if firm is not None else None
        return tuple(a.account for a in settings.accounts) if settings is not None else ()

    def may_trade(self, firm: str | None, account: str) -> bool:
        """True if a session of ``firm`` may send orders for ``account``."""
        return firm is not None and self.firm_of(account) == firm

    def max_open_orders(self, account: str) -> int:
        """The account's open-order limit (0: none)."""
        settings = self.accounts.get(account)
        return settings.max_open_orders if settings is not None else 0

    def account_map(self) -> dict[str, str]:
        """account id -> firm id (what fixserver.pg.seed takes)."""
        return {a: s.firm for a, s in self.accounts.items()}
