"""The server's configuration file: QuickFIX's INI format, QuickFIX's setting names.

Theory of operation
-------------------
A file holds one ``[DEFAULT]`` section and one ``[SESSION]`` section per counterparty, each a
list of ``Key=Value`` lines (``#`` or ``;`` starts a comment line). Every ``[SESSION]`` inherits
the ``[DEFAULT]`` values and may override them. Server-wide settings (listen addresses, TLS,
HTTP, stores, services) are read from ``[DEFAULT]`` only.

Order entry adds three section kinds of this server's own (QuickFIX has no such sections): a
``[FIRM]`` section (``Firm``, ``Accounts`` = comma-separated account ids, ``MaxOpenOrders`` =
limit per account), an ``[ACCOUNT]`` section (``Account``, ``Firm``, ``MaxOpenOrders``)
for an account with its own limit, an ``[INSTRUMENT]`` section per listed instrument
(:mod:`fixserver.instrument_config`) and ``[FUNDING]`` sections (collateral accounts start
with, :mod:`fixserver.funding_config`). They inherit nothing from ``[DEFAULT]``.

Unlike QuickFIX, a key this server does not know is an error, not silently ignored: a mistyped
``Starttime`` must stop start-up rather than leave a session open around the clock. Every error
is a ``ConfigError`` naming the setting, the section and the line. ``ops/README.md`` is the
reference of every key.
"""

from __future__ import annotations

import datetime
import difflib
import os
from typing import Callable

import attr

from engine.instruments import Instrument
from fixserver.admin.tokens import (
    AdminToken,
    TokenError,
    check_unique,
    parse_token_file,
    parse_token_list,
)
from fixserver.dictionary import quickfix_spec_path
from fixserver.funding_config import (
    FUNDING_KEYS,
    REQUIRED_FUNDING_KEYS,
    Funding,
    build_funding,
    settlement_assets,
)
from fixserver.instrument_config import INSTRUMENT_KEYS, REQUIRED_KEYS, build_instrument
from fixserver.orderentry.firms import AccountSettings, FirmSettings
from fixserver.settings import LogonAuth, SessionRole, SessionSettings

