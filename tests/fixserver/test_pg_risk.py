"""Risk state reaches Postgres: balances, the balance ledger, margined positions, mark history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import attr
import psycopg
import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from engine import CancelOrder, MatchingEngine, NewOrder, Side, demo_instruments
from engine.commands import Deposit, SetIndexPrice, SetLeverage, Tick, Withdraw
from engine.enums import LedgerCause
from engine.events import BalanceChanged, MarkPriceUpdated
from engine.instruments import Instrument
from engine.positions import PositionBook
from engine.risk.readmodel import RiskReadModel
from fixserver.journal_file import JournalDirectory
from fixserver.pg.batch import STRATEGIES, BatchWriter
from fixserver.pg.catchup import regenerate, risk_state_of
from fixserver.pg.migrations import discover, migrate
from fixserver.pg.rows import (
    BalanceRow,
    LedgerRow,
    MarkRow,
    PositionRow,
    Row,
    RowBuilder,
    asset_amount,
    ns_to_datetime,
)
from fixserver.pipeline import OrderPipeline
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

BTC, ETH = "BTC-PERP", "ETH-PERP"
T0 = 1_700_000_000_000_000_000  # a multiple of 10 s: mark buckets start here
S = 1_000_000_000
USDT = 1_000_000  # minor units of one USDT (settlement_decimals 6)
RISK_TABLES = ("balances", "balance_ledger", "positions", "mark_prices")


def margined(inst: Instrument) -> Instrument:
    """The demo instrument with the risk contract's test parameters."""
    return attr.evolve(inst, max_leverage=100, default_leverage=10, risk_tiers=(
        (50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50), (10**13, 50_000, 10)))


#: BTC-PERP margined in USDT, ETH-PERP unmargined (the PositionBook's rows)
INSTRUMENTS = [margined(demo_instruments()[0]), demo_instruments()[1]]


