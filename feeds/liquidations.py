"""Liquidations as the feed publishes them: one symbol's ``liquidations`` channel.

Theory of operation
-------------------
When the engine liquidates an account (or an isolated position) it closes the position in
steps, each an IOC reduce-only *liquidation order* through the book at the bankruptcy price
and, for what the book did not take, a transfer to the insurance fund or to deleveraged
counterparties; each step ends with one ``Liquidated`` event. The channel publishes each
step as it happened to the market: the symbol, the liquidation order's side, the quantity
the step closed, and a price: the average price of the step's book fills (``notional /
filled``, rounded to the nearest tick, half up), or the bankruptcy price when the book took
nothing. The command seq ``u`` and engine time ``ts`` are the tick's. It says nothing about
who was liquidated (no account, no fee, no split between fund and deleveraging): the feed is
public, and the owner learns the rest from its ExecutionReports.

Unlike the other channels, a batch may carry several messages of one liquidations channel:
one per step, in engine order, because each step is an event of its own (like a trade) and
the wire carries it whole rather than as a list to unpack. Steps are rare (only under
maintenance margin), so this costs nothing in practice. Each message is built once and
encoded once per format for every subscriber and Redis, like every other message.

A new subscriber gets a ``snapshot``: the latest :data:`RECENT_LIQUIDATIONS` steps, oldest
first, as the ``data`` entries (the same fields as a live message without ``channel``,
``type`` and ``symbol``). What is kept is bounded (a deque), and it starts empty when the
process starts: past liquidations are not recovered after a restart (the journal has them,
but the feed does not replay history it was not there for; a client that needs them has its
own record of the channel). The entries' ``id`` (the liquidation order id, unique per step)
lets a client that gets a snapshot again (a feed process re-bootstrapping from Redis) drop
the steps it has already seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from engine.enums import Side

#: steps a new subscriber's snapshot holds (and the Redis key keeps)
RECENT_LIQUIDATIONS = 20

LIQUIDATION = "liquidation"  # the ``type`` of a live message
SNAPSHOT = "snapshot"  # the ``type`` of the subscribe-time message

_SIDE_NAMES = {Side.BUY: "buy", Side.SELL: "sell"}
_ENVELOPE_FIELDS = ("channel", "type", "symbol")


def average_price_ticks(notional: int, filled: int) -> int:
    """``notional / filled`` (ticks*lots over lots) rounded to the nearest tick, half up."""
    return (2 * notional + filled) // (2 * filled)


def entry_of(message: dict) -> dict:
    """A live message's fields as a snapshot ``data`` entry (the envelope fields dropped)."""
    return {k: v for k, v in message.items() if k not in _ENVELOPE_FIELDS}


def snapshot_payload(channel: str, symbol: str, entries: Iterable[dict]) -> dict:
    """The ``snapshot`` message of a liquidations channel (``entries`` oldest first)."""
    return {"channel": channel, "type": SNAPSHOT, "symbol": symbol, "data": list(entries)}


class LiquidationFeed:
    """One symbol's liquidation steps: queued for the next flush, and the latest kept."""

    __slots__ = ("_price", "_qty", "channel", "pending", "recent", "symbol")

    def __init__(self, symbol: str, channel: str, price: Callable[[int], str],
                 qty: Callable[[int], str], keep: int = RECENT_LIQUIDATIONS) -> None:
        self.symbol = symbol
        self.channel = channel
        self._price = price  # ticks -> decimal string
        self._qty = qty  # lots -> decimal string
        self.pending: list[dict] = []  # live message payloads not yet published
        self.recent: deque[dict] = deque(maxlen=keep)  # snapshot entries of published steps

    def on_liquidated(self, seq: int, ts: int, side: Side, qty: int, filled: int,
                      notional: int, bankruptcy_price: int, order_id: int) -> None:
        """A released ``Liquidated`` step of this symbol (published at the next flush)."""
        ticks = average_price_ticks(notional, filled) if filled else bankruptcy_price
        self.pending.append({
            "channel": self.channel, "type": LIQUIDATION, "symbol": self.symbol,
            "id": order_id, "side": _SIDE_NAMES[side], "price": self._price(ticks),
            "qty": self._qty(qty), "u": seq, "ts": ts})

    def take_updates(self) -> list[dict]:
        """The live messages to publish in this batch (engine order); from now on the
        snapshot holds them too."""
        out, self.pending = self.pending, []
        self.recent.extend(entry_of(m) for m in out)
        return out

    def snapshot(self) -> dict:
        """The ``snapshot`` payload: the latest published steps, oldest first (a step still
        queued is not in it: the subscriber gets it live at the next flush, once)."""
        return snapshot_payload(self.channel, self.symbol, self.recent)
