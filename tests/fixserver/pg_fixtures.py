"""Fixtures for tests against the real Postgres: one fresh schema per test.

The DSN comes from FIXEXCHANGE_TEST_DSN (default: the local trust-auth test database that
.ci/run creates). Each test gets its own schema, first on the connection's search_path, so
migrations and the writer create and use tables there; the schema is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from fixserver.pg.migrations import migrate

TEST_DSN = os.environ.get(
    "FIXEXCHANGE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/fixexchange_test"
)


def schema_dsn(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` first on the search_path."""
    return make_conninfo(dsn, options=f"-c search_path={schema}")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose search_path is a new empty schema (dropped after the test)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(TEST_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot reach the test Postgres at {TEST_DSN} (set FIXEXCHANGE_TEST_DSN): "
                    f"{exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield schema_dsn(TEST_DSN, schema)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def migrated_dsn(pg_dsn: str) -> str:
    """Like pg_dsn, with every migration applied."""
    with psycopg.connect(pg_dsn) as conn:
        migrate(conn)
    return pg_dsn