#: ``DataDictionary=quickfix:FIX44.xml`` names a standard dictionary installed by quickfix
QUICKFIX_SPEC_PREFIX = "quickfix:"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting and where it is."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TlsSettings:
    """The optional TLS listening port."""

    port: int
    certificate_file: str
    key_file: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ServerConfig:
    """Everything the composition root needs to start the server."""

    sessions: tuple[SessionSettings, ...]
    accept_address: str = "0.0.0.0"
    accept_port: int = 0
    tls: TlsSettings | None = None
    http_address: str = "127.0.0.1"
    #: None = no HTTP side
    http_port: int | None = None
    #: admin API bearer tokens (AdminToken, AdminTokenFile); none = every /admin request 403
    admin_tokens: tuple[AdminToken, ...] = ()
    #: the admin API's own port; None = the admin API is on the HTTP port
    admin_port: int | None = None
    admin_address: str = "127.0.0.1"
    #: directory of the durable message stores; None = in-memory stores (not durable)
    file_store_path: str | None = None
    #: seconds between group commits (fsync) of the message stores
    store_sync_interval: float = 0.005
    #: ResendRequests answered at once across the server; more wait for one to end
    max_concurrent_resends: int = 4
    postgres_dsn: str | None = None
    redis_url: str | None = None
    #: key prefix of everything the feed writes to Redis (several exchanges, or tests, in one db)
    redis_key_prefix: str = "md"
    #: WebSocket market-data feed; None = no WebSocket feed
    websocket_port: int | None = None
    websocket_address: str = "127.0.0.1"
    websocket_max_connections_per_address: int = 100
    #: per-connection send queue before a slow WebSocket consumer is closed (4008)
    websocket_max_buffer_bytes: int = 4 * 1024 * 1024
    #: milliseconds between feed batches (WebSocket, Redis and FIX market data)
    feed_batch_interval_ms: float = 10.0
    #: seconds a clean shutdown waits for the Logout replies
    shutdown_timeout: float = 2.0
    socket_nodelay: bool = True
    #: listen(2) backlog of the FIX and WebSocket ports (the kernel caps it at somaxconn)
    listen_backlog: int = 1024
    #: path the file was read from (relative paths inside it are resolved against its folder)
    source: str | None = None
    #: order entry: member firms and their accounts ([FIRM]/[ACCOUNT] sections)
    firms: tuple[FirmSettings, ...] = ()
    #: order entry: directory of the command journal and snapshots (JournalPath)
    journal_path: str | None = None
    #: order entry: the listed instruments ([INSTRUMENT] sections); empty = the demo set
    instruments: tuple[Instrument, ...] = ()
    #: order entry: start-up collateral of accounts never funded ([FUNDING] sections)
    funding: tuple[Funding, ...] = ()
    #: order entry: a margined instrument whose index price is older than this many seconds
    #: makes /health "degraded" (the mark follows the index)
    index_stale_seconds: float = 30.0
    #: order entry: seconds between a cancel-on-disconnect session's disconnect and the
    #: cancel of its orders (a logon within it keeps them); 0 = at once
    cancel_on_disconnect_delay: float = 0.0
    #: order entry: a snapshot after this many commands or seconds since the last one,
    #: whichever comes first (recovery replays at most that much journal)
    snapshot_every_commands: int = 250_000
    snapshot_every_seconds: float = 300.0
    #: order entry: serialise engine snapshots in a forked child (copy-on-write) rather
    #: than on the reactor thread (fixserver.snapshot_fork)
    snapshot_in_child: bool = True
    #: seconds between the order pipeline's timer ticks (idle time ticks, due snapshots);
    #: requests never wait for it: they are matched on the next reactor turn or when the
    #: journal commit in flight ends
    tick_interval: float = 0.01
    #: Postgres: at most one mark_prices row per symbol this often (by event time)
    mark_history_every_seconds: float = 10.0
    #: order entry: trading days an ended order stays known to status requests (1 = the rest
    #: of the day it ended in)
    order_retention_days: int = 1
    #: order entry: at most this many ended orders are kept in memory (oldest-ended leave
    #: first; with Postgres, status requests for them are answered from it)
    max_ended_orders_in_memory: int = 100_000
    #: order entry: UTC time of day the trading day ends (DAY orders expire); None = the
    #: order-entry sessions' StartTime when they agree, else 00:00:00
    trading_day_end: datetime.time | None = None
    #: the application behind the sessions (Application): "exchange" (order entry, or
    #: reject-all without [FIRM]s) or "echo" (conformance runs: fixserver.echo_application)
    application: str = "exchange"


# --- value parsers: each raises ValueError with a short description of what was expected ---


def _parse_bool(value: str) -> bool:
    upper = value.upper()
    if upper in ("Y", "YES", "TRUE", "1"):
        return True
    if upper in ("N", "NO", "FALSE", "0"):
        return False
    raise ValueError("expected Y or N")


def _parse_non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise ValueError("expected a whole number >= 0")
    return int(value)


def _parse_positive_int(value: str) -> int:
    number = _parse_non_negative_int(value)
    if number == 0:
        raise ValueError("expected a whole number > 0")
    return number


def _parse_port(value: str) -> int:
    number = _parse_non_negative_int(value)
    if number > 65535:
        raise ValueError("expected a TCP port 0..65535")
    return number


def _parse_positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number > 0") from None
    if not number > 0:
        raise ValueError("expected a number > 0")
    return number


def _parse_non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number >= 0") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError("expected a number >= 0")
    return number


def _parse_redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://host:port/db (or rediss://, unix://)")
    return value


def _parse_key_prefix(value: str) -> str:
    if not value or any(c.isspace() or c in "*?[]" for c in value):
        raise ValueError("expected a non-empty prefix without spaces or glob characters")
    return value


def _parse_time(value: str) -> datetime.time:
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError("expected HH:MM:SS (UTC)")
    hour, minute, second = (int(p) for p in parts)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("expected HH:MM:SS (UTC)")
    return datetime.time(hour, minute, second)


_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _parse_day(value: str) -> int:
    lower = value.lower()
    # QuickFIX accepts a day name or any prefix of at least two letters ("mo", "tu", ...).
    matches = [i for i, name in enumerate(_DAYS) if len(lower) >= 2 and name.startswith(lower)]
    if len(matches) != 1:
        raise ValueError("expected a day name such as Monday or Mo")
    return matches[0]


def _parse_role(value: str) -> SessionRole:
    for role in SessionRole:
        if role.value == value.lower():
            return role
    raise ValueError("expected one of " + ", ".join(r.value for r in SessionRole))


