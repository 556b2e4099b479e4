"""Composition of order entry: pipeline (journal, recovery), ledger, application, Postgres
rows. ``FixServer`` builds an :class:`OrderEntryService` when the config has
``[FIRM]`` sections (see fixserver.server.default_application_factory).

Start-up (blocking, before the reactor runs): the journal in ``JournalPath`` is recovered
(snapshot + replay); the replayed commands and the snapshot's extra give the owners of the
live orders and the ClOrdIDs each session used; the ledger starts from the orders live at
the snapshot and follows the replayed tail event by event, rebuilding its reports, and the
ones a crash kept from the sessions' stores are stored now, before any new tick
(:mod:`fixserver.orderentry.redelivery`); the killed firms are the engine's (journaled
KillSwitch commands); start-up journals the trading-day boundary (TradingDayEnd), a kill switch
left in the ``kill-switch.json`` of earlier versions, and cancel-on-disconnect for the
sessions that were connected with it on; with a PostgresDSN the schema is migrated and the
reference data seeded (a database that is down is logged and does not stop the exchange;
the writer catches up). Postgres catch-up: the writer's high-water mark is read from the
database, the ticks between it and the latest snapshot are regenerated from the retained
journal (:mod:`fixserver.pg.catchup`) and queued before the replayed tail's rows, and journal
pruning keeps the segments from the writer's mark on (``retain_from_seq``). With Postgres the
application also reads ended orders it no longer keeps in memory from it for status requests
(:class:`fixserver.pg.order_reader.PgStatusReader`), and drops from memory only orders whose
final state the writer has committed.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import attr
from twisted.internet import defer, task
from twisted.logger import Logger

from engine import MatchingEngine, demo_instruments
from engine.commands import SetTradingDay
from engine.events import InstrumentConfigured, Trade
from engine.instruments import Instrument
from engine.positions import PositionBook
from fixserver.codec import FixMessage
from fixserver.config import ConfigError
from fixserver.funding_config import funding_deposits, settlement_assets
from fixserver.orderentry.application import OrderEntryApplication
from fixserver.orderentry.controls import KillSwitchFile
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.hosting import OrderEntryHost, admin_resource
from fixserver.orderentry.instrument_sync import (
    InstrumentConfigError,
    first_commands,
    genesis_instruments,
    plan,
)
from fixserver.orderentry.liquidation_monitor import LiquidationMonitor
from fixserver.orderentry.ownership import (
    OrderLedger,
    OwnerRecorder,
    entering_session,
    origin,
)
from fixserver.orderentry.redelivery import redeliver
from fixserver.orderentry.risk_monitor import RiskMonitor
from fixserver.orderentry.translate import stp_mode
from fixserver.pipeline import open_pipeline

log = Logger(namespace="fixserver.orderentry")


class OrderEntryService:
    """The Application FixServer hosts when order entry is configured (see module docstring)."""

    host_class = OrderEntryHost

    def __init__(self, server: Any, instruments: list[Instrument] | None = None,
                 **pipeline_options: Any) -> None:
        config = server.config
        if not config.journal_path:
            raise ConfigError("JournalPath is required in [DEFAULT] when [FIRM]s are configured")
        for settings in config.sessions:
            try:
                stp_mode(settings.default_stp)
            except ValueError as exc:
                raise ConfigError(f"DefaultSTP of {settings.session_id}: {exc}") from None
        self.server = server
        self.reactor = server.reactor
        if instruments is None:
            instruments = list(config.instruments)
            if not instruments:
                log.warn("orderentry.instruments no [INSTRUMENT] sections: listing the built-in "
                         "demo instruments {symbols}",
                         symbols=[i.symbol for i in demo_instruments()])
                instruments = demo_instruments()
        #: the configured instruments (the engine is brought to them at start-up)
        self.configured_instruments = list(instruments)
        self.directory = FirmDirectory(config.firms)
        replayed: list = []
        # The views of the orders live at the snapshot are taken from the engine as restored,
        # before the tail is replayed into it (the ledger then follows the tail event by event).
        at_snapshot: list = []
        # the engine's risk state at the snapshot: where the Postgres rows' read model starts
        self._risk_at_snapshot: Any = None

        def new_engine() -> MatchingEngine:
            # no snapshot: the journal is replayed from its start, on the instruments it
            # started with (it lists them itself, or it predates that: the demo set)
            at_snapshot.clear()
            self._risk_at_snapshot = None
            return MatchingEngine(genesis_instruments(first_commands(config.journal_path)))

        def restore(data: bytes) -> MatchingEngine:
            engine = MatchingEngine.restore(data)
            at_snapshot[:] = OrderLedger.views_of(engine)
            self._risk_at_snapshot = engine.risk.to_state()
            return engine

        pipeline_options.setdefault("now_ns", server.now_ns)
        pipeline_options.setdefault("lane_of", self._lane_of)
        # a failed journal commit stops the exchange loudly (FixServer.pipeline_failed)
        pipeline_options.setdefault("on_failure", server.pipeline_failed)
        pipeline_options.setdefault("snapshot_every_commands", config.snapshot_every_commands)
        pipeline_options.setdefault("snapshot_every_s", config.snapshot_every_seconds)
        pipeline_options.setdefault("snapshot_in_child", config.snapshot_in_child)
        pipeline_options.setdefault("tick_interval", config.tick_interval)
        self._firm_of_session = {s.session_id: s.firm or s.session_id for s in config.sessions}
        self.pipeline = open_pipeline(
            config.journal_path, self.reactor, new_engine, restore,
            on_replayed=replayed.append, snapshot_extra=self._snapshot_extra,
            snapshot_extra_flush=self._flush_for_snapshot,
            **pipeline_options,
        )
        engine = self.pipeline.engine
        try:
            self._instrument_commands = plan(engine, self.configured_instruments)
        except InstrumentConfigError as exc:
            self.pipeline.journal_runner.stop()
            self.pipeline.snapshot_runner.stop()
            raise ConfigError(f"{config.source}: {exc}") from None
        # What every consumer is built with: the configured rules, and for an instrument the
        # journal already lists, the status it has now (the operator's, not the config's).
        self.instruments = [
            attr.evolve(i, status=engine.markets[i.symbol].status)
            if i.symbol in engine.markets else i for i in self.configured_instruments]
        extra = self.pipeline.recovered_extra or {}
        self.recorder = OwnerRecorder(
            self.pipeline.sequencer,
            {int(k): str(v) for k, v in dict(extra.get("owners", {})).items()},
            extra.get("used"),  # UsedIds bytes (or an older snapshot's {session: ids})
            extra.get("used_prev"),
            extra.get("used_day"),
            day_offset=lambda: self.pipeline.engine.day_offset_ns,
        )
        # Positions (size, entry price, realised PnL, fees) follow released fills; the book
        # is saved with each snapshot and the replayed tail's fills are applied on top.
        saved_positions = extra.get("positions")
        self.positions = (PositionBook.from_dict(saved_positions) if saved_positions
                          else PositionBook.for_instruments(self.instruments))
        for inst in self.instruments:  # listed since the snapshot, or now
            self.positions.list_instrument(inst.symbol, inst.multiplier)
        owners_at_snapshot = dict(self.recorder.owners)
        #: the replayed tail's trades (the feeds rebuild tickers and candles from them too)
        self.replayed_trades = [e for p in replayed for e in p.events if type(e) is Trade]
        for p in replayed:
            self.recorder.record(p.origin, p.command)
        # The recorder wraps the sequencer (same interface) to note owners as ticks match.
        self.pipeline.sequencer = self.recorder  # type: ignore[assignment]
        self.app = OrderEntryApplication(
            server.sessions, self.pipeline, self.instruments, self.directory,
            now_ns=server.now_ns, flush=self._flush, disconnect=self._disconnect,
            killed=self.pipeline.engine.killed,
            call_later=self.reactor.callLater,
            cancel_on_disconnect_delay=config.cancel_on_disconnect_delay,
            day_offset_ns=trading_day_offset_ns(config),
            retention_days=config.order_retention_days,
            max_ended_orders=config.max_ended_orders_in_memory,
        )
        self.app.ledger.order_gone = self.recorder.forget  # owners leave as orders end
        self.app.ledger.follow_journal(self.recorder)  # one copy of the day's ClOrdIDs
        self.app.ledger.adopt(
            at_snapshot, owners_at_snapshot, None,
            {int(k): v for k, v in dict(extra.get("details", {})).items()},
        )
        self.app.ledger.adopt_ended(extra.get("ended", ()))
        at_snapshot.clear()
        # positions and collateral for AP/BA: the recovered engine's (all of it journaled)
        self.app.seed_risk(engine)
        self.redelivery = redeliver(self.app, replayed, server.now_ns())
        for inst in self.instruments:  # the journal's tail may predate the configuration
            self.app.set_instrument(inst)
        write_batch = getattr(server, "write_batch", None)
        if write_batch is not None:  # stored now: a second crash before any logon keeps them
            write_batch.flush()
        log.info("orderentry.redelivered messages={n} per_session={per} rebuilt={rebuilt} "
                 "stored_scanned={scanned} scan_s={scan:.3f} total_s={total:.3f} "
                 "skipped_before_reset={skipped}", n=self.redelivery.total_redelivered,
                 per=self.redelivery.redelivered, rebuilt=self.redelivery.rebuilt,
                 scanned=self.redelivery.scanned, scan=self.redelivery.scan_seconds,
                 total=self.redelivery.seconds, skipped=self.redelivery.skipped_before_reset)
        self.pipeline.subscribe(self.app.on_released)
        # collateral, positions, marks and index ages as journaled (admin API, /health)
        self.risk = RiskMonitor(engine, self.reactor.seconds, config.index_stale_seconds)
        self.pipeline.subscribe(self.risk.on_released)
        # liquidation, margin call, funding and insurance fund metrics; the fund's recent
        # ledger for the admin API (its replayed entries first)
        self.liquidations = LiquidationMonitor(engine)
        self.liquidations.remember(replayed)
        self.pipeline.subscribe(self.liquidations.on_released)
        self._risk_metrics: Any = None
        self._journal_start_up_commands()
        self.pg_writer: Any = None
        self.status_reader: Any = None
        #: seconds stop() waits for Postgres to commit the backlog
        self.pg_flush_timeout = 5.0
        if config.postgres_dsn:
            # Its RowBuilder applies the fills to the positions. The replayed tail's rows are
            # queued again, after the rows of older ticks Postgres never committed
            # (fixserver.pg.catchup); the writer's upserts make any repeat harmless.
            self._start_postgres(config.postgres_dsn, replayed)
        else:
            for p in replayed:
                self._apply_fills(p.events)
            self.pipeline.subscribe(self._on_released_positions)
        self.admin_resource = admin_resource(self)
        log.info("orderentry.recovered commands={n} live_orders={live} killed={killed}",
                 n=self.pipeline.recovered_commands, live=len(self.pipeline.engine.orders),
                 killed=sorted(self.app.killed))

    def _lane_of(self, o: Any) -> Any:
        """The sequencer lane of a request's origin: its session's firm (kill switch: the
        firm it names), so that priority never reorders a firm's requests."""
        if o is None:
            return None
        if o[1] == "K":
            return o[2]
        return self._firm_of_session.get(o[0], o[0])

    def _journal_start_up_commands(self) -> None:
        """What start-up changes goes through the journal, queued for the first tick: the
        trading-day boundary from the config, a kill switch left in the file earlier versions
        kept it in, and cancel-on-disconnect for the sessions that were connected with it."""
        engine = self.pipeline.engine
        for command in self._instrument_commands:  # first: a fresh journal starts with them
            self.pipeline.submit(origin("", "A", "config"), command)
            log.info("orderentry.instrument_configured symbol={symbol} listed={listed}",
                     symbol=command.symbol, listed=command.symbol not in engine.markets)
        # after the instruments: a fresh journal learns the settlement asset from them
        decimals = settlement_assets(self.configured_instruments)
        for deposit in funding_deposits(self.server.config.funding,
                                        lambda a, asset: (a, asset) in engine.risk.accounts):
            self.pipeline.submit(origin("", "A", "config", "funding"), deposit)
            log.info("orderentry.config_funding account={account} asset={asset} "
                     "amount={amount}", account=deposit.account, asset=deposit.asset,
                     amount=Decimal(deposit.amount).scaleb(-decimals[deposit.asset]))
        offset = trading_day_offset_ns(self.server.config)
        if offset != engine.day_offset_ns:
            self.pipeline.submit(origin("", "A"), SetTradingDay(0, 0, offset))
            log.info("orderentry.trading_day_end offset_ns={offset}", offset=offset)
        legacy = KillSwitchFile(os.path.join(self.server.config.journal_path, "kill-switch.json"))
        for firm in sorted(legacy.load() - set(engine.killed)):
            if firm in self.directory.firms:
                self.app.set_kill_switch(firm, True)
                log.warn("orderentry.kill_switch_migrated firm={firm}", firm=firm)
        resumed = self.app.resume_sessions(dict(engine.sessions))
        if resumed:
            log.info("orderentry.cancel_on_disconnect_at_start sessions={sessions} "
                     "delay_s={delay}", sessions=resumed,
                     delay=self.server.config.cancel_on_disconnect_delay)

    def _flush_for_snapshot(self) -> None:
        # Called right after the snapshot's tick is released and before its file is written:
        # the reports of the ticks it holds must be in the kernel (not in the server's write
        # batch) before the snapshot can exist, as the next start-up will not redeliver them.
        write_batch = getattr(self.server, "write_batch", None)
        if write_batch is not None:
            write_batch.flush()

    def _snapshot_extra(self) -> Any:
        # The FIX layer's state for the snapshot (the pipeline may gather it in a forked
        # child: it reads memory only)
        # The live orders as of the snapshot's tick: the ledger's, which has seen exactly the
        # ticks the snapshot holds. Not the engine's: it may have matched later ticks already
        # (requests that came during the commit), and an order live at the snapshot's tick
        # that ended in one of those would lose its owner and be left out after a restart.
        ledger = self.app.ledger
        live = [oid for ids in ledger.live_by_session.values() for oid in ids]
        extra = self.recorder.snapshot(live)
        extra["details"] = ledger.details(live)
        extra["ended"] = ledger.ended_rows()
        extra["positions"] = self.positions.to_dict()
        return extra

    def _apply_fills(self, events: Any) -> None:
        apply_trade = self.positions.apply_trade
        for event in events:
            if type(event) is Trade:
                apply_trade(event)
            elif type(event) is InstrumentConfigured:
                self.positions.list_instrument(event.symbol, event.instrument.multiplier)

    def _on_released_positions(self, processed: list) -> None:
        for p in processed:
            self._apply_fills(p.events)

    def _start_postgres(self, dsn: str, replayed: list) -> None:
        from twisted.internet.threads import deferToThread

        from fixserver.pg.catchup import regenerate
        from fixserver.pg.order_reader import PgStatusReader
        from fixserver.pg.rows import RowBuilder
        from fixserver.pg.seed import upsert_instruments
        from fixserver.pg.writer import PgWriter

        stored: int | None = None  # the writer's durable mark; None: unknown
        try:
            import psycopg

            from fixserver.pg.batch import read_progress
            from fixserver.pg.migrations import migrate
            from fixserver.pg.seed import seed

            with psycopg.connect(dsn, connect_timeout=3) as conn:
                migrate(conn)
                seed(conn, self.instruments, self.server.config.sessions,
                     self.directory.account_map())
                stored = read_progress(conn)
        except Exception as exc:  # the exchange runs without the database; the writer retries
            log.warn("pg.seed_failed error={error}", error=repr(exc))
        pipeline = self.pipeline
        every = self.server.config.mark_history_every_seconds  # mark_prices sampling
        regen = regenerate(pipeline.directory, self.instruments, stored,
                           pipeline.recovered_from_seq, entering_session, every)
        log.info("pg.catchup stored_mark={stored} regenerated_ticks={ticks} gap={gap}",
                 stored=stored, ticks=len(regen.chunks), gap=regen.gap)
        self.pg_writer = PgWriter(dsn, self.reactor, committed_next_seq=regen.start_seq)
        writer = self.pg_writer
        for rows, next_seq in regen.chunks:
            writer.enqueue(rows, next_seq)
        builder = RowBuilder(self.instruments, self.positions,
                             risk_state=self._risk_at_snapshot, mark_history_every_s=every)
        writer.enqueue(builder.processed_rows(replayed, entering_session),
                       pipeline.sequencer.position()[0])

        def enqueue(processed: list) -> None:
            # Every tick, rows or not, so the mark (and with it pruning) keeps moving.
            writer.enqueue(builder.processed_rows(processed, entering_session),
                           processed[-1].command.seq + 1)
            listed = [e.instrument for p in processed for e in p.events
                      if type(e) is InstrumentConfigured]
            if listed:  # the reference table; off the reactor, retried at the next start
                d = deferToThread(upsert_instruments, dsn, listed)
                d.addErrback(lambda f: log.warn("pg.instruments_upsert_failed error={error}",
                                                error=f.getErrorMessage()))

        pipeline.subscribe(enqueue)
        pipeline.retain_from_seq = lambda: writer.committed_next_seq
        # H for an ended order no longer in memory reads it from Postgres, off the reactor
        self.status_reader = PgStatusReader(dsn, self.reactor)
        self.app.use_status_store(self.status_reader, lambda: writer.committed_next_seq)

    # -- Application ----------------------------------------------------------------------

    def on_message(self, session: Any, message: FixMessage, now_ns: int) -> None:
        self.app.on_message(session, message, now_ns)

    def on_logon(self, session: Any, logon: FixMessage | None, now_ns: int) -> None:
        self.app.on_logon(session, logon, now_ns)

    def on_logout(self, session: Any, now_ns: int) -> None:
        self.app.on_logout(session, now_ns)

    def _flush(self, session: Any) -> None:
        self.server.host.flush(session)

    def _disconnect(self, session: Any, text: str) -> None:
        protocol = self.server.host.bound.get(session)
        if protocol is not None:  # not inside the protocol's own pump: next reactor turn
            self.reactor.callLater(0, protocol.logout, text)

    # -- life cycle -----------------------------------------------------------------------

    def health_degraded(self) -> dict[str, object] | None:
        """Why ``/health`` says degraded (stale index prices), or None."""
        return self.risk.health_degraded()

    def start(self) -> None:
        self.pipeline.start()
        self._risk_metrics = task.LoopingCall(self.risk.publish_metrics)
        self._risk_metrics.clock = self.reactor
        self._risk_metrics.start(1.0)
        if self.pg_writer is not None:
            self.pg_writer.start()
        if self.status_reader is not None:
            self.status_reader.start()
        for s in self.server.config.sessions:
            accounts = ",".join(self.directory.accounts_of(s.firm)) or "-"
            log.info("orderentry.session connect_as SenderCompID={client} TargetCompID={us} "
                     "role={role} firm={firm} accounts={accounts}", client=s.target_comp_id,
                     us=s.sender_comp_id, role=s.role.value, firm=s.firm, accounts=accounts)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Match and release what is queued, close the journal, flush Postgres (bounded)."""
        if self._risk_metrics is not None and self._risk_metrics.running:
            self._risk_metrics.stop()
        yield self.pipeline.shutdown()
        if self.status_reader is not None:
            self.status_reader.stop()
        if self.pg_writer is not None:
            flushed = self.pg_writer.flush()
            timeout = self.reactor.callLater(self.pg_flush_timeout, flushed.cancel)
            try:
                yield flushed
            except defer.CancelledError:
                log.warn("pg.flush_timeout backlog={n}", n=self.pg_writer.backlog)
            finally:
                if timeout.active():
                    timeout.cancel()
            self.pg_writer.stop()


def trading_day_offset_ns(config: Any) -> int:
    """Nanoseconds past midnight UTC at which the trading day ends: TradingDayEnd, else the
    order-entry sessions' StartTime when they all agree (the day rolls there), else 0."""
    end = config.trading_day_end
    if end is None:
        starts = {s.start_time for s in config.sessions if s.start_time is not None
                  and s.role.value == "order-entry"}
        end = starts.pop() if len(starts) == 1 else None
    if end is None:
        return 0
    return ((end.hour * 60 + end.minute) * 60 + end.second) * 1_000_000_000


def order_entry_factory(server: Any) -> OrderEntryService:
    """FixServer application_factory for order entry."""
    return OrderEntryService(server)
