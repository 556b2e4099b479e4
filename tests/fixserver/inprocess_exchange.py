"""An in-process exchange (FixServer with order entry, journal, stores) for tests that drive
the application directly, without sockets: its config, FIX messages and start-up."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from fixserver.codec import FixMessage, encode, parse
from fixserver.config import parse_config
from fixserver.server import FixServer

TS = "20240101-00:00:00"

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=1
{default_extra}
[FIRM]
Firm=ACME
Accounts=A1
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
{sessions_extra}"""

DROP_COPY_SESSION = """[SESSION]
TargetCompID=ACMEDC
Firm=ACME
SessionRole=drop-copy
"""


def exchange_config(tmp: Any, postgres_dsn: str | None = None, drop_copy: bool = False) -> str:
    """Two firms (ACME: account A1, session ACME1; BETA: B1, BETA1), journal and stores in
    ``tmp``; optionally Postgres and an ACME drop-copy session (ACMEDC)."""
    return CONFIG.format(
        tmp=tmp,
        default_extra=f"PostgresDSN={postgres_dsn}" if postgres_dsn else "",
        sessions_extra=DROP_COPY_SESSION if drop_copy else "",
    )


def start_exchange(tmp: Any, postgres_dsn: str | None = None, drop_copy: bool = False
                   ) -> FixServer:
    """Build and start the exchange on the global reactor (stop it with ``server.stop()``)."""
    text = exchange_config(tmp, postgres_dsn, drop_copy)
    server = FixServer(parse_config(text, base_dir=str(tmp)), reactor)
    server.start()
    return server


def fix_message(msg_type: str, *body: tuple[int, str]) -> FixMessage:
    """A parsed message as a client would send it (the application reads only the body)."""
    return parse(encode([(35, msg_type), (49, "X"), (56, "EXCH"), (34, 1), (52, TS), *body]))


def new_order(cl_ord_id: str, account: str, side: str, qty: str, price: str,
              symbol: str = "BTC-PERP") -> FixMessage:
    """A limit NewOrderSingle."""
    return fix_message("D", (11, cl_ord_id), (1, account), (55, symbol), (54, side),
                       (60, TS), (38, qty), (40, "2"), (44, price))


def session_of(server: FixServer, client_comp_id: str) -> Any:
    """The server's session with the client ``client_comp_id``."""
    return next(s for s in server.sessions if s.settings.target_comp_id == client_comp_id)