def _parse_hex_key(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ValueError("expected the key as hexadecimal digits") from None
    if len(key) < 16:
        raise ValueError("expected at least 16 bytes (32 hex digits)")
    return key


def _parse_begin_string(value: str) -> str:
    if value not in ("FIX.4.0", "FIX.4.1", "FIX.4.2", "FIX.4.3", "FIX.4.4"):
        raise ValueError("expected FIX.4.0 .. FIX.4.4")
    return value


def _parse_comp_id(value: str) -> str:
    if not value or "\x01" in value or "=" in value:
        raise ValueError("expected a non-empty CompID without '=' or SOH")
    return value


def _parse_text(value: str) -> str:
    if not value:
        raise ValueError("expected a value")
    return value


APPLICATIONS = ("exchange", "echo")


def _parse_application(value: str) -> str:
    if value.lower() not in APPLICATIONS:
        raise ValueError("expected one of " + ", ".join(APPLICATIONS))
    return value.lower()


def _parse_acceptor(value: str) -> str:
    if value.lower() != "acceptor":
        raise ValueError("this server is an acceptor: expected acceptor")
    return value


# Per-session keys: QuickFIX name -> (SessionSettings field, parser). ``None`` as the field
# means the key is accepted and checked but has no SessionSettings counterpart.
_SESSION_KEYS: dict[str, tuple[str | None, Callable[[str], object]]] = {
    "BeginString": ("begin_string", _parse_begin_string),
    "SenderCompID": ("sender_comp_id", _parse_comp_id),
    "TargetCompID": ("target_comp_id", _parse_comp_id),
    "SenderSubID": ("sender_sub_id", _parse_text),
    "TargetSubID": ("target_sub_id", _parse_text),
    "SessionQualifier": ("session_qualifier", _parse_text),
    "ConnectionType": (None, _parse_acceptor),
    "SessionRole": ("role", _parse_role),
    "Firm": ("firm", _parse_text),
    "DataDictionary": ("data_dictionary", _parse_text),
    "UseDataDictionary": ("use_data_dictionary", _parse_bool),
    "ValidateFieldsOutOfOrder": ("validate_fields_out_of_order", _parse_bool),
    "ValidateFieldsHaveValues": ("validate_fields_have_values", _parse_bool),
    "ValidateUserDefinedFields": ("validate_user_defined_fields", _parse_bool),
    "AllowUnknownMsgFields": ("allow_unknown_msg_fields", _parse_bool),
    "HeartBtInt": ("heart_bt_int", _parse_positive_int),
    "ResetOnLogon": ("reset_on_logon", _parse_bool),
    "ResetOnLogout": ("reset_on_logout", _parse_bool),
    "ResetOnDisconnect": ("reset_on_disconnect", _parse_bool),
    "RefreshOnLogon": ("refresh_on_logon", _parse_bool),
    "StartTime": ("start_time", _parse_time),
    "EndTime": ("end_time", _parse_time),
    "StartDay": ("start_day", _parse_day),
    "EndDay": ("end_day", _parse_day),
    "CheckLatency": ("check_latency", _parse_bool),
    "MaxLatency": ("max_latency", _parse_positive_int),
    "CheckCompID": ("check_comp_id", _parse_bool),
    "LogonTimeout": ("logon_timeout", _parse_positive_int),
    "LogoutTimeout": ("logout_timeout", _parse_positive_int),
    "TestRequestDelayMultiplier": ("test_request_delay_multiplier", _parse_positive_float),
    "HeartBeatTimeoutMultiplier": ("heartbeat_timeout_multiplier", _parse_positive_float),
    "ResendChunkMessages": ("resend_chunk_messages", _parse_positive_int),
    "ResendChunkBytes": ("resend_chunk_bytes", _parse_positive_int),
    "ResendRate": ("resend_rate", _parse_non_negative_int),
    "Username": ("username", _parse_text),
    "Password": ("password", _parse_text),
    "HmacKey": ("hmac_key", _parse_hex_key),
    "HmacWindow": ("hmac_window", _parse_positive_int),
    "LogonLockoutFailures": ("logon_lockout_failures", _parse_non_negative_int),
    "LogonLockoutSeconds": ("logon_lockout_seconds", _parse_positive_int),
    "CancelOnDisconnect": ("cancel_on_disconnect", _parse_bool),
    "ThrottleRate": ("throttle_rate", _parse_positive_int),
    "DefaultSTP": ("default_stp", _parse_text),
    "MaxOutputBuffer": ("max_output_buffer", _parse_positive_int),
    "MaxGarbledMessages": ("max_garbled_messages", _parse_non_negative_int),
    "GarbledMessageWindow": ("garbled_message_window", _parse_positive_int),
}

# Server-wide keys, read from [DEFAULT]: QuickFIX name -> (ServerConfig field, parser).
_SERVER_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "SocketAcceptAddress": ("accept_address", _parse_text),
    "SocketAcceptPort": ("accept_port", _parse_port),
    "SocketNodelay": ("socket_nodelay", _parse_bool),
    "ListenBacklog": ("listen_backlog", _parse_positive_int),
    "SocketAcceptPortTLS": ("tls_port", _parse_port),
    "ServerCertificateFile": ("certificate_file", _parse_text),
    "ServerCertificateKeyFile": ("key_file", _parse_text),
    "HttpAddress": ("http_address", _parse_text),
    "HttpPort": ("http_port", _parse_port),
    "FileStorePath": ("file_store_path", _parse_text),
    "StoreSyncInterval": ("store_sync_interval", _parse_positive_float),
    "MaxConcurrentResends": ("max_concurrent_resends", _parse_positive_int),
    "PostgresDSN": ("postgres_dsn", _parse_text),
    "RedisURL": ("redis_url", _parse_redis_url),
    "RedisKeyPrefix": ("redis_key_prefix", _parse_key_prefix),
    "WebSocketAddress": ("websocket_address", _parse_text),
    "WebSocketPort": ("websocket_port", _parse_port),
    "WebSocketMaxConnectionsPerAddress": (
        "websocket_max_connections_per_address", _parse_positive_int),
    "WebSocketMaxBufferBytes": ("websocket_max_buffer_bytes", _parse_positive_int),
    "FeedBatchInterval": ("feed_batch_interval_ms", _parse_positive_float),
    "ShutdownTimeout": ("shutdown_timeout", _parse_positive_float),
    "JournalPath": ("journal_path", _parse_text),
    "CancelOnDisconnectDelay": ("cancel_on_disconnect_delay", _parse_non_negative_float),
    "TradingDayEnd": ("trading_day_end", _parse_time),
    "OrderRetentionDays": ("order_retention_days", _parse_positive_int),
    "MaxEndedOrdersInMemory": ("max_ended_orders_in_memory", _parse_non_negative_int),
    "SnapshotEveryCommands": ("snapshot_every_commands", _parse_positive_int),
    "SnapshotInChild": ("snapshot_in_child", _parse_bool),
    "TickInterval": ("tick_interval", _parse_positive_float),
    "SnapshotEverySeconds": ("snapshot_every_seconds", _parse_positive_float),
    "MarkHistoryEverySeconds": ("mark_history_every_seconds", _parse_positive_float),
    "Application": ("application", _parse_application),
    "IndexStaleSeconds": ("index_stale_seconds", _parse_positive_float),
    "AdminToken": ("admin_token", _parse_text),
    "AdminTokenFile": ("admin_token_file", _parse_text),
    "AdminAddress": ("admin_address", _parse_text),
    "AdminPort": ("admin_port", _parse_port),
}