class Venue:
    """A real engine on INSTRUMENTS and a RowBuilder fed with its events, one command a call."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.engine = MatchingEngine(INSTRUMENTS)
        self.builder = RowBuilder(INSTRUMENTS, mark_history_every_s=every_s)
        self.seq = 0
        self.events: list[Any] = []
        self.per_command: list[list[Row]] = []

    def run(self, make: Callable[[int, int], Any], ts: int | None = None) -> list[Row]:
        self.seq += 1
        at = T0 + self.seq * 1000 if ts is None else ts
        events = self.engine.process(make(self.seq, at))
        self.events.extend(events)
        rows = self.builder.rows(events)
        self.per_command.append(rows)
        return rows

    def order(self, account: str, side: Side, qty: int, price: int, symbol: str = BTC
              ) -> list[Row]:
        return self.run(lambda seq, ts: NewOrder(seq, ts, account, symbol, side, qty, price,
                                                 cl_ord_id=f"c{seq}"))

    def rows(self) -> list[Row]:
        return [r for rows in self.per_command for r in rows]


def scenario(v: Venue) -> None:
    """Deposits, a trade with fees, a closing trade with realised PnL, a withdrawal, a leverage
    change, a deposit into an open cross position, and an unmargined trade."""
    v.run(lambda s, t: Deposit(s, t, "A1", "USDT", 1_000 * USDT, ref="dep-a"))
    v.run(lambda s, t: Deposit(s, t, "B1", "USDT", 2_000 * USDT, ref="dep-b"))
    v.order("A1", Side.SELL, 3, 600_000)
    v.order("B1", Side.BUY, 3, 600_010)  # B takes A's 0.003 at 60000.0
    v.order("B1", Side.SELL, 2, 601_000)
    v.order("A1", Side.BUY, 2, 601_000)  # A closes 0.002 at a loss, B at a profit
    v.run(lambda s, t: Withdraw(s, t, "B1", "USDT", 100 * USDT, ref="wd-b"))
    v.run(lambda s, t: SetLeverage(s, t, "A1", BTC, 20, request_id="lev"))
    v.run(lambda s, t: Deposit(s, t, "A1", "USDT", 50 * USDT, ref="dep-a2"))
    v.order("A1", Side.SELL, 4, 300_000, ETH)
    v.order("B1", Side.BUY, 4, 300_000, ETH)


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def dump(dsn: str, tables: tuple[str, ...] = RISK_TABLES) -> list[list[tuple[Any, ...]]]:
    return [fetch(dsn, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables]


@pytest.fixture(params=STRATEGIES)
def writer(request: pytest.FixtureRequest, migrated_dsn: str) -> Iterator[BatchWriter]:
    """A BatchWriter of each strategy on a migrated schema."""
    w = BatchWriter(migrated_dsn, request.param)
    yield w
    w.close()


# -- rows (pure) ------------------------------------------------------------------------------


def test_asset_amounts_are_exact() -> None:
    """Minor units become exact asset units, whatever the decimals."""
    assert asset_amount(1_500_000, 6) == Decimal("1.5")
    assert asset_amount(-1, 6) == Decimal("-0.000001")
    assert asset_amount(10**20 + 1, 8) == Decimal("1000000000000.00000001")
    assert asset_amount(7, 0) == Decimal(7)


def test_ledger_balance_and_position_rows_of_a_margined_trade() -> None:
    """A deposit gives a ledger and a balance row; a margined fill gives ledger rows for its
    fee, the balances and one positions row per side in asset units, no PositionBook row."""
    v = Venue()
    dep = v.run(lambda s, t: Deposit(s, t, "A1", "USDT", 1_000 * USDT, ref="dep-a"))
    assert dep == [
        LedgerRow(1, 0, ns_to_datetime(T0 + 1000), "A1", "USDT", Decimal(1000),
                  Decimal(1000), "DEPOSIT", "", "dep-a"),
        BalanceRow("A1", "USDT", Decimal(1000), Decimal(0), Decimal(0), 1,
                   ns_to_datetime(T0 + 1000)),
    ]
    v.run(lambda s, t: Deposit(s, t, "B1", "USDT", 2_000 * USDT))
    v.order("A1", Side.SELL, 3, 600_000)
    traded = v.order("B1", Side.BUY, 3, 600_010)
    fees = [r for r in traded if isinstance(r, LedgerRow)]
    # B pays 5 bp of 180 USDT, A earns a 1 bp rebate; entries numbered within the command
    assert [(r.account, r.amount, r.cause, r.symbol, r.entry) for r in fees] == [
        ("A1", Decimal("0.018"), "FEE", BTC, 0), ("B1", Decimal("-0.09"), "FEE", BTC, 1)]
    positions = {r.account: r for r in traded if isinstance(r, PositionRow)}
    assert set(positions) == {"A1", "B1"}, "one margined row per side, none from the book"
    a = positions["A1"]
    assert (a.side, a.size, a.size_lots, a.entry_price, a.leverage, a.margin_mode, a.asset) == \
        ("SHORT", Decimal("0.003"), -3, Decimal("60000.0"), Decimal(10), "CROSS", "USDT")
    assert (a.fees, a.realised_pnl, a.isolated_margin, a.last_seq) == \
        (Decimal("-0.018"), Decimal(0), Decimal(0), 4)
    view = v.engine.risk.view("A1", "USDT")[1][0]
    assert view.liquidation_price > 0
    assert a.liquidation_price == Decimal(INSTRUMENTS[0].ticks_to_price(view.liquidation_price))
    # B's long of 180 USDT on 2,000 USDT of collateral cannot be liquidated at a price > 0
    assert (positions["B1"].side, positions["B1"].liquidation_price) == ("LONG", None)


def test_balance_change_rewrites_open_cross_positions_only() -> None:
    """A deposit into an account with an open cross position writes that position again
    (its liquidation price moved); settings changes write it with the same last_exec_id."""
    v = Venue()
    scenario(v)
    lev_rows = v.per_command[7]
    (lev,) = [r for r in lev_rows if isinstance(r, PositionRow)]
    dep_rows = v.per_command[8]
    (dep,) = [r for r in dep_rows if isinstance(r, PositionRow)]
    assert lev.leverage == Decimal(20) and lev.last_seq == 8
    assert dep.last_exec_id == lev.last_exec_id and dep.last_seq == 9
    assert dep.liquidation_price is not None and lev.liquidation_price is not None
    assert dep.liquidation_price > lev.liquidation_price, \
        "more collateral: a short liquidates higher"
    # B's deposit/withdrawal rewrote its own cross position; ETH rows are the book's
    eth = [r for r in v.per_command[10] if isinstance(r, PositionRow)]
    assert {(r.account, r.margin_mode, r.leverage, r.asset) for r in eth} == \
        {("A1", None, Decimal(1), None), ("B1", None, Decimal(1), None)}
    assert eth[0].last_seq == 11


def test_mark_history_keeps_the_first_mark_of_each_bucket() -> None:
    """Marks every second are sampled to the first of each 10 s bucket of event time; the
    sampling period is configurable and must be positive."""
    for every_s, expected_rows in ((10.0, 4), (2.5, 14)):
        v = Venue(every_s)
        for k in range(35):
            v.run(lambda s, t, k=k: SetIndexPrice(s, t, BTC, 600_000 + 10 * k), T0 + k * S + 1)
            v.run(lambda s, t: Tick(s, t), T0 + k * S + 2)
        marks = [e for e in v.events if type(e) is MarkPriceUpdated]
        assert len(marks) == 35
        period = int(every_s * S)
        first: dict[int, MarkPriceUpdated] = {}
        for e in marks:
            first.setdefault(e.ts // period, e)
        rows = [r for r in v.rows() if isinstance(r, MarkRow)]
        assert len(rows) == expected_rows
        assert [(r.bucket, r.ts, r.index_price, r.mark_price, r.seq) for r in rows] == [
            (ns_to_datetime(b * period), ns_to_datetime(e.ts), Decimal(e.index) / 10,
             Decimal(e.mark) / 10, e.seq) for b, e in sorted(first.items())]
    with pytest.raises(ValueError, match="positive"):
        RowBuilder(INSTRUMENTS, mark_history_every_s=0)


def test_seeded_model_matches_one_that_saw_every_event() -> None:
    """A builder started from the engine's risk state (a snapshot) writes the same position
    rows afterwards as one that saw every event."""
    v = Venue()
    scenario(v)
    v.run(lambda s, t: SetIndexPrice(s, t, BTC, 600_500))
    v.run(lambda s, t: Tick(s, t), T0 + 5 * S)
    seeded = RowBuilder(INSTRUMENTS, PositionBook.for_instruments(INSTRUMENTS),
                        risk_state=v.engine.risk.to_state())
    more = [lambda s, t: Deposit(s, t, "A1", "USDT", 7 * USDT),
            lambda s, t: Deposit(s, t, "B1", "USDT", 3 * USDT)]
    for make in more:
        v.seq += 1
        events = v.engine.process(make(v.seq, T0 + 6 * S))
        v.events.extend(events)
        live = [r for r in v.builder.rows(events) if isinstance(r, PositionRow)]
        again = [r for r in seeded.rows(events) if isinstance(r, PositionRow)]
        assert live and again == live
    fresh = RowBuilder(INSTRUMENTS)
    assert not [r for r in fresh.rows(events) if isinstance(r, PositionRow)], \
        "without the seed a balance change finds no open position to rewrite"
    model = RiskReadModel(INSTRUMENTS)
    for e in v.events:
        model.apply(e)
    assert seeded.risk.view("A1", "USDT") == model.view("A1", "USDT")


# -- Postgres ---------------------------------------------------------------------------------


def test_migration_applies_on_empty_and_previous_version(pg_dsn: str) -> None:
    """008 applies on a database at 007 that holds positions (they get last_seq 0 and NULL
    risk columns, and later upserts still land) as well as on an empty one (migrated_dsn)."""
    migrations = discover()
    (risk,) = [m for m in migrations if m.name == "008_risk.sql"]
    with psycopg.connect(pg_dsn) as conn:
        migrate(conn, migrations[:risk.version - 1])
        conn.execute(
            "INSERT INTO positions (account, symbol, side, size, entry_price, size_lots, "
            "entry_notional, realised_pnl, fees, last_exec_id, updated_at) VALUES "
            "('A1', 'ETH-PERP', 'LONG', 1, 3000, 100, 300000, 0, 0, 2, now())")
        conn.commit()
        assert [m.name for m in migrate(conn, migrations)] == [m.name for m in
                                                              migrations[risk.version - 1:]]
    assert fetch(pg_dsn, "SELECT last_seq, leverage, asset, margin_mode, isolated_margin, "
                         "liquidation_price FROM positions") == [(0, Decimal(1), None, None,
                                                                  None, None)]
    tables = {r[0] for r in fetch(pg_dsn, "SELECT tablename FROM pg_tables "
                                          "WHERE schemaname = current_schema()")}
    assert tables >= {"balances", "balance_ledger", "mark_prices"}
    indexes = {r[0] for r in fetch(pg_dsn, "SELECT indexdef FROM pg_indexes "
                                           "WHERE tablename = 'balance_ledger'")}
    assert any("(account, asset, seq)" in d for d in indexes)
    v = Venue()
    v.order("A1", Side.SELL, 4, 300_000, ETH)
    rows = v.order("B1", Side.BUY, 4, 300_000, ETH)
    w = BatchWriter(pg_dsn)
    try:
        w.write(rows)
    finally:
        w.close()
    assert fetch(pg_dsn, "SELECT account, size_lots, last_exec_id, last_seq FROM positions "
                         "ORDER BY 1") == [("A1", -4, 3, 2), ("B1", 4, 3, 2)]


def test_ledger_sums_to_balances_and_positions_carry_risk_columns(writer: BatchWriter) -> None:
    """After deposits, trades with fees and realised PnL and a withdrawal, each account's
    ledger sums to its balance, which is the engine's; positions show the engine's state."""
    v = Venue()
    scenario(v)
    for rows in v.per_command:
        writer.write(rows)
    dsn = writer.dsn
    sums = fetch(dsn, "SELECT l.account, l.asset, sum(l.amount), b.balance FROM balance_ledger l "
                      "JOIN balances b USING (account, asset) GROUP BY 1, 2, 4 ORDER BY 1")
    risk = v.engine.risk
    assert sums == [(acct, "USDT", asset_amount(risk.accounts[(acct, "USDT")].balance, 6),
                     asset_amount(risk.accounts[(acct, "USDT")].balance, 6))
                    for acct in ("A1", "B1")]
    causes = {r[0] for r in fetch(dsn, "SELECT cause FROM balance_ledger WHERE amount <> 0")}
    assert causes == {"DEPOSIT", "WITHDRAWAL", "FEE", "REALISED_PNL"}
    # every BalanceChanged is one row, with the running balance it reported
    changes = [e for e in v.events if type(e) is BalanceChanged]
    assert fetch(dsn, "SELECT seq, account, amount, balance, cause, symbol, ref "
                      "FROM balance_ledger ORDER BY seq, entry") == [
        (e.seq, e.account, asset_amount(e.amount, 6), asset_amount(e.balance, 6),
         LedgerCause(e.cause).name, e.symbol, e.ref) for e in changes]
    got = fetch(dsn, "SELECT account, side, size_lots, realised_pnl, fees, leverage, "
                     "margin_mode, isolated_margin, liquidation_price, asset FROM positions "
                     "WHERE symbol = 'BTC-PERP' ORDER BY 1")
    want = []
    for acct in ("A1", "B1"):
        p = risk.positions[(acct, BTC)]
        liq = risk.view(acct, "USDT")[1][0].liquidation_price
        want.append((acct, "SHORT" if p.size < 0 else "LONG", p.size,
                     asset_amount(p.realised, 6), asset_amount(p.fees, 6), Decimal(p.leverage),
                     "CROSS", Decimal(0),
                     Decimal(INSTRUMENTS[0].ticks_to_price(liq)) if liq else None, "USDT"))
    assert got == want
    assert got[0][3] < 0 < got[1][3], "A closed at a loss, B at a profit"
    assert got[0][8] is not None, "A's short can be liquidated"
    eth = fetch(dsn, "SELECT account, size_lots, leverage, margin_mode, liquidation_price "
                     "FROM positions WHERE symbol = 'ETH-PERP' ORDER BY 1")
    assert eth == [("A1", -4, Decimal(1), None, None), ("B1", 4, Decimal(1), None, None)]


def test_row_versions_keep_the_newest_whatever_the_order(writer: BatchWriter) -> None:
    """Commands' rows written newest first, then all again, leave the same tables as writing
    them once in order: balances, positions and mark samples never go back."""
    v = Venue()
    scenario(v)
    for k in range(25):
        v.run(lambda s, t, k=k: SetIndexPrice(s, t, BTC, 600_000 + 7 * k), T0 + S + k * S // 2)
        v.run(lambda s, t: Tick(s, t), T0 + S + k * S // 2 + 1)
    v.run(lambda s, t: CancelOrder(s, t, "A1", 99), T0 + 20 * S)  # unknown: no risk rows
    for rows in v.per_command:
        writer.write(rows)
    in_order = dump(writer.dsn)
    assert len(in_order[3]) == 2 and in_order[3][0][5] < in_order[3][1][5]
    with psycopg.connect(writer.dsn) as conn:
        conn.execute("TRUNCATE " + ", ".join(RISK_TABLES))
    for rows in reversed(v.per_command):
        writer.write(rows)
    assert dump(writer.dsn) == in_order
    writer.write(v.rows())  # a replay after a restart, one batch
    writer.write(v.per_command[2] + v.per_command[0])  # old versions
    assert dump(writer.dsn) == in_order


# -- catch-up after an outage -----------------------------------------------------------------


class ManualRunner:
    """A fake thread pool: jobs run when the test completes them, in order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple, Deferred]] = []

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.jobs.append((f, args, d))
        return d

    def complete_all(self) -> None:
        while self.jobs:
            f, args, d = self.jobs.pop(0)
            d.callback(f(*args))

    def stop(self) -> None:
        """Nothing to join."""


