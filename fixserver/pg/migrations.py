"""Numbered SQL migrations: apply them (an ops command) and check them at start-up.

Theory of operation
-------------------
``sql/NNN_name.sql`` files are applied in version order, each in its own transaction together
with its row in ``schema_migrations`` (version, name, sha256 of the file, time applied), so
a failed migration leaves nothing half-applied. A session advisory lock serialises two
processes migrating the same database at once. Objects are created unqualified, i.e. in the
first schema of the connection's ``search_path`` (tests use one schema per test).

``check_schema`` is what the server runs at start-up: it raises :class:`SchemaError` naming
the first missing migration (or a changed or unknown one) rather than letting the writer fail
later on a missing column.

Command line (wired by the lead as ``fixserver migrate``)::

    python -m fixserver.pg.migrations --dsn DSN [--check]
    python -m fixserver.pg.migrations --config ops/fixserver.cfg [--check | --seed]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "sql")
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x46495845  # "FIXE": the advisory lock taken while migrating

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaError(Exception):
    """The database schema does not match the migrations this server was built with."""


class Migration(NamedTuple):
    """One migration file."""

    version: int
    name: str  # the file name, e.g. 001_reference.sql
    sql: str
    checksum: str  # sha256 hex of the file's bytes


def discover(directory: str = SQL_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version; versions must run 1, 2, 3... without gaps."""
    found: list[Migration] = []
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".sql"):
            continue
        match = _NAME.match(entry)
        if match is None:
            raise SchemaError(f"migration file {entry!r} is not named NNN_lowercase_name.sql")
        with open(os.path.join(directory, entry), "rb") as f:
            data = f.read()
        found.append(Migration(int(match.group(1)), entry, data.decode("utf-8"),
                               hashlib.sha256(data).hexdigest()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(
                f"migrations must be numbered 001, 002, ... without gaps or duplicates: "
                f"expected {expected:03d}, found {migration.name}"
            )
    if not found:
        raise SchemaError(f"no migrations found in {directory}")
    return found


def applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of the migrations recorded in the database."""
    # In a transaction block of its own (a savepoint inside the caller's), so a check does not
    # leave the connection idle in a transaction.
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return {}
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def _problems(
    migrations: Sequence[Migration], done: dict[int, tuple[str, str]]
) -> tuple[list[Migration], list[str]]:
    """(missing migrations, errors about changed or unknown ones)."""
    errors = []
    known = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(done.items()):
        m = known.get(version)
        if m is None:
            errors.append(f"the database has migration {name}, which this server does not know "
                          f"(is the server older than the database?)")
        elif m.checksum != checksum:
            errors.append(f"migration {m.name} was changed after it was applied "
                          f"(checksum {checksum[:12]} in the database, {m.checksum[:12]} on disk)")
    missing = [m for m in migrations if m.version not in done]
    return missing, errors


def migrate(conn: psycopg.Connection[Any],
            migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply every missing migration (each in its own transaction); return those applied."""
    migrations = discover() if migrations is None else migrations
    was_autocommit = conn.autocommit
    conn.autocommit = True  # each migration commits on its own; the lock outlives them
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(_CREATE_TABLE)
        missing, errors = _problems(migrations, applied(conn))
        if errors:
            raise SchemaError("; ".join(errors))
        for m in missing:
            with conn.transaction():
                conn.execute(m.sql.encode("utf-8"))  # bytes: several statements, no params
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
        return list(missing)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        conn.autocommit = was_autocommit


def check_schema(conn: psycopg.Connection[Any],
                 migrations: Sequence[Migration] | None = None) -> None:
    """Raise SchemaError naming what is missing, changed or unknown; return if up to date."""
    migrations = discover() if migrations is None else migrations
    missing, errors = _problems(migrations, applied(conn))
    if missing:
        errors.insert(0, f"the database is missing migration {missing[0].name}"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                         + "; run `fixserver migrate` (python -m fixserver.pg.migrations)")
    if errors:
        raise SchemaError("; ".join(errors))


def _load(args: argparse.Namespace) -> tuple[str, Any]:
    """(DSN, ServerConfig or None) from --dsn / --config."""
    if args.seed and not args.config:
        raise SchemaError("--seed needs --config (the sessions and firms to load)")
    config = None
    if args.config:
        from fixserver.config import load_config

        config = load_config(args.config)
    dsn = args.dsn or (config.postgres_dsn if config is not None else None)
    if not dsn:
        raise SchemaError(f"{args.config} sets no PostgresDSN; pass --dsn")
    return str(dsn), config


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the migrate command (the lead's CLI can reuse this parser's options)."""
    parser = argparse.ArgumentParser(
        prog="fixserver migrate", description="apply or check the Postgres schema migrations"
    )
    parser.add_argument("--dsn", help="libpq connection string or URI (default: the config's)")
    parser.add_argument("--config", metavar="FILE", help="server config file (its PostgresDSN)")
    parser.add_argument("--seed", action="store_true",
                        help="after migrating, load the instruments ([INSTRUMENT] "
                             "sections; none: the built-in demo set), firms, accounts and "
                             "sessions of --config")
    parser.add_argument("--check", action="store_true",
                        help="only check; exit 1 if a migration is missing or changed")
    parser.add_argument("--sql-dir", default=SQL_DIR, help="folder of the NNN_*.sql files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 = up to date, 1 = schema problem or database error, 2 = bad config."""
    args = build_parser().parse_args(argv)
    if not args.dsn and not args.config:
        print("fixserver migrate: pass --dsn or --config", file=sys.stderr)
        return 2
    try:
        dsn, config = _load(args)
    except Exception as exc:  # ConfigError or no DSN: the config is what needs fixing
        print(f"fixserver migrate: {exc}", file=sys.stderr)
        return 2
    try:
        migrations = discover(args.sql_dir)
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            if args.check:
                check_schema(conn, migrations)
                print(f"schema up to date ({len(migrations)} migrations)")
                return 0
            done = migrate(conn, migrations)
            if args.seed:
                from fixserver.pg.seed import seed_from_config

                counts = seed_from_config(conn, config)
                print(f"seeded {counts.instruments} instruments, {counts.firms} firms, "
                      f"{counts.accounts} accounts, {counts.sessions} sessions")
    except (SchemaError, psycopg.Error) as exc:
        print(f"fixserver migrate: {exc}", file=sys.stderr)
        return 1
    for m in done:
        print(f"applied {m.name}")
    print(f"schema up to date ({len(migrations)} migrations, {len(done)} applied now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
