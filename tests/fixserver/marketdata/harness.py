"""Market-data test harness: a real engine and feed hub, recording sessions, a FIX client
book rebuilt strictly from W and X, and the dictionary the market-data messages need."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from engine.enums import Side
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.core import FeedCore
from feeds.hub import FeedHub
from feeds.numbers import UnitFormatter
from fixserver.codec import FixMessage, encode_body
from fixserver.dictionary import spec_path
from fixserver.marketdata import build_market_data_application
from fixserver.settings import SessionRole, SessionSettings
from tests.feeds.orderflow import OrderFlow

T0 = 1_700_000_000 * 10**9
INSTRUMENTS = demo_instruments()
FORMATTERS = {
    i.symbol: (UnitFormatter(i.tick_size), UnitFormatter(i.lot_size)) for i in INSTRUMENTS
}


class RecordingSession:
    """Stands in for fixserver.session.Session: records (msg_type, fields) of each send."""

    def __init__(self, name: str = "MD1", role: SessionRole = SessionRole.MARKET_DATA) -> None:
        self.settings = SessionSettings("FIX.4.4", "EXCH", name, role=role)
        self.connection: object | None = object()  # "logged on"
        self.sent: list[tuple[str, list]] = []
        self.raw_fields: list[list] = []  # the fields as given to send()

    def send(self, msg_type: str, fields: list, now_ns: int, reply_to: Any = None,
             header: Any = ()) -> int:
        self.raw_fields.append(list(fields))
        # as the wire has them: a packed group comes out as its own fields
        wire = encode_body(fields)[:-1].split(b"\x01")
        self.sent.append((msg_type, [(int(t), v) for t, _, v in (f.partition(b"=")
                                                                  for f in wire)]))
        return len(self.sent)

    def take(self) -> list[tuple[str, list]]:
        out, self.sent, self.raw_fields = self.sent, [], []
        return out


def msg(msg_type: str, *pairs: tuple[int, object], seq: int = 1) -> FixMessage:
    fields = [(8, b"FIX.4.4"), (35, msg_type.encode()), (34, str(seq).encode())]
    fields += [(tag, str(value).encode()) for tag, value in pairs]
    return FixMessage(fields)


def md_request(req_id: str, kind: str = "1", depth: int | str = 0,
               types: Iterable[str] = ("0", "1", "2"), symbols: Iterable[str] = ("BTC-PERP",),
               *extra: tuple[int, object]) -> FixMessage:
    """A MarketDataRequest (V) with the given groups."""
    types, symbols = list(types), list(symbols)
    pairs: list[tuple[int, object]] = [(262, req_id), (263, kind), (264, depth), *extra,
                                       (267, len(types))]
    pairs += [(269, t) for t in types]
    pairs.append((146, len(symbols)))
    pairs += [(55, s) for s in symbols]
    return msg("V", *pairs)


def value(fields: list, tag: int) -> str | None:
    for t, v in fields:
        if t == tag:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def entries(fields: list, count_tag: int = 268) -> list[dict[int, str]]:
    """The group entries after ``count_tag`` (each starts at the group's first tag)."""
    out: list[dict[int, str]] = []
    start = None
    for index, (tag, _) in enumerate(fields):
        if tag == count_tag:
            start = index + 1
            break
    assert start is not None, f"no {count_tag} in {fields}"
    delimiter = fields[start][0] if start < len(fields) else None
    for tag, v in fields[start:]:
        text = v.decode() if isinstance(v, bytes) else str(v)
        if tag == delimiter:
            out.append({})
        assert tag not in out[-1], f"tag {tag} twice in an entry"
        out[-1][tag] = text
    assert len(out) == int(value(fields, count_tag) or 0)
    return out


class ClientBook:
    """What a FIX client holds per symbol: a book from W, changed strictly by X (a New for a
    price held, or a Change or Delete for a price not held, fails), plus the trades seen."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
        self.trades: list[dict[int, str]] = []
        self.rpt_seqs: list[int] = []

    def apply(self, msg_type: str, fields: list) -> None:
        if msg_type == "W":
            symbol = value(fields, 55)
            assert symbol is not None
            book: dict[str, dict[str, tuple[str, str]]] = {"0": {}, "1": {}}
            for e in entries(fields):
                assert e[270] not in book[e[269]]
                book[e[269]][e[270]] = (e[271], e[346])
            self.books[symbol] = book
        elif msg_type == "X":
            for e in entries(fields):
                self.rpt_seqs.append(int(e[83]))
                if e[269] == "2":
                    self.trades.append(e)
                    continue
                side = self.books[e[55]][e[269]]
                action, px = e[279], e[270]
                if action == "0":
                    assert px not in side, f"New for a price held: {e}"
                    side[px] = (e[271], e[346])
                elif action == "1":
                    assert px in side, f"Change for a price not held: {e}"
                    side[px] = (e[271], e[346])
                else:
                    assert action == "2" and px in side, f"Delete for a price not held: {e}"
                    assert 271 not in e
                    del side[px]

    def levels(self, symbol: str) -> list[list[tuple[str, str, int]]]:
        """(bids best first, offers best first) as (price, size, count) strings."""
        book = self.books[symbol]
        bids = sorted(book["0"].items(), key=lambda kv: -float(kv[0]))
        offers = sorted(book["1"].items(), key=lambda kv: float(kv[0]))
        return [[(p, s, int(c)) for p, (s, c) in side] for side in (bids, offers)]


def engine_levels(engine: MatchingEngine, symbol: str, depth: int = 0) -> list:
    """The engine's L2 book of a symbol as wire strings, best first (depth 0: all)."""
    price, qty = FORMATTERS[symbol]
    out = []
    for side in (Side.BUY, Side.SELL):
        levels = engine.book(symbol).levels(side)
        if depth:
            levels = levels[:depth]
        out.append([(price(p), qty(q), c) for p, q, c in levels])
    return out


class Market:
    """A real engine, feed core and hub, and the market-data application as the hub's sink."""

    def __init__(self, seed: int = 1, **options: Any) -> None:
        self.engine = MatchingEngine(INSTRUMENTS)
        self.hub = FeedHub(FeedCore(INSTRUMENTS), wall_ns=lambda: T0)
        self.flow = OrderFlow(INSTRUMENTS, seed=seed)
        self.now = T0
        self.flushed: list[Any] = []
        self.app = build_market_data_application(
            INSTRUMENTS, self.hub, now_ns=lambda: self.now, flush=self.flushed.append,
            **options)
        self.batches: list[list] = []

    def run(self, commands: int, per_batch: int = 7) -> None:
        """``commands`` random commands through the engine, a hub flush every ``per_batch``."""
        for i, command in enumerate(self.flow.commands(commands, self.now, 1000)):
            self.hub.publish(self.engine.process(command))
            if (i + 1) % per_batch == 0:
                self.flush()
        self.flush()

    def process(self, command: Any) -> list:
        events = self.engine.process(command)
        self.hub.publish(events)
        return events

    def flush(self) -> list:
        self.now += 1_000_000
        batch = self.hub.flush()
        self.batches.append(batch)
        return batch


def market_data_dictionary(tmp_dir: str) -> str:
    """spec/FIX44-exchange.xml with RptSeq (83) in the MDFullGrp and MDIncGrp entries, the
    addition spec/market-data.md asks of the dictionary; the file itself when it has it."""
    with open(spec_path(), encoding="utf-8") as handle:
        text = handle.read()
    if re.search(r'<field number="83" ', text):
        return spec_path()
    text = text.replace(
        '<field number="89" name="Signature" type="DATA" />',
        '<field number="83" name="RptSeq" type="INT" />\n  '
        '<field number="89" name="Signature" type="DATA" />', 1)
    for component in ("MDFullGrp", "MDIncGrp"):
        head = f'<component name="{component}">'
        start = text.index(head)
        end = text.index("</group>", start)
        text = text[:end] + '<field name="RptSeq" required="N" />\n   ' + text[end:]
    path = os.path.join(tmp_dir, "FIX44-exchange-md.xml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
