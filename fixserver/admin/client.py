"""``fixserver admin ...``: the operator's commands over the HTTP admin API.

Each command is one row of :data:`COMMANDS`: its name, the API call (method and path) and
the options that become the request's JSON body. Every command takes ``--http URL`` (or the
environment variable ``FIXSERVER_ADMIN_URL``) and the token with ``--token`` or, better (a
command line is visible to every local user in ``ps``), ``FIXSERVER_ADMIN_TOKEN``. The
server's JSON answer is printed; a refusal prints the server's reason to stderr and exits 1.

``journal-verify`` is offline: it reads a journal directory (:mod:`fixserver.admin.
journal_verify`) and talks to no server.

Blocking (urllib): a command-line tool, never imported by the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import attr

from engine.enums import InstrumentStatus, StpMode

ENV_URL = "FIXSERVER_ADMIN_URL"
ENV_TOKEN = "FIXSERVER_ADMIN_TOKEN"
EXIT_REFUSED = 1
EXIT_USAGE = 2
TIMEOUT_S = 60.0

STATUSES = [s.name.lower().replace("_", "-") for s in InstrumentStatus]
STP_MODES = [m.name.lower().replace("_", "-") for m in StpMode]


@attr.s(frozen=True, auto_attribs=True)
class Option:
    """One command-line option: argparse's flags and keyword arguments."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = attr.Factory(dict)
    #: options of one group are mutually exclusive, and one of them is required
    group: str | None = None


@attr.s(frozen=True, auto_attribs=True)
class Command:
    """One ``fixserver admin`` command over one API call; ``body`` builds the JSON body."""

    name: str
    help: str
    method: str
    path: str
    options: tuple[Option, ...] = ()
    body: Callable[[argparse.Namespace], dict] = lambda args: {}


def _session(required: bool = True) -> Option:
    return Option(("--session",), {"required": required, "metavar": "ID",
                                   "help": "session id or the client's TargetCompID"})


#: list-instrument's options: the [INSTRUMENT] keys (ops/README.md), as decimal strings
_INSTRUMENT_OPTIONS = (
    ("symbol", "e.g. SOL-PERP"), ("tick_size", "price increment, e.g. 0.001"),
    ("lot_size", "quantity increment, e.g. 0.1"), ("multiplier", "contract multiplier"),
    ("min_qty", "smallest order quantity"), ("max_qty", "largest order quantity"),
    ("maker_fee_ppm", "maker fee, ppm of notional (negative: rebate)"),
    ("taker_fee_ppm", "taker fee, ppm of notional"),
    ("price_band_ppm", "price band around the reference, ppm (0: none)"),
    ("reference_price", "price the band is centred on before the first trade"),
    ("status", "trading, halted, cancel-only or post-only"),
    ("max_leverage", "margined: the highest leverage (the risk options below need it)"),
    ("settlement_asset", "margin asset, e.g. USDT"),
    ("settlement_decimals", "decimals of the margin asset's minor unit"),
    ("default_leverage", "leverage of accounts that never set one"),
    ("risk_tiers", "cap:rate%%:leverage, ... e.g. '50000:0.5%%:100, 250000:1%%:50'"),
    ("mark_interval_ms", "mark recomputed at most this often"),
    ("mark_smoothing", "samples in the basis average"),
    ("mark_basis_cap_ppm", "basis clamp, ppm of the index"),
    ("liquidation_fee_ppm", "liquidation fee to the insurance fund, ppm of notional"),
    ("funding_interval_s", "seconds between funding instants (from 00:00 UTC)"),
    ("funding_interest_rate", "interest rate per interval, e.g. 0.01%%"),
    ("funding_clamp", "clamp of interest - premium, e.g. 0.05%%"),
    ("funding_cap", "cap of the funding rate, e.g. 0.75%%"),
    ("impact_notional", "notional walked for the impact bid/ask, asset units"),
    ("margin_call_levels", "margin-ratio warning levels, e.g. '80%%, 90%%'"),
)
_INSTRUMENT_REQUIRED = ("symbol", "tick_size", "lot_size")

_ACCOUNT = Option(("--account",), {"required": True})
_SYMBOL = Option(("--symbol",), {"required": True})
#: deposit and withdraw: amounts are decimal strings in asset units (sent as typed: exact)
_TRANSFER_OPTIONS = (
    Option(("--account",), {"required": True,
                            "help": "a configured account, or ~INSURANCE (the insurance fund)"}),
    Option(("--asset",), {"required": True, "help": "settlement asset, e.g. USDT"}),
    Option(("--amount",), {"required": True, "help": "decimal amount in asset units"}),
    Option(("--ref",), {"help": "reference kept in the ledger (default admin:<name>)"}),
)


