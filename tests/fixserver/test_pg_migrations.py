"""Numbered migrations apply once, are checked at start-up, and the seed loads reference data."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from engine.instruments import demo_instruments
from fixserver.config import parse_config
from fixserver.pg.migrations import (
    SQL_DIR,
    SchemaError,
    applied,
    check_schema,
    discover,
    main,
    migrate,
)
from fixserver.pg.seed import seed, seed_from_config
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

CONFIG = """
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9878
PostgresDSN={dsn}
[SESSION]
TargetCompID=CLIENT1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
[SESSION]
TargetCompID=MD
SessionRole=market-data
"""


def test_discover_reads_repo_migrations_in_order() -> None:
    """The repo's sql/ folder holds 001.. migrations numbered without gaps."""
    migrations = discover()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "001_reference.sql"


@pytest.mark.parametrize("names, message", [
    (["001_a.sql", "003_c.sql"], "expected 002, found 003_c.sql"),
    (["001_a.sql", "001_b.sql"], "expected 002, found 001_b.sql"),
    (["1_a.sql"], "not named NNN_lowercase_name.sql"),
])
def test_discover_rejects_gaps_duplicates_and_bad_names(
    tmp_path: Path, names: list[str], message: str
) -> None:
    """A gap, a duplicate version or a badly named file is a SchemaError saying which."""
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(SchemaError, match=message):
        discover(str(tmp_path))


def test_migrate_creates_schema_with_guide_indexes(pg_dsn: str) -> None:
    """All tables exist, with the guide's partial, BRIN and covering indexes and autovacuum."""
    with psycopg.connect(pg_dsn) as conn:
        done = migrate(conn)
        assert [m.name for m in done] == [m.name for m in discover()]
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        assert tables >= {"schema_migrations", "instruments", "firms", "accounts", "orders",
                          "executions", "positions", "fix_sessions"}
        indexes = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        ).fetchall())
        assert "(account, created_at DESC) WHERE (status = ANY (ARRAY['NEW'::text, " \
               "'PARTIALLY_FILLED'::text]))" in indexes["idx_orders_active"]
        assert "USING brin (exec_time) WITH (pages_per_range='128')" in \
               indexes["idx_executions_time_brin"]
        assert "(account, symbol) INCLUDE (side, size, entry_price, leverage)" in \
               indexes["idx_positions_cover"]
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'executions'::regclass").fetchone()
        assert options is not None
        assert set(options[0]) == {"autovacuum_vacuum_scale_factor=0.01",
                                   "autovacuum_analyze_scale_factor=0.005"}
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'orders'").fetchall())
        assert types["price"] == "numeric" and types["quantity"] == "numeric"
        assert types["order_id"] == "bigint"


def test_migrate_twice_applies_nothing_and_check_passes(migrated_dsn: str) -> None:
    """A second run is a no-op and check_schema accepts an up-to-date database."""
    with psycopg.connect(migrated_dsn) as conn:
        assert migrate(conn) == []
        check_schema(conn)
        assert sorted(applied(conn)) == [m.version for m in discover()]


def test_check_schema_names_missing_migration(pg_dsn: str) -> None:
    """A database behind the code fails the check, naming the first missing migration."""
    migrations = discover()
    with psycopg.connect(pg_dsn) as conn:
        with pytest.raises(SchemaError, match=re.escape("missing migration 001_reference.sql")):
            check_schema(conn)
        migrate(conn, migrations[:2])
        with pytest.raises(SchemaError, match=f"missing migration {migrations[2].name}"):
            check_schema(conn, migrations)


def test_check_schema_rejects_changed_and_unknown_migrations(migrated_dsn: str) -> None:
    """An edited applied migration, or one the code does not know, fails the check."""
    migrations = discover()
    edited = [migrations[0]._replace(checksum="0" * 64), *migrations[1:]]
    with psycopg.connect(migrated_dsn) as conn:
        with pytest.raises(SchemaError, match=re.escape("001_reference.sql was changed")):
            check_schema(conn, edited)
        with pytest.raises(SchemaError, match=f"{migrations[-1].name}, which this server"):
            check_schema(conn, migrations[:-1])
        with pytest.raises(SchemaError, match="was changed"):
            migrate(conn, edited)


def test_failed_migration_leaves_nothing_behind(pg_dsn: str, tmp_path: Path) -> None:
    """A migration that fails half-way is rolled back and not recorded."""
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE b (x int); SELECT no_such_column;")
    with psycopg.connect(pg_dsn) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            migrate(conn, discover(str(tmp_path)))
        assert sorted(applied(conn)) == [1]
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)


