"""Bodies of the market-data messages: W, X entries, Y and y (field lists, values as bytes).

Every value is bytes already, so ``codec.encode_body`` takes its fast path, and prices and
quantities are decimal strings rendered from integer ticks and lots with the instrument's
tick and lot size (``feeds.numbers.UnitFormatter``: no Decimal on the hot path). Field order
inside each group entry follows the group's definition in spec/FIX44-exchange.xml, with
RptSeq (83) last: the exchange-wide update id (spec/market-data.md).

:func:`packed_group` encodes an X's NoMDEntries group once for every subscriber of the same
shape: the whole group travels as the value of its count field (``268=N<SOH>279=...``, the
encoder appends the final SOH), so a subscriber's message costs the header, its MDReqID and
one join, not a per-field encode of every entry. The bytes on the wire are exactly those of
the field-by-field encoding (the codec copies values as given; a value holding SOH is the
caller's business, and these hold only complete, encoded fields).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from engine.enums import InstrumentStatus
from engine.instruments import Instrument
from feeds.numbers import UnitFormatter
from fixserver.codec import FieldValue, encode_body
from fixserver.timeutil import format_utc_timestamp

Fields = list[tuple[int, FieldValue]]
RenderedLevel = tuple[bytes, bytes, bytes]
"""(price, size, number of orders) as wire values."""

BID = b"0"
OFFER = b"1"
TRADE = b"2"
NEW = b"0"
CHANGE = b"1"
DELETE = b"2"

#: engine status -> (SecurityTradingStatus 326, Text 58) in the SecurityList (y) and the
#: SecurityStatus (f). FIX 4.4 has no value for "cancel-only" or "post-only", so: cancel-only
#: is 18 NOT_AVAILABLE_FOR_TRADING (no new order is accepted, only cancels: the instrument
#: cannot be traded, yet it is not halted, 2, where cancels are refused too); post-only is 21
#: PRE_OPEN (orders that would not take are accepted and rest, nothing matches, as before an
#: opening). The Text names the exchange's status exactly, so nothing rests on the reading of
#: 18 and 21 alone.
TRADING_STATUS: dict[InstrumentStatus, tuple[bytes, bytes]] = {
    InstrumentStatus.TRADING: (b"17", b"trading"),  # READY_TO_TRADE
    InstrumentStatus.HALTED: (b"2", b"halted"),  # TRADING_HALT
    InstrumentStatus.CANCEL_ONLY: (b"18", b"cancel-only"),  # NOT_AVAILABLE_FOR_TRADING
    InstrumentStatus.POST_ONLY: (b"21", b"post-only"),  # PRE_OPEN: orders rest, none match
}


class InstrumentFormat:
    """One instrument's wire spellings: symbol, and ticks/lots as decimal strings."""

    __slots__ = ("price", "qty", "symbol")

    def __init__(self, instrument: Instrument) -> None:
        self.symbol = instrument.symbol.encode("latin-1")
        self.price = UnitFormatter(instrument.tick_size)
        self.qty = UnitFormatter(instrument.lot_size)

    def levels(self, levels: Iterable[tuple[int, int, int]]) -> list[RenderedLevel]:
        """Integer (price, qty, count) levels as wire values."""
        price, qty = self.price, self.qty
        return [(price(p).encode(), qty(q).encode(), b"%d" % c) for p, q, c in levels]


def snapshot_fields(
    md_req_id: str,
    symbol: bytes,
    update_id: int,
    bids: Sequence[RenderedLevel],
    offers: Sequence[RenderedLevel],
) -> Fields:
    """MarketDataSnapshotFullRefresh (W): the book at ``update_id``, best levels first."""
    seq = b"%d" % update_id
    fields: Fields = [(262, md_req_id.encode("latin-1")), (55, symbol),
                      (268, b"%d" % (len(bids) + len(offers)))]
    for entry_type, levels in ((BID, bids), (OFFER, offers)):
        for px, size, count in levels:
            fields += ((269, entry_type), (270, px), (271, size), (346, count), (83, seq))
    return fields


def level_entry(action: bytes, entry_type: bytes, symbol: bytes, px: bytes, size: bytes,
                count: bytes, seq: bytes) -> Fields:
    """One MDIncGrp entry of a price level: new, changed (with its aggregate) or deleted."""
    if action == DELETE:
        return [(279, DELETE), (269, entry_type), (55, symbol), (270, px), (83, seq)]
    return [(279, action), (269, entry_type), (55, symbol), (270, px), (271, size),
            (346, count), (83, seq)]


def trade_entry(symbol: bytes, trade_id: int, px: bytes, size: bytes, ts: int,
                seq: int) -> Fields:
    """One MDIncGrp entry of a trade (MDEntryID = the trade's id, as on the WebSocket feed)."""
    date, time = format_utc_timestamp(ts).split(b"-")
    return [(279, NEW), (269, TRADE), (278, b"%d" % trade_id), (55, symbol), (270, px),
            (271, size), (272, date), (273, time), (83, b"%d" % seq)]


def packed_group(count_tag: int, entries: Sequence[Fields]) -> tuple[int, bytes]:
    """A repeating group encoded once, as one field: ``(count_tag, b"N<SOH>tag=value...")``."""
    flat = [field for entry in entries for field in entry]
    return (count_tag, b"%d\x01%s" % (len(entries), encode_body(flat)[:-1]))


def reject_fields(md_req_id: str, reason: str | None, text: str) -> Fields:
    """MarketDataRequestReject (Y)."""
    fields: Fields = [(262, md_req_id.encode("latin-1"))]
    if reason is not None:
        fields.append((281, reason.encode("ascii")))
    fields.append((58, text.encode("latin-1")))
    return fields


def _product(units: int, unit: str) -> bytes:
    return str(Decimal(units) * Decimal(unit)).encode("ascii")


def security_entry(instrument: Instrument, status: InstrumentStatus) -> Fields:
    """One SecListGrp entry: a perpetual future with its tick, lot, limits and status."""
    code, text = TRADING_STATUS[status]
    return [
        (55, instrument.symbol.encode("latin-1")),
        (167, b"FUT"),
        (231, b"%d" % instrument.multiplier),
        (561, instrument.lot_size.encode("ascii")),
        (562, _product(instrument.min_qty, instrument.lot_size)),
        (58, text),
        (326, code),
        (969, instrument.tick_size.encode("ascii")),
        (1140, _product(instrument.max_qty, instrument.lot_size)),
    ]


def security_list_fields(
    security_req_id: str,
    response_id: str,
    result: str,
    entries: Sequence[Fields],
) -> Fields:
    """SecurityList (y), in one message (LastFragment Y); no group unless ``result`` is 0."""
    fields: Fields = [
        (320, security_req_id.encode("latin-1")),
        (322, response_id.encode("latin-1")),
        (560, result.encode("ascii")),
    ]
    if entries:
        fields += [(393, b"%d" % len(entries)), (893, b"Y"), (146, b"%d" % len(entries))]
        for entry in entries:
            fields += entry
    return fields