# [FIRM] and [ACCOUNT] keys (order entry): key -> parser.
_FIRM_KEYS: dict[str, Callable[[str], object]] = {
    "Firm": _parse_comp_id,
    "Accounts": _parse_text,
    "MaxOpenOrders": _parse_non_negative_int,
}
_ACCOUNT_KEYS: dict[str, Callable[[str], object]] = {
    "Account": _parse_comp_id,
    "Firm": _parse_comp_id,
    "MaxOpenOrders": _parse_non_negative_int,
}

#: this server's own sections (QuickFIX has none of them): name -> its keys
_OWN_SECTIONS: dict[str, dict[str, Callable[[str], object]]] = {
    "FIRM": _FIRM_KEYS, "ACCOUNT": _ACCOUNT_KEYS, "INSTRUMENT": INSTRUMENT_KEYS,
    "FUNDING": FUNDING_KEYS,
}

_PATH_SERVER_FIELDS = ("certificate_file", "key_file", "file_store_path", "journal_path")
_ALL_KEYS = {k.lower(): k for k in (*_SESSION_KEYS, *_SERVER_KEYS)}


@attr.s(slots=True, auto_attribs=True)
class _Section:
    name: str  # "DEFAULT", "SESSION", "FIRM", "ACCOUNT", "INSTRUMENT" or "FUNDING"
    line: int
    ordinal: int  # 1-based number of this [SESSION]; 0 for [DEFAULT]
    #: canonical key -> (value, line)
    values: dict[str, tuple[str, int]] = attr.Factory(dict)

    def where(self) -> str:
        if self.name == "DEFAULT":
            return f"[DEFAULT] (line {self.line})"
        return f"[{self.name}] #{self.ordinal} (line {self.line})"