def _transfer_body(a: argparse.Namespace) -> dict:
    return {"account": a.account, "asset": a.asset, "amount": a.amount, "ref": a.ref}

COMMANDS: tuple[Command, ...] = (
    Command("actions", "list the admin API's actions", "GET", "/admin"),
    Command("sessions", "list the sessions: logged on, next sequence numbers", "GET",
            "/admin/sessions"),
    Command("logout", "log a session out", "POST", "/admin/sessions/logout",
            (_session(), Option(("--reason",), {"help": "Text (58) of the Logout"})),
            lambda a: {"session": a.session, "reason": a.reason}),
    Command("set-seq", "set a session's next sequence numbers (it must be logged out)",
            "POST", "/admin/sessions/sequence",
            (_session(),
             Option(("--next-sender-seq", "--sender"), {"type": int, "metavar": "N",
                                                        "help": "MsgSeqNum we send next"}),
             Option(("--next-target-seq", "--target"), {"type": int, "metavar": "N",
                                                        "help": "MsgSeqNum expected next"})),
            lambda a: {"session": a.session, "next_sender_seq": a.next_sender_seq,
                       "next_target_seq": a.next_target_seq}),
    Command("instruments", "list the instruments and their status", "GET",
            "/admin/instruments"),
    Command("instrument-status", "set an instrument's trading status", "POST",
            "/admin/instruments/status",
            (Option(("--symbol",), {"required": True}),
             Option(("--status",), {"required": True, "choices": STATUSES})),
            lambda a: {"symbol": a.symbol, "status": a.status}),
    Command("list-instrument", "list a new instrument while running (add the same "
            "[INSTRUMENT] section to the config before the next restart)", "POST",
            "/admin/instruments",
            tuple(Option((f"--{name.replace('_', '-')}",),
                         {"required": name in _INSTRUMENT_REQUIRED, "help": help_text})
                  for name, help_text in _INSTRUMENT_OPTIONS),
            lambda a: {name: getattr(a, name) for name, _ in _INSTRUMENT_OPTIONS
                       if getattr(a, name) is not None}),
    Command("kill-switches", "list the firms and their kill switches", "GET",
            "/admin/kill-switch"),
    Command("kill-switch", "cancel a firm's orders and refuse new ones (--on), or lift it",
            "POST", "/admin/kill-switch",
            (Option(("--firm",), {"required": True}),
             Option(("--on",), {"dest": "active", "action": "store_true"}, "on-off"),
             Option(("--off",), {"dest": "active", "action": "store_false"}, "on-off")),
            lambda a: {"firm": a.firm, "active": a.active}),
    Command("account-stp", "set an account's default self-trade prevention", "POST",
            "/admin/accounts/stp",
            (Option(("--account",), {"required": True}),
             Option(("--mode",), {"required": True, "choices": STP_MODES})),
            lambda a: {"account": a.account, "mode": a.mode}),
    Command("deposit", "credit an account's collateral", "POST", "/admin/accounts/deposit",
            _TRANSFER_OPTIONS, _transfer_body),
    Command("withdraw", "debit an account's collateral (refused below its margin "
            "requirement: INSUFFICIENT_MARGIN with the shortfall)", "POST",
            "/admin/accounts/withdraw", _TRANSFER_OPTIONS, _transfer_body),
    Command("leverage", "set an account's leverage in a margined instrument", "POST",
            "/admin/accounts/leverage",
            (_ACCOUNT, _SYMBOL, Option(("--leverage",), {"required": True, "type": int,
                                                         "metavar": "N"})),
            lambda a: {"account": a.account, "symbol": a.symbol, "leverage": a.leverage}),
    Command("margin-mode", "set an account's margin mode in an instrument", "POST",
            "/admin/accounts/margin-mode",
            (_ACCOUNT, _SYMBOL, Option(("--mode",), {"required": True,
                                                     "choices": ["cross", "isolated"]})),
            lambda a: {"account": a.account, "symbol": a.symbol, "mode": a.mode}),
    Command("isolated-margin", "add margin to an isolated position or remove it", "POST",
            "/admin/accounts/isolated-margin",
            (_ACCOUNT, _SYMBOL,
             Option(("--add",), {"metavar": "AMOUNT", "help": "asset units to add"}, "move"),
             Option(("--remove",), {"metavar": "AMOUNT", "help": "asset units to remove"},
                    "move")),
            lambda a: {"account": a.account, "symbol": a.symbol,
                       "amount": a.add if a.add is not None else f"-{a.remove}"}),
    Command("account", "an account's collateral, margin and positions", "GET",
            "/admin/accounts/risk", (_ACCOUNT,), lambda a: {"account": a.account}),
    Command("index-price", "set an instrument's index price", "POST", "/admin/index",
            (_SYMBOL, Option(("--price",), {"required": True,
                                            "help": "decimal price on the tick grid"})),
            lambda a: {"symbol": a.symbol, "price": a.price}),
    Command("marks", "index and mark prices and the index prices' age", "GET",
            "/admin/index"),
    Command("insurance-fund", "the insurance fund (account ~INSURANCE): balance, positions "
            "taken over and recent ledger entries; fund it with deposit --account ~INSURANCE",
            "GET", "/admin/insurance-fund",
            (Option(("--asset",), {"help": "one settlement asset (default: all)"}),
             Option(("--limit",), {"type": int, "metavar": "N",
                                   "help": "ledger entries per asset, newest first (20)"})),
            lambda a: {"asset": a.asset, "limit": a.limit}),
    Command("snapshot", "take an engine snapshot now", "POST", "/admin/snapshot"),
    Command("state-hash", "the last matched seq and the engine's state hash", "GET",
            "/admin/state-hash"),
)


