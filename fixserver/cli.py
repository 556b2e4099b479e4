"""The ``fixserver`` command.

``fixserver serve --config FILE`` runs the server until SIGTERM/SIGINT (a clean shutdown:
every session is logged out first). ``fixserver check-config --config FILE`` only reads and
checks the file. A bad config file prints one line naming the setting and exits 2.
``fixserver admin <command> --http URL`` runs an operator command through the server's
authenticated HTTP admin API (token in ``$FIXSERVER_ADMIN_TOKEN`` or ``--token``; see
:mod:`fixserver.admin.client`, e.g. ``fixserver admin kill-switch --firm X --on``);
``fixserver admin journal-verify --journal DIR`` checks a journal directory offline.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from fixserver.admin.client import add_admin_parser, run_admin
from fixserver.config import ConfigError, ServerConfig, load_config

EXIT_CONFIG_ERROR = 2


def _start_logging(stream: TextIO) -> None:
    from twisted.logger import globalLogBeginner, textFileLogObserver

    observer: Any = textFileLogObserver(stream)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def serve(config: ServerConfig) -> int:
    """Run the server on the global reactor until it is stopped."""
    from twisted.internet import reactor as global_reactor

    from fixserver.server import FixServer

    reactor: Any = global_reactor

    try:
        server = FixServer(config, reactor)
    except ConfigError as exc:  # found while building: e.g. an unreadable DataDictionary
        print(f"fixserver: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as exc:  # e.g. a damaged message store
        print(f"fixserver: cannot start: {exc}", file=sys.stderr)
        return 1
    _start_logging(sys.stdout)
    try:
        server.start()
    except Exception as exc:  # e.g. the port is taken: say so plainly, without a traceback
        print(f"fixserver: cannot start: {exc}", file=sys.stderr)
        return 1
    _tune_gc(reactor)
    _dump_traced_memory_on_sigusr2(reactor)
    reactor.callWhenRunning(_stop_once_on_signals, reactor)
    reactor.run()
    return 0


def _stop_once_on_signals(reactor: Any) -> None:
    """SIGTERM/SIGINT stop the server once; a repeated signal while it shuts down (a
    supervisor and a terminal both sending one) is logged, not a second ``reactor.stop``
    (Twisted's own handler would log a critical ReactorNotRunning traceback)."""
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="fixserver")
    stopping = [False]

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopping[0]:
            reactor.callFromThread(log.info, "shutdown.in_progress signal={signal}",
                                   signal=name)
            return
        stopping[0] = True
        reactor.callFromThread(log.info, "shutdown.signal signal={signal}", signal=name)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _dump_traced_memory_on_sigusr2(reactor: Any) -> None:
    """A diagnostic for memory growth: with ``PYTHONTRACEMALLOC=N`` in the environment
    (Python traces allocations, N frames each; it roughly halves throughput), SIGUSR2 writes
    a tracemalloc snapshot to ``$FIXSERVER_TRACEMALLOC_DIR`` (default: the working
    directory) as ``tracemalloc-<pid>-<n>.bin``; compare two with ``Snapshot.load`` and
    ``compare_to``. Without tracing, SIGUSR2 is left alone."""
    import os
    import signal
    import tracemalloc

    if not tracemalloc.is_tracing():
        return
    from twisted.logger import Logger

    log = Logger(namespace="fixserver")
    directory = os.environ.get("FIXSERVER_TRACEMALLOC_DIR", ".")
    dumps = [0]

    def dump() -> None:
        dumps[0] += 1
        path = os.path.join(directory, f"tracemalloc-{os.getpid()}-{dumps[0]}.bin")
        tracemalloc.take_snapshot().dump(path)
        log.info("tracemalloc.dump path={path} traced_mb={mb:.1f}", path=path,
                 mb=tracemalloc.get_traced_memory()[0] / 2**20)

    signal.signal(signal.SIGUSR2, lambda _signum, _frame: reactor.callFromThread(dump))


#: seconds between the server's own young-object collections (see engine.gc_tuning)
GC_SWEEP_INTERVAL_S = 60.0


def _tune_gc(reactor: Any) -> None:
    """The recovered state is frozen out of the cyclic collector's reach and full collections
    are kept from firing mid-burst; instead, once a minute, the server collects what is not
    frozen (cycles Twisted leaves behind) and freezes the survivors, a cost proportional to
    what changed since the last sweep, not to the millions of resting orders."""
    import time as _time

    from twisted.internet import task
    from twisted.logger import Logger

    from engine.gc_tuning import apply_server_settings, freeze_long_lived

    log = Logger(namespace="fixserver.gc")
    apply_server_settings()

    def sweep() -> None:
        started = _time.perf_counter()
        frozen = freeze_long_lived()
        log.info("gc.sweep frozen={frozen} ms={ms:.1f}", frozen=frozen,
                 ms=(_time.perf_counter() - started) * 1e3)

    loop = task.LoopingCall(sweep)
    loop.clock = reactor
    loop.start(GC_SWEEP_INTERVAL_S, now=False)


def check_config(config: ServerConfig) -> int:
    """Print what the config file configures."""
    print(f"FIX port {config.accept_address}:{config.accept_port}")
    if config.tls is not None:
        print(f"TLS port {config.accept_address}:{config.tls.port}")
    if config.http_port is not None:
        print(f"HTTP port {config.http_address}:{config.http_port}")
    if config.admin_port is not None:
        print(f"admin port {config.admin_address}:{config.admin_port}")
    names = ", ".join(t.name for t in config.admin_tokens)  # never the secrets
    print(f"admin tokens {names}" if names else "admin API disabled (no AdminToken)")
    print(f"store {config.file_store_path or 'memory (not durable)'}")
    for settings in config.sessions:
        print(
            f"session {settings.session_id} role={settings.role.value} auth={settings.auth.value}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fixserver", description="FIX 4.4 exchange server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--config", required=True, metavar="FILE", help="config file")
    check_cmd = commands.add_parser("check-config", help="check a config file and summarise it")
    check_cmd.add_argument("--config", required=True, metavar="FILE", help="config file")
    commands.add_parser(
        "migrate", add_help=False,
        help="apply or check the Postgres migrations (fixserver migrate --help for options)",
    )
    add_admin_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["migrate"]:  # its own options: fixserver.pg.migrations
        from fixserver.pg.migrations import main as migrate_main

        return migrate_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "admin":
        return run_admin(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fixserver: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "serve":
        return serve(config)
    return check_config(config)


if __name__ == "__main__":
    sys.exit(main())
