"""Load the configured reference data into Postgres: instruments, firms, accounts, sessions.

Idempotent: run it at every start-up. Instruments and the configured columns of sessions are
upserted (a changed fee or role is updated); firms and accounts are inserted if missing; the
sequence numbers, state and logon time of a FIX session are never touched here (they belong
to the running server).

Firms are those of the config's ``[FIRM]``/``[ACCOUNT]`` sections (``ServerConfig.firms``,
order entry's FirmSettings) and those named by a session's ``Firm``; accounts are the firms'
configured accounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg

from engine.instruments import Instrument, demo_instruments
from fixserver.settings import SessionSettings


class SeedCounts(NamedTuple):
    """How many of each were written (inserted or updated)."""

    instruments: int
    firms: int
    accounts: int
    sessions: int


_INSTRUMENT_SQL = """
INSERT INTO instruments (symbol, tick_size, lot_size, min_qty, max_qty, multiplier,
                         maker_fee_ppm, taker_fee_ppm, price_band_ppm, reference_price, status)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (symbol) DO UPDATE SET
    tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size,
    min_qty = EXCLUDED.min_qty, max_qty = EXCLUDED.max_qty,
    multiplier = EXCLUDED.multiplier, maker_fee_ppm = EXCLUDED.maker_fee_ppm,
    taker_fee_ppm = EXCLUDED.taker_fee_ppm, price_band_ppm = EXCLUDED.price_band_ppm,
    reference_price = EXCLUDED.reference_price, status = EXCLUDED.status, updated_at = now()
"""

_SESSION_SQL = """
INSERT INTO fix_sessions (session_id, begin_string, sender_comp_id, target_comp_id, role, firm_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (session_id) DO UPDATE SET
    begin_string = EXCLUDED.begin_string, sender_comp_id = EXCLUDED.sender_comp_id,
    target_comp_id = EXCLUDED.target_comp_id, role = EXCLUDED.role, firm_id = EXCLUDED.firm_id
"""


def instrument_params(i: Instrument) -> tuple[Any, ...]:
    """An instrument as the INSERT's parameters (lots and ticks become decimals)."""
    tick, lot = Decimal(i.tick_size), Decimal(i.lot_size)
    return (i.symbol, tick, lot, i.min_qty * lot, i.max_qty * lot, i.multiplier,
            i.maker_fee_ppm, i.taker_fee_ppm, i.price_band_ppm, i.reference_price * tick,
            i.status.name)


def seed(
    conn: psycopg.Connection[Any],
    instruments: Iterable[Instrument],
    sessions: Iterable[SessionSettings],
    accounts: Mapping[str, str] | None = None,
    firms: Iterable[str] = (),
) -> SeedCounts:
    """Write the reference data in one transaction. ``accounts`` maps account id -> firm id;
    the firms written are ``firms``, the sessions' firms and the accounts' firms."""
    instruments = list(instruments)
    sessions = list(sessions)
    accounts = dict(accounts or {})
    all_firms = set(firms) | {s.firm for s in sessions if s.firm} | set(accounts.values())
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_INSTRUMENT_SQL, [instrument_params(i) for i in instruments])
        cur.executemany("INSERT INTO firms (firm_id) VALUES (%s) ON CONFLICT DO NOTHING",
                        [(f,) for f in sorted(all_firms)])
        cur.executemany(
            "INSERT INTO accounts (account_id, firm_id) VALUES (%s, %s) "
            "ON CONFLICT (account_id) DO UPDATE SET firm_id = EXCLUDED.firm_id",
            sorted(accounts.items()),
        )
        cur.executemany(_SESSION_SQL, [
            (s.session_id, s.begin_string, s.sender_comp_id, s.target_comp_id, s.role.value,
             s.firm)
            for s in sessions
        ])
    return SeedCounts(len(instruments), len(all_firms), len(accounts), len(sessions))


def upsert_instruments(dsn: str, instruments: Iterable[Instrument]) -> int:
    """Write instruments listed or changed while running into the reference table (blocking:
    run it off the reactor). Returns how many."""
    rows = [instrument_params(i) for i in instruments]
    with psycopg.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.executemany(_INSTRUMENT_SQL, rows)
    return len(rows)


def seed_from_config(conn: psycopg.Connection[Any], config: Any,
                     instruments: Iterable[Instrument] | None = None) -> SeedCounts:
    """Seed from a ServerConfig's instruments ([INSTRUMENT] sections; without any, the
    built-in demo set the exchange then lists), sessions and firms."""
    firm_settings = getattr(config, "firms", ())
    accounts = {a.account: f.firm for f in firm_settings for a in f.accounts}
    if instruments is None:
        instruments = list(getattr(config, "instruments", ())) or demo_instruments()
    return seed(conn, instruments,
                config.sessions, accounts, [f.firm for f in firm_settings])