def _split_sections(
    text: str, source: str, firm_sections: list[_Section] | None = None
) -> tuple[_Section, list[_Section]]:
    """[DEFAULT] and the [SESSION]s; [FIRM]/[ACCOUNT] sections go to ``firm_sections``."""
    default = _Section("DEFAULT", 0, 0)
    sessions: list[_Section] = []
    if firm_sections is None:
        firm_sections = []
    current: _Section | None = None
    seen_default = False
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{source}:{number}: section header {line!r} lacks ']'")
            name = line[1:-1].strip().upper()
            if name == "DEFAULT":
                if seen_default:
                    raise ConfigError(f"{source}:{number}: a second [DEFAULT] section")
                if sessions:
                    raise ConfigError(f"{source}:{number}: [DEFAULT] must come before [SESSION]")
                seen_default = True
                default.line = number
                current = default
            elif name == "SESSION":
                current = _Section("SESSION", number, len(sessions) + 1)
                sessions.append(current)
            elif name in _OWN_SECTIONS:
                ordinal = 1 + sum(1 for f in firm_sections if f.name == name)
                current = _Section(name, number, ordinal)
                firm_sections.append(current)
            else:
                raise ConfigError(
                    f"{source}:{number}: unknown section [{line[1:-1]}]; "
                    "expected [DEFAULT], [SESSION], [FIRM], [ACCOUNT], [INSTRUMENT] or "
                    "[FUNDING]"
                )
            continue
        if current is None:
            raise ConfigError(f"{source}:{number}: setting before any [DEFAULT] or [SESSION]")
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{source}:{number}: expected Key=Value, got {line!r}")
        known = _ALL_KEYS
        if current.name in _OWN_SECTIONS:
            keys = _OWN_SECTIONS[current.name]
            known = {k.lower(): k for k in keys}
        canonical = known.get(key.lower())
        if canonical is None:
            close = difflib.get_close_matches(key, list(known.values()), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{source}:{number}: unknown setting {key} in {current.where()}{hint}"
            )
        if canonical in current.values:
            raise ConfigError(
                f"{source}:{number}: {canonical} set twice in {current.where()} "
                f"(first on line {current.values[canonical][1]})"
            )
        current.values[canonical] = (value, number)
    return default, sessions


