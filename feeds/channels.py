"""Channel names: parsing, validation and the canonical spelling.

``orderbook@SYMBOL[@DEPTH]`` (DEPTH 5, 20 or full; omitted means full),
``trades@SYMBOL``, ``ticker@SYMBOL``, ``kline@SYMBOL@INTERVAL`` (1m 5m 15m 1h 4h 1d),
``status@SYMBOL`` (the instrument's trading status), ``markPrice@SYMBOL`` (index, mark and
funding), ``liquidations@SYMBOL`` (liquidation orders, public: no accounts).
Canonical names always spell the depth: ``orderbook@BTC-PERP`` is ``orderbook@BTC-PERP@full``.
"""

from __future__ import annotations

from collections.abc import Container
from enum import IntEnum
from typing import NamedTuple

from feeds.diffs import FULL_DEPTH
from feeds.kline import INTERVALS

ORDERBOOK = "orderbook"
TRADES = "trades"
TICKER = "ticker"
KLINE = "kline"
STATUS = "status"
MARK_PRICE = "markPrice"
LIQUIDATIONS = "liquidations"
KINDS = (ORDERBOOK, TRADES, TICKER, KLINE, STATUS, MARK_PRICE, LIQUIDATIONS)

DEPTH_NAMES = {"5": 5, "20": 20, "full": FULL_DEPTH}
_DEPTH_SPELLING = {v: k for k, v in DEPTH_NAMES.items()}


class ErrorCode(IntEnum):
    """Error codes of ``{"event":"error"}`` replies (see spec/websocket-feed.md)."""

    BAD_JSON = 1
    BAD_REQUEST = 2
    UNKNOWN_OP = 3
    UNKNOWN_CHANNEL = 4
    UNKNOWN_SYMBOL = 5
    BAD_DEPTH = 6
    BAD_INTERVAL = 7
    ALREADY_SUBSCRIBED = 8
    NOT_SUBSCRIBED = 9
    TOO_MANY_SUBSCRIPTIONS = 10
    BAD_FORMAT = 11


class ChannelError(ValueError):
    """A channel name that does not name a channel; ``code`` says which part is wrong."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Channel(NamedTuple):
    """A parsed channel: kind, symbol, parameter (depth int or interval name, else None)."""

    kind: str
    symbol: str
    param: object

    @property
    def name(self) -> str:
        """Canonical channel name."""
        if self.kind == ORDERBOOK:
            return f"{ORDERBOOK}@{self.symbol}@{_DEPTH_SPELLING[self.param]}"  # type: ignore
        if self.kind == KLINE:
            return f"{KLINE}@{self.symbol}@{self.param}"
        return f"{self.kind}@{self.symbol}"


def parse_channel(name: object, symbols: Container[str]) -> Channel:
    """Parse and validate a channel name against the known symbols (raises ChannelError)."""
    if not isinstance(name, str):
        raise ChannelError(ErrorCode.BAD_REQUEST, "channel names must be strings")
    parts = name.split("@")
    kind = parts[0]
    if kind not in KINDS or len(parts) < 2:
        raise ChannelError(
            ErrorCode.UNKNOWN_CHANNEL,
            f"unknown channel {name[:100]!r}: expected one of "
            "orderbook@SYMBOL[@5|@20|@full], trades@SYMBOL, ticker@SYMBOL, "
            "kline@SYMBOL@INTERVAL, status@SYMBOL, markPrice@SYMBOL, liquidations@SYMBOL",
        )
    symbol = parts[1]
    if symbol not in symbols:
        raise ChannelError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {symbol[:40]!r}")
    if kind == ORDERBOOK:
        if len(parts) == 2:
            return Channel(ORDERBOOK, symbol, FULL_DEPTH)
        if len(parts) == 3 and parts[2] in DEPTH_NAMES:
            return Channel(ORDERBOOK, symbol, DEPTH_NAMES[parts[2]])
        raise ChannelError(
            ErrorCode.BAD_DEPTH, f"bad depth in {name[:100]!r}: expected 5, 20 or full"
        )
    if kind == KLINE:
        if len(parts) == 3 and parts[2] in INTERVALS:
            return Channel(KLINE, symbol, parts[2])
        raise ChannelError(
            ErrorCode.BAD_INTERVAL,
            f"bad interval in {name[:100]!r}: expected one of {', '.join(INTERVALS)}",
        )
    if len(parts) != 2:
        raise ChannelError(
            ErrorCode.UNKNOWN_CHANNEL, f"unknown channel {name[:100]!r}: {kind} takes no parameter"
        )
    return Channel(kind, symbol, None)
