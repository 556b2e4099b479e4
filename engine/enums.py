"""Enumerations shared by commands, events and the matcher.

Integer values follow FIX 4.4 where FIX has the concept (Side, OrdType, TimeInForce), so the
order-entry layer can map them one to one. All are ``IntEnum`` so they pack into msgpack and
the state hash as plain integers.
"""

from __future__ import annotations

from enum import IntEnum


class Side(IntEnum):
    """Order side (FIX tag 54)."""

    BUY = 1
    SELL = 2


class OrdType(IntEnum):
    """Order type (FIX tag 40; take-profit types have no FIX 4.4 code and use letters' ords)."""

    MARKET = 1
    LIMIT = 2
    STOP = 3  # stop-market: triggered by the last trade price, enters as a market order
    STOP_LIMIT = 4  # triggered, enters as a limit order
    TAKE_PROFIT = 5  # triggered in the opposite direction to a stop, enters as market
    TAKE_PROFIT_LIMIT = 6  # triggered like TAKE_PROFIT, enters as a limit order


class TimeInForce(IntEnum):
    """Time in force (FIX tag 59)."""

    DAY = 0
    GTC = 1
    IOC = 3
    FOK = 4
    GTD = 6


class StpMode(IntEnum):
    """Self-trade prevention: what happens when an order would trade with its own account."""

    CANCEL_NEWEST = 1  # cancel the incoming (taker) remainder
    CANCEL_OLDEST = 2  # cancel the resting (maker) order, keep matching
    CANCEL_BOTH = 3  # cancel both
    DECREMENT_AND_CANCEL = 4  # reduce both by the smaller quantity; the smaller one is canceled


class InstrumentStatus(IntEnum):
    """Trading status of an instrument.

    TRADING: everything allowed. HALTED: new orders, replaces and cancels are rejected (the book
    is frozen; only mass cancel and expiry still remove orders). CANCEL_ONLY: cancels and mass
    cancels only. POST_ONLY: new orders and replaces are accepted only if they do not take
    liquidity (market orders are rejected, crossing limit orders are rejected).
    """

    TRADING = 1
    HALTED = 2
    CANCEL_ONLY = 3
    POST_ONLY = 4


class RejectReason(IntEnum):
    """Why a command was rejected; each names the rule it broke."""

    UNKNOWN_SYMBOL = 1
    INSTRUMENT_HALTED = 2
    INSTRUMENT_CANCEL_ONLY = 3
    INSTRUMENT_POST_ONLY = 4
    INVALID_SIDE = 5
    INVALID_ORDER_TYPE = 6
    INVALID_QTY = 7  # zero or negative
    QTY_BELOW_MIN = 8
    QTY_ABOVE_MAX = 9
    INVALID_PRICE = 10  # zero or negative limit price
    PRICE_OUTSIDE_BAND = 11
    INVALID_STOP_PRICE = 12
    INVALID_TIF = 13
    INVALID_EXPIRE_TIME = 14  # GTD without an expiry, or one already past
    POST_ONLY_WOULD_TAKE = 15
    POST_ONLY_INVALID = 16  # post-only on a market, stop, IOC or FOK order
    REDUCE_ONLY_WOULD_INCREASE = 17
    INVALID_DISPLAY_QTY = 18
    INVALID_MIN_QTY = 19
    UNKNOWN_ORDER = 20  # no such live order for this account
    NO_REFERENCE_PRICE = 21  # a market order with no last trade, no mid and no configured one
    PRICE_NOT_ON_TICK = 22  # used by the decimal edge (Instrument.price_to_ticks)
    QTY_NOT_ON_LOT = 23  # used by the decimal edge (Instrument.qty_to_lots)
    INVALID_STP_MODE = 24
    DUPLICATE_ORDER_ID = 25  # a NewOrder whose seq is already a live order id
    INVALID_STATUS = 26  # SetInstrumentStatus with an unknown status
    KILL_SWITCH_ACTIVE = 27  # the account's firm has its kill switch on
    INVALID_DAY_OFFSET = 28  # SetTradingDay with an offset outside [0, one day)
    INVALID_INSTRUMENT = 29  # ConfigureInstrument with rules that do not make sense
    INSTRUMENT_IN_USE = 30  # a tick/lot/multiplier change while orders or positions exist
    INSUFFICIENT_MARGIN = 31  # available balance does not cover the margin (see shortfall)
    RISK_LIMIT_EXCEEDED = 32  # the position the order could produce exceeds the leverage's tier
    INVALID_LEVERAGE = 33  # leverage outside 1..the instrument's maximum
    MARGIN_MODE_CHANGE_UNSAFE = 34  # a margin mode change with an open position or orders
    INVALID_AMOUNT = 35  # a deposit, withdrawal or margin transfer that is not a positive int
    NOT_MARGINED = 36  # a risk request for an instrument without risk parameters
    NO_ISOLATED_POSITION = 37  # isolated margin change without an open isolated position
    INVALID_INDEX_PRICE = 38  # an index price that is not a positive number of ticks
    UNKNOWN_ASSET = 39  # a deposit or withdrawal in an asset no instrument settles in
    INVALID_MARGIN_MODE = 40
    MARGINED_INSTRUMENT = 41  # SetPosition on a margined instrument (positions come from trades)
    INVALID_TRIGGER = 42  # an unknown trigger price type, or mark where there is no mark