def _resolve_path(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _parse_value(
    source: str, section: _Section, key: str, parser: Callable[[str], object]
) -> object:
    value, line = section.values[key]
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError(f"{source}:{line}: {key}={value!r} in {section.where()}: {exc}") from None


def _build_session(
    source: str, base_dir: str, default: _Section, section: _Section
) -> SessionSettings:
    merged = _Section(section.name, section.line, section.ordinal)
    merged.values = {**default.values, **section.values}
    kwargs: dict[str, object] = {}
    for key in merged.values:
        spec = _SESSION_KEYS.get(key)
        if spec is None:
            if key in section.values:
                raise ConfigError(
                    f"{source}:{section.values[key][1]}: {key} is server-wide: "
                    f"set it in [DEFAULT], not in {section.where()}"
                )
            continue
        field, parser = spec
        parsed = _parse_value(source, merged, key, parser)
        if field is not None:
            kwargs[field] = parsed

    for required in ("BeginString", "SenderCompID", "TargetCompID"):
        if required not in merged.values:
            raise ConfigError(f"{source}: {required} is missing in {section.where()}")

    def fail(key: str, message: str) -> ConfigError:
        line = merged.values[key][1] if key in merged.values else section.line
        return ConfigError(f"{source}:{line}: {key} in {section.where()}: {message}")

    if ("StartTime" in merged.values) != ("EndTime" in merged.values):
        missing = "EndTime" if "StartTime" in merged.values else "StartTime"
        raise ConfigError(
            f"{source}: {missing} is missing in {section.where()} "
            "(StartTime and EndTime go together)"
        )
    if ("StartDay" in merged.values) != ("EndDay" in merged.values):
        raise fail("StartDay", "StartDay and EndDay go together")
    if "StartDay" in merged.values and "StartTime" not in merged.values:
        raise fail("StartDay", "a weekly window needs StartTime and EndTime")

    if "hmac_key" in kwargs and "password" in kwargs:
        raise fail("HmacKey", "set either HmacKey or Password, not both")
    if "hmac_key" in kwargs:
        kwargs["auth"] = LogonAuth.HMAC
    elif "password" in kwargs:
        kwargs["auth"] = LogonAuth.PASSWORD
    elif "username" in kwargs:
        raise fail("Username", "a Username needs a Password")

    if "data_dictionary" in kwargs:
        value = str(kwargs["data_dictionary"])
        if value.startswith(QUICKFIX_SPEC_PREFIX):
            # A standard dictionary as the quickfix package installs it (share/quickfix/).
            path = quickfix_spec_path(value[len(QUICKFIX_SPEC_PREFIX) :])
            if not os.path.isfile(path):
                raise fail("DataDictionary", f"{path} is not installed (pip install quickfix)")
        else:
            path = _resolve_path(value, base_dir)
            if not os.path.isfile(path):
                raise fail("DataDictionary", f"no such file {path}")
        kwargs["data_dictionary"] = path

    return SessionSettings(**kwargs)  # type: ignore[arg-type]


def parse_config(text: str, source: str = "<config>", base_dir: str = ".") -> ServerConfig:
    """Build a ServerConfig from the text of a config file; raises ConfigError."""
    firm_sections: list[_Section] = []
    default, session_sections = _split_sections(text, source, firm_sections)
    if not session_sections:
        raise ConfigError(f"{source}: no [SESSION] section: the server would serve nobody")

    sessions: list[SessionSettings] = []
    seen: dict[str, _Section] = {}
    for section in session_sections:
        settings = _build_session(source, base_dir, default, section)
        first = seen.get(settings.session_id)
        if first is not None:
            raise ConfigError(
                f"{source}: {section.where()} repeats session {settings.session_id} "
                f"of {first.where()}"
            )
        seen[settings.session_id] = section
        sessions.append(settings)

    server: dict[str, object] = {}
    for key in default.values:
        spec = _SERVER_KEYS.get(key)
        if spec is not None:
            server[spec[0]] = _parse_value(source, default, key, spec[1])
    for field in _PATH_SERVER_FIELDS:
        if field in server:
            server[field] = _resolve_path(str(server[field]), base_dir)

    if "accept_port" not in server:
        raise ConfigError(f"{source}: SocketAcceptPort is missing in [DEFAULT]")

    tls_port = server.pop("tls_port", None)
    certificate = server.pop("certificate_file", None)
    key_file = server.pop("key_file", None)
    if tls_port is not None:
        for name, value in (
            ("ServerCertificateFile", certificate),
            ("ServerCertificateKeyFile", key_file),
        ):
            if value is None:
                raise ConfigError(
                    f"{source}: {name} is missing in [DEFAULT] (SocketAcceptPortTLS needs it)"
                )
            if not os.path.isfile(str(value)):
                line = default.values[name][1]
                raise ConfigError(f"{source}:{line}: {name}: no such file {value}")
        server["tls"] = TlsSettings(int(tls_port), str(certificate), str(key_file))  # type: ignore[call-overload]
    elif certificate is not None or key_file is not None:
        raise ConfigError(
            f"{source}: ServerCertificateFile/ServerCertificateKeyFile are set "
            "but SocketAcceptPortTLS is not"
        )

    if "websocket_port" not in server:
        for name in ("WebSocketAddress", "WebSocketMaxConnectionsPerAddress",
                     "WebSocketMaxBufferBytes"):
            if name in default.values:
                raise ConfigError(
                    f"{source}:{default.values[name][1]}: {name} is set in [DEFAULT] "
                    "but WebSocketPort is not (no WebSocket feed)"
                )
    if "RedisKeyPrefix" in default.values and "redis_url" not in server:
        raise ConfigError(
            f"{source}:{default.values['RedisKeyPrefix'][1]}: RedisKeyPrefix is set in "
            "[DEFAULT] but RedisURL is not"
        )

    _admin_settings(source, base_dir, default, server)
    firms = _build_firms(source, firm_sections)
    server["instruments"] = _build_instruments(source, firm_sections)
    server["funding"] = _build_funding(source, firm_sections, firms, server["instruments"])  # type: ignore[arg-type]
    if not firms or server.get("application") == "echo":
        for name in ("WebSocketPort", "RedisURL"):
            if name in default.values:
                raise ConfigError(
                    f"{source}:{default.values[name][1]}: {name}: market data comes from the "
                    "exchange's order book, which needs order entry ([FIRM] sections and "
                    "Application=exchange)"
                )
    if firms:
        known = {f.firm for f in firms}
        for settings, section in zip(sessions, session_sections):
            if settings.firm is not None and settings.firm not in known:
                raise ConfigError(
                    f"{source}: Firm={settings.firm} in {section.where()} has no [FIRM] section"
                )
    return ServerConfig(
        sessions=tuple(sessions), source=source, firms=firms, **server  # type: ignore[arg-type]
    )


def _build_instruments(source: str, sections: list[_Section]) -> tuple[Instrument, ...]:
    """The [INSTRUMENT] sections (fixserver.instrument_config), in configuration order."""
    out: list[Instrument] = []
    where: dict[str, _Section] = {}
    for section in sections:
        if section.name != "INSTRUMENT":
            continue
        for required in REQUIRED_KEYS:
            if required not in section.values:
                raise ConfigError(f"{source}: {required} is missing in {section.where()}")
        values = {key: _parse_value(source, section, key, INSTRUMENT_KEYS[key])
                  for key in section.values}

        def fail(key: str, message: str, section: _Section = section) -> ConfigError:
            value, line = section.values[key]
            return ConfigError(f"{source}:{line}: {key}={value!r} in {section.where()}: "
                               f"{message}")

        instrument = build_instrument(values, fail)
        first = where.get(instrument.symbol)
        if first is not None:
            raise ConfigError(f"{source}: {section.where()} repeats Symbol="
                              f"{instrument.symbol} of {first.where()}")
        for other in out:  # the engine keeps one balance per asset: one minor unit too
            if (other.margined and instrument.margined
                    and other.settlement_asset == instrument.settlement_asset
                    and other.settlement_decimals != instrument.settlement_decimals):
                raise fail("MaxLeverage" if "SettlementDecimals" not in section.values
                           else "SettlementDecimals",
                           f"{instrument.settlement_asset} has {other.settlement_decimals} "
                           f"decimals in {where[other.symbol].where()} "
                           f"(SettlementDecimals must agree for one asset)")
        where[instrument.symbol] = section
        out.append(instrument)
    return tuple(out)


def _build_funding(source: str, sections: list[_Section], firms: tuple[FirmSettings, ...],
                   instruments: tuple[Instrument, ...]) -> tuple[Funding, ...]:
    """The [FUNDING] sections (fixserver.funding_config); an account funded once per asset."""
    accounts = [a.account for f in firms for a in f.accounts]
    assets = settlement_assets(instruments)
    out: list[Funding] = []
    where: dict[tuple[str, str], _Section] = {}
    for section in sections:
        if section.name != "FUNDING":
            continue
        for required in REQUIRED_FUNDING_KEYS:
            if required not in section.values:
                raise ConfigError(f"{source}: {required} is missing in {section.where()}")
        values = {key: _parse_value(source, section, key, FUNDING_KEYS[key])
                  for key in section.values}

        def fail(key: str, message: str, section: _Section = section) -> ConfigError:
            value, line = section.values[key]
            return ConfigError(f"{source}:{line}: {key}={value!r} in {section.where()}: "
                               f"{message}")

        for row in build_funding(values, accounts, assets, fail):
            first = where.get((row.account, row.asset))
            if first is not None:
                raise fail("Accounts", f"account {row.account} is funded in {row.asset} "
                                       f"already by {first.where()}")
            where[(row.account, row.asset)] = section
            out.append(row)
    return tuple(out)


def _admin_settings(
    source: str, base_dir: str, default: _Section, server: dict[str, object]
) -> None:
    """AdminToken and AdminTokenFile become ``admin_tokens`` (fixserver.admin.tokens; no
    error message shows a secret); the token file must not be accessible to others;
    AdminAddress needs AdminPort, and tokens need a port to be served on."""
    tokens: list[AdminToken] = []
    listed = server.pop("admin_token", None)
    if listed is not None:
        line = default.values["AdminToken"][1]
        try:
            tokens += parse_token_list(str(listed))
        except TokenError as exc:
            raise ConfigError(f"{source}:{line}: AdminToken in [DEFAULT]: {exc}") from None
    path = server.pop("admin_token_file", None)
    if path is not None:
        line = default.values["AdminTokenFile"][1]
        path = _resolve_path(str(path), base_dir)
        where = f"{source}:{line}: AdminTokenFile {path}"
        try:
            with open(path, encoding="utf-8") as handle:
                if os.fstat(handle.fileno()).st_mode & 0o007:
                    raise ConfigError(f"{where}: other users may access it (chmod o-rwx)")
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read it: {exc}") from None
        try:
            tokens += parse_token_file(text)
        except TokenError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    try:
        server["admin_tokens"] = check_unique(tokens)
    except TokenError as exc:
        raise ConfigError(f"{source}: AdminToken/AdminTokenFile: {exc}") from None
    if "AdminAddress" in default.values and "admin_port" not in server:
        raise ConfigError(f"{source}:{default.values['AdminAddress'][1]}: AdminAddress is set "
                          "in [DEFAULT] but AdminPort is not")
    if tokens and "admin_port" not in server and "http_port" not in server:
        raise ConfigError(f"{source}: admin tokens are configured but neither HttpPort nor "
                          "AdminPort is: the admin API would not be served")


def _build_firms(source: str, sections: list[_Section]) -> tuple[FirmSettings, ...]:
    """The [FIRM]/[ACCOUNT] sections as FirmSettings (accounts in configuration order)."""
    order: list[str] = []
    limits: dict[str, int] = {}
    accounts: dict[str, list[AccountSettings]] = {}
    owner: dict[str, str] = {}

    def add(section: _Section, firm: str, account: str, limit: int) -> None:
        if account in owner:
            raise ConfigError(
                f"{source}: account {account} in {section.where()} is already configured "
                f"(firm {owner[account]})"
            )
        owner[account] = firm
        accounts[firm].append(AccountSettings(account, firm, limit))

    for section in sections:
        if section.name != "FIRM":
            continue
        if "Firm" not in section.values:
            raise ConfigError(f"{source}: Firm is missing in {section.where()}")
        firm = str(_parse_value(source, section, "Firm", _FIRM_KEYS["Firm"]))
        if firm in accounts:
            raise ConfigError(f"{source}: firm {firm} of {section.where()} is configured twice")
        limit = 0
        if "MaxOpenOrders" in section.values:
            limit = int(_parse_value(source, section, "MaxOpenOrders", _parse_non_negative_int))  # type: ignore[call-overload]
        order.append(firm)
        limits[firm] = limit
        accounts[firm] = []
        if "Accounts" in section.values:
            names = [a.strip() for a in section.values["Accounts"][0].split(",")]
            for name in names:
                if not name:
                    raise ConfigError(
                        f"{source}:{section.values['Accounts'][1]}: Accounts in "
                        f"{section.where()}: expected comma-separated account ids"
                    )
                add(section, firm, name, limit)
    for section in sections:
        if section.name != "ACCOUNT":
            continue
        for required in ("Account", "Firm"):
            if required not in section.values:
                raise ConfigError(f"{source}: {required} is missing in {section.where()}")
        account = str(_parse_value(source, section, "Account", _ACCOUNT_KEYS["Account"]))
        firm = str(_parse_value(source, section, "Firm", _ACCOUNT_KEYS["Firm"]))
        if firm not in accounts:
            raise ConfigError(f"{source}: Firm={firm} in {section.where()} has no [FIRM] section")
        limit = limits[firm]
        if "MaxOpenOrders" in section.values:
            limit = int(_parse_value(source, section, "MaxOpenOrders", _parse_non_negative_int))  # type: ignore[call-overload]
        if owner.get(account) == firm:  # listed in the firm's Accounts too: this sets its limit
            accounts[firm] = [
                AccountSettings(account, firm, limit) if a.account == account else a
                for a in accounts[firm]
            ]
            continue
        add(section, firm, account, limit)
    return tuple(FirmSettings(f, tuple(accounts[f])) for f in order)


def load_config(path: str) -> ServerConfig:
    """Read and check a config file; raises ConfigError (also for an unreadable file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(text, source=path, base_dir=base_dir)
