"""``[FUNDING]`` sections: collateral the configured accounts start with (demo venues).

One section per asset and amount::

    [FUNDING]
    Accounts=ACME-1,ACME-2,BETA-1
    Asset=USDT
    Amount=1000000

``Amount`` is a decimal in units of ``Asset`` (exact to its ``SettlementDecimals``), which
must be the settlement asset of a margined ``[INSTRUMENT]`` (the engine knows no other);
every account must be configured (``[FIRM]``/``[ACCOUNT]``) and is funded once per asset.

At start-up the order-entry wiring journals one ``Deposit`` (ref ``config-funding``) for each
funded account that has never had a collateral record in that asset in the engine
(:func:`funding_deposits`): the first start funds the demo accounts, a restart funds nobody
again, and an account the operator funded (or that traded) first is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import attr

from engine.commands import Deposit
from engine.instruments import Instrument

#: the Deposit ref of start-up funding (the ledger shows where the money came from)
FUNDING_REF = "config-funding"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Funding:
    """An account's start-up collateral: ``amount`` minor units of ``asset``."""

    account: str
    asset: str
    amount: int


def _accounts(value: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in value.split(","))
    if not all(names):
        raise ValueError("expected comma-separated account ids")
    return names


def _asset(value: str) -> str:
    if not value.isalnum() or not value.isupper():
        raise ValueError("expected an asset code such as USDT")
    return value


def _amount(value: str) -> Decimal:
    try:
        number = Decimal(value.replace("_", ""))
    except InvalidOperation:
        raise ValueError("expected a positive decimal amount of the asset") from None
    if not number.is_finite() or number <= 0:
        raise ValueError("expected a positive decimal amount of the asset")
    return number


#: key -> parser
FUNDING_KEYS: dict[str, Callable[[str], Any]] = {
    "Accounts": _accounts,
    "Asset": _asset,
    "Amount": _amount,
}
REQUIRED_FUNDING_KEYS = ("Accounts", "Asset", "Amount")


def settlement_assets(instruments: Iterable[Instrument]) -> dict[str, int]:
    """Settlement asset -> decimals of the margined instruments."""
    return {i.settlement_asset: i.settlement_decimals for i in instruments if i.margined}


def to_minor_units(amount: Decimal, decimals: int) -> int | None:
    """``amount`` asset units in minor units, or None if it has more than ``decimals``."""
    minor = amount * (Decimal(10) ** decimals)
    return int(minor) if minor == minor.to_integral_value() else None


def build_funding(values: dict[str, Any], accounts: Iterable[str],
                  assets: Mapping[str, int], fail: Callable[[str, str], Exception]
                  ) -> list[Funding]:
    """One section's Funding rows; ``fail(key, message)`` builds the error to raise."""
    asset = values["Asset"]
    if asset not in assets:
        known = ", ".join(sorted(assets)) or "none: no [INSTRUMENT] has MaxLeverage"
        raise fail("Asset", f"no margined [INSTRUMENT] settles in {asset} (settlement "
                            f"assets: {known})")
    minor = to_minor_units(values["Amount"], assets[asset])
    if minor is None:
        raise fail("Amount", f"{asset} has {assets[asset]} decimals (SettlementDecimals)")
    known_accounts = set(accounts)
    for account in values["Accounts"]:
        if account not in known_accounts:
            raise fail("Accounts", f"account {account} is not configured in a [FIRM] or "
                                   "[ACCOUNT] section")
    return [Funding(account, asset, minor) for account in values["Accounts"]]


def funding_deposits(funding: Iterable[Funding], has_record: Callable[[str, str], bool]
                     ) -> list[Deposit]:
    """The start-up Deposits: one per funded account without a collateral record in its
    asset (``has_record(account, asset)``, the engine's state as recovered)."""
    return [Deposit(0, 0, f.account, f.asset, f.amount, FUNDING_REF)
            for f in funding if not has_record(f.account, f.asset)]