class CancelReason(IntEnum):
    """Why a live order ended without being filled (or was reduced, for restatements)."""

    USER = 1
    IOC_REMAINDER = 2  # IOC remainder, or a market order that exhausted the book
    STP = 3
    REDUCE_ONLY = 4
    EXPIRY = 5
    MASS_CANCEL = 6
    MARKET_PROTECTION = 7  # a market order stopped by the price band
    FOK_UNFILLED = 8  # a fill-or-kill order that could not fill completely
    MIN_QTY_UNFILLED = 9  # the minimum quantity was not available on entry
    PRICE_BAND = 10  # a triggered stop-limit whose limit price is outside the band
    POST_ONLY = 11  # a triggered order in a post-only instrument that would take
    KILL_SWITCH = 12  # the firm's kill switch was turned on
    CANCEL_ON_DISCONNECT = 13  # the owning session disconnected with cancel-on-disconnect
    OPERATOR = 14  # canceled by the exchange's operator
    INSUFFICIENT_MARGIN = 15  # a triggered stop the account's available balance cannot cover
    LIQUIDATION = 16  # the account is being liquidated (its orders are canceled first)
    INSTRUMENT_HALTED = 17  # a liquidation order in a halted or cancel-only instrument


class RequestKind(IntEnum):
    """Which request a RequestRejected answers."""

    CANCEL = 1
    REPLACE = 2
    MASS_CANCEL = 3
    ADMIN = 4  # SetInstrumentStatus, SetPosition, SetAccountStp
    DEPOSIT = 5
    WITHDRAW = 6
    LEVERAGE = 7
    MARGIN_MODE = 8
    ISOLATED_MARGIN = 9
    INDEX_PRICE = 10


class MarginMode(IntEnum):
    """How a position is margined: from the account's shared balance, or its own margin."""

    CROSS = 1
    ISOLATED = 2


class LedgerCause(IntEnum):
    """Why an account's balance changed (one balance-ledger entry each)."""

    DEPOSIT = 1
    WITHDRAWAL = 2
    REALISED_PNL = 3
    FEE = 4  # negative amounts are charges, positive ones rebates
    FUNDING = 5
    LIQUIDATION = 6
    INSURANCE = 7


class TransferKind(IntEnum):
    """How a liquidated position left its owner without a trade on the book."""

    TAKEOVER = 1  # taken over by the insurance fund at the bankruptcy price
    ADL = 2  # auto-deleveraged against an opposite position at the bankruptcy price


class TriggerBy(IntEnum):
    """Which price triggers a stop or take-profit order."""

    LAST = 1
    MARK = 2