def add_admin_parser(commands: Any) -> None:
    """``fixserver admin`` and its subcommands, on the top-level subparsers."""
    admin = commands.add_parser("admin", help="operator commands (over the HTTP admin API)")
    sub = admin.add_subparsers(dest="admin_command", required=True)
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--http", metavar="URL", default=os.environ.get(ENV_URL),
        help=f"the admin API's address, e.g. http://127.0.0.1:9100 (default ${ENV_URL})")
    connection.add_argument(
        "--token", default=None,
        help=f"the admin token (default ${ENV_TOKEN}; prefer it: a command line is visible "
             "to other local users)")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, parents=[connection])
        groups: dict[str, Any] = {}
        for option in command.options:
            target: Any = p
            if option.group is not None:
                target = groups.get(option.group)
                if target is None:
                    target = groups[option.group] = p.add_mutually_exclusive_group(
                        required=True)
            target.add_argument(*option.flags, **option.kwargs)
    verify = sub.add_parser("journal-verify", help="check a journal directory offline: "
                            "frames, CRCs, replay and state hashes")
    verify.add_argument("--journal", required=True, metavar="DIR",
                        help="the JournalPath directory (not changed)")


def run_admin(args: argparse.Namespace) -> int:
    """Run a parsed ``fixserver admin`` command."""
    if args.admin_command == "journal-verify":
        return journal_verify(args.journal)
    command = next(c for c in COMMANDS if c.name == args.admin_command)
    token = args.token or os.environ.get(ENV_TOKEN)
    if not args.http:
        print(f"fixserver: give the admin API's address with --http URL or ${ENV_URL}",
              file=sys.stderr)
        return EXIT_USAGE
    if not token:
        print(f"fixserver: no admin token: set ${ENV_TOKEN} (or pass --token)", file=sys.stderr)
        return EXIT_USAGE
    body = {k: v for k, v in command.body(args).items() if v is not None}
    status, answer = call(args.http, command.method, command.path, token, body)
    if status == 200:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    if status == 0:
        print(f"fixserver: {answer['error']}", file=sys.stderr)
        return EXIT_REFUSED
    reason = answer.get("error", answer) if isinstance(answer, dict) else answer
    print(f"fixserver: admin {command.name} refused (HTTP {status}): {reason}",
          file=sys.stderr)
    return EXIT_REFUSED


def call(base: str, method: str, path: str, token: str, body: dict | None = None
         ) -> tuple[int, Any]:
    """One API call: (HTTP status, decoded JSON answer or text); status 0 if unreachable."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if method == "GET" and body:  # a read's parameters go in the query string
        from urllib.parse import urlencode

        path = f"{path}?{urlencode(body)}"
    elif method != "GET":
        data = json.dumps(body or {}).encode("utf-8")
        headers["Content-Type"] = "application/json"  # urllib would send a form type
    request = urllib.request.Request(f"{base.rstrip('/')}{path}", data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())
    except OSError as exc:
        return 0, {"error": f"cannot reach {base}: {exc}"}


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace").strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def journal_verify(path: str) -> int:
    """``fixserver admin journal-verify``: print the summary; 0 if sound, 1 if not."""
    from fixserver.admin.journal_verify import verify_journal

    report = verify_journal(path)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1