class Exchange:
    """A journaled pipeline on INSTRUMENTS (task.Clock, manual runners) whose released ticks
    a live RowBuilder turns into (rows, next_seq), as the server's writer gets them."""

    def __init__(self, path: str, instruments: list[Instrument] = INSTRUMENTS) -> None:
        self.clock = task.Clock()
        self.journal, self.snapshots = ManualRunner(), ManualRunner()
        self.directory = JournalDirectory(path, fsync=False)
        rec = self.directory.recover(lambda: MatchingEngine(instruments), MatchingEngine.restore)
        self.builder = RowBuilder(instruments)
        self.pipeline = OrderPipeline(
            rec.engine, rec.sequencer(idle_tick_ns=S), self.directory.open_writer(rec.next_seq),
            self.directory, clock=self.clock, journal_runner=self.journal,
            snapshot_runner=self.snapshots, eager=False,
            now_ns=lambda: T0 + int(self.clock.seconds() * S),
            snapshot_extra=lambda: {"positions": self.builder.positions.to_dict()},
        )
        self.ticks: list[tuple[list[Row], int]] = []
        self.pipeline.subscribe(self._release)
        self.n = 0

    def _release(self, processed: list) -> None:
        rows = self.builder.processed_rows(processed, lambda origin: None)
        self.ticks.append((rows, processed[-1].command.seq + 1))

    def step(self, *requests: Any, snapshot: bool = False, seconds: float = 0.7) -> None:
        """Submit the requests, advance the clock, match them as one tick, commit it."""
        for request in requests:
            self.n += 1
            self.pipeline.submit(("s", self.n), request)
        self.clock.advance(seconds)
        self.pipeline.tick()
        if snapshot:
            self.pipeline.take_snapshot()
        self.journal.complete_all()
        self.snapshots.complete_all()