def test_cli_check_fails_then_migrate_then_check_passes(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 naming the missing migration; a run applies them; then it exits 0."""
    assert main(["--dsn", pg_dsn, "--check"]) == 1
    assert "missing migration 001_reference.sql" in capsys.readouterr().err
    assert main(["--dsn", pg_dsn]) == 0
    assert "applied 001_reference.sql" in capsys.readouterr().out
    assert main(["--dsn", pg_dsn, "--check"]) == 0
    assert "schema up to date" in capsys.readouterr().out


def test_cli_reads_dsn_from_config_and_seeds(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--config` takes the config's PostgresDSN; `--seed` loads its firms and sessions."""
    cfg = tmp_path / "server.cfg"
    cfg.write_text(CONFIG.format(dsn=pg_dsn.replace("\n", " ")))
    assert main(["--config", str(cfg), "--seed"]) == 0
    assert "seeded 2 instruments, 2 firms, 0 accounts, 3 sessions" in capsys.readouterr().out
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM fix_sessions").fetchone() == (3,)


def test_cli_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No DSN anywhere, or --seed without --config, is a usage error (exit 2)."""
    cfg = tmp_path / "server.cfg"
    cfg.write_text("[DEFAULT]\nSenderCompID=EXCH\nSocketAcceptPort=9878\n[SESSION]\n"
                   "TargetCompID=C\nBeginString=FIX.4.4\n")
    assert main(["--config", str(cfg)]) == 2
    assert "sets no PostgresDSN" in capsys.readouterr().err
    assert main(["--dsn", "postgresql://x", "--seed"]) == 2
    assert main([]) == 2


def test_seed_is_idempotent_and_keeps_session_state(migrated_dsn: str) -> None:
    """Seeding twice writes the same rows and never resets a session's sequence numbers."""
    parsed = parse_config(CONFIG.format(dsn="x"))
    # The config's [FIRM] sections as order entry's FirmSettings expose them.
    gamma = SimpleNamespace(firm="GAMMA", accounts=[SimpleNamespace(account="g-1"),
                                                   SimpleNamespace(account="g-2")])
    acme = SimpleNamespace(firm="ACME", accounts=[SimpleNamespace(account="acme-1")])
    config = SimpleNamespace(sessions=parsed.sessions, firms=(gamma, acme))
    with psycopg.connect(migrated_dsn) as conn:
        seed_from_config(conn, config)
        conn.execute("UPDATE fix_sessions SET next_sender_seq = 42 "
                     "WHERE session_id = 'FIX.4.4:EXCH->CLIENT1'")
        conn.commit()
        counts = seed_from_config(conn, config)
        assert counts == (2, 3, 3, 3)
        assert conn.execute("SELECT next_sender_seq, firm_id, role FROM fix_sessions WHERE "
                            "session_id = 'FIX.4.4:EXCH->CLIENT1'").fetchone() == \
            (42, "ACME", "order-entry")
        assert conn.execute("SELECT firm_id FROM firms ORDER BY 1").fetchall() == \
            [("ACME",), ("BETA",), ("GAMMA",)]
        assert conn.execute("SELECT account_id, firm_id FROM accounts ORDER BY 1").fetchall() \
            == [("acme-1", "ACME"), ("g-1", "GAMMA"), ("g-2", "GAMMA")]
        row = conn.execute("SELECT tick_size, lot_size, reference_price, status FROM instruments "
                           "WHERE symbol = 'BTC-PERP'").fetchone()
        assert row is not None
        assert tuple(str(v) for v in row) == ("0.1", "0.001", "60000.0", "TRADING")


def test_seed_updates_changed_instrument_and_takes_explicit_accounts(migrated_dsn: str) -> None:
    """A changed instrument is updated in place; explicit accounts join their firms."""
    btc = demo_instruments()[0]
    with psycopg.connect(migrated_dsn) as conn:
        seed(conn, [btc], [])
        seed(conn, [btc.__class__(**{**btc.to_dict(), "taker_fee_ppm": 700,
                                     "status": btc.status})], [], {"acme-1": "ACME"})
        assert conn.execute("SELECT taker_fee_ppm FROM instruments").fetchone() == (700,)
        assert conn.execute("SELECT account_id, firm_id FROM accounts").fetchall() == \
            [("acme-1", "ACME")]


def test_sql_dir_is_the_repo_folder() -> None:
    """The default migrations folder is the repository's sql/."""
    assert os.path.samefile(SQL_DIR, Path(__file__).parents[2] / "sql")