def order(account: str, side: Side, qty: int, price: int, symbol: str = BTC) -> NewOrder:
    return NewOrder(0, 0, account, symbol, side, qty, price)


def test_catch_up_after_an_outage_reproduces_the_rows(tmp_path: Any, migrated_dsn: str) -> None:
    """Postgres commits the first ticks only; after snapshots and a restart, the rows
    regenerated from the journal (from a snapshot holding risk state) and the replayed tail's
    rows (from a builder seeded at the latest snapshot) leave exactly the tables an
    uninterrupted writer leaves."""
    ex = Exchange(str(tmp_path))
    ex.step(Deposit(0, 0, "A1", "USDT", 1_000 * USDT), Deposit(0, 0, "B1", "USDT", 900 * USDT),
            Deposit(0, 0, "C1", "USDT", 300 * USDT))
    ex.step(SetIndexPrice(0, 0, BTC, 600_000))
    ex.step(order("A1", Side.SELL, 4, 600_000), order("B1", Side.BUY, 3, 600_010),
            order("C1", Side.BUY, 1, 600_010),
            snapshot=True)  # the base catch-up starts from: A1, B1 and C1 hold positions
    ex.step(SetIndexPrice(0, 0, BTC, 600_200), order("A1", Side.SELL, 4, 300_000, ETH),
            order("B1", Side.BUY, 4, 300_000, ETH))
    mark = ex.ticks[-1][1]  # Postgres committed every tick before this, then went away
    ex.pipeline.retain_from_seq = lambda: mark
    # C1's position changes no more: its last row is this deposit's (from the seeded model)
    ex.step(Deposit(0, 0, "A1", "USDT", 40 * USDT), SetIndexPrice(0, 0, BTC, 600_400),
            Deposit(0, 0, "C1", "USDT", 20 * USDT))
    ex.step(order("B1", Side.SELL, 2, 601_000), order("A1", Side.BUY, 2, 601_000),
            snapshot=True)
    ex.step(Withdraw(0, 0, "B1", "USDT", 10 * USDT), SetLeverage(0, 0, "A1", BTC, 25))
    for k in range(6):
        ex.step(SetIndexPrice(0, 0, BTC, 600_500 + 50 * k), seconds=1.9,
                snapshot=k == 2)
    ex.step(Deposit(0, 0, "B1", "USDT", 5 * USDT), order("A1", Side.BUY, 1, 300_000, ETH),
            order("B1", Side.SELL, 1, 300_000, ETH))  # the tail after the latest snapshot
    ex.pipeline.writer.close()
    assert any(isinstance(r, MarkRow) for rows, _ in ex.ticks for r in rows)
    tables = ("executions", "orders", *RISK_TABLES)

    w = BatchWriter(migrated_dsn)
    try:
        for rows, next_seq in ex.ticks:  # the uninterrupted writer
            w.write(rows, next_seq)
        expected = dump(migrated_dsn, tables)
        with psycopg.connect(migrated_dsn) as conn:
            conn.execute("TRUNCATE pg_writer_progress, " + ", ".join(tables))
        for rows, next_seq in ex.ticks:
            if next_seq <= mark:
                w.write(rows, next_seq)

        # the restart: regenerate up to the latest snapshot, then the replayed tail
        directory = JournalDirectory(str(tmp_path), fsync=False)
        seen: list[Any] = []

        def restore(data: bytes) -> MatchingEngine:
            engine = MatchingEngine.restore(data)
            seen.append(risk_state_of(engine))
            return engine

        rec = directory.recover(lambda: MatchingEngine(INSTRUMENTS), restore)
        latest = rec.next_seq
        assert directory.snapshots()[0][0] < mark < latest
        regen = regenerate(directory, INSTRUMENTS, mark, latest)
        assert regen.gap is None and regen.chunks
        for rows, next_seq in regen.chunks:
            w.write(rows, next_seq)
        tail = RowBuilder(INSTRUMENTS, PositionBook.from_dict(rec.extra["positions"]),
                          risk_state=seen[-1])
        replayed = list(rec.replay(directory.read_records(latest)))
        assert replayed
        w.write(tail.processed_rows(replayed, lambda origin: None), replayed[-1].command.seq + 1)
    finally:
        w.close()
    got = dump(migrated_dsn, tables)
    assert got == expected
