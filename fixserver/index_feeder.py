"""``python -m fixserver.index_feeder``: a demo index price source for margined instruments.

A real venue takes its index from spot exchanges; the demo walks one instead. Each margined
instrument of the config gets a bounded random walk around its ``ReferencePrice``
(:class:`IndexWalk`: integer ticks, at most ``step`` per interval, reflected at
``reference +- band``, deterministic given the seed), and every ``interval`` seconds the
feeder posts each price to the admin API (``POST /admin/index``, journaled by the exchange,
which moves the marks). Non-blocking (twisted.web's Agent); a post that fails (server not up
yet, a refusal) is logged and the walk goes on; a symbol whose previous post is still in
flight skips a beat rather than pile posts up.

    FIXSERVER_ADMIN_TOKEN=demo-admin-token-change-me \\
        python -m fixserver.index_feeder --config ops/fixserver.cfg --seed 7

The admin address comes from the config (``AdminPort``, else ``HttpPort``) or ``--http``.

To show what a crash does (margin calls, liquidations), ``--shock BTC-PERP:-8%@60`` makes
one jump: the first price posted at least 60 s after the feeder started is the walk's price
moved by -8% (rounded down to the tick; the price never below one tick), and the walk goes
on from there, its band moved by the same amount (:meth:`IndexWalk.shock`), so the index
stays down rather than being reflected back. Several ``--shock`` options may name other
symbols or times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections.abc import Sequence
from decimal import Decimal
from io import BytesIO
from typing import Any, NamedTuple

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from engine.instruments import PPM, Instrument

log = Logger(namespace="fixserver.index_feeder")

ENV_TOKEN = "FIXSERVER_ADMIN_TOKEN"
BPS = 100  # ppm per basis point


class IndexWalk:
    """A bounded random walk in integer ticks around ``reference`` (sans-IO, deterministic
    given ``rng``): each :meth:`step` moves at most ``step_ppm`` of the reference (at least
    one tick), reflecting off ``reference +- band_ppm``."""

    def __init__(self, reference: int, step_ppm: int, band_ppm: int,
                 rng: random.Random) -> None:
        if reference <= 0:
            raise ValueError("the walk needs a positive reference price (ticks)")
        self.reference = reference
        self.max_step = max(1, reference * step_ppm // PPM)
        band = reference * band_ppm // PPM
        self.low = max(1, reference - band)
        self.high = reference + band
        self.price = reference
        self.rng = rng

    def step(self) -> int:
        """The next price (ticks), within [low, high]."""
        p = self.price + self.rng.randint(-self.max_step, self.max_step)
        if p > self.high:
            p = 2 * self.high - p
        if p < self.low:
            p = 2 * self.low - p
        self.price = min(max(p, self.low), self.high)
        return self.price

    def shock(self, move_ppm: int) -> int:
        """Jump by ``move_ppm`` of the current price (rounded down to the tick; the price
        never below one tick); the band moves with it, so later steps walk around the new level.
        Returns the new price."""
        new = max(1, self.price * (PPM + move_ppm) // PPM)
        delta = new - self.price
        self.reference += delta
        self.low = max(1, self.low + delta)
        self.high = max(self.low, self.high + delta)
        self.price = new
        return new


class Shock(NamedTuple):
    """One jump of a symbol's index: ``move_ppm`` of its price, ``after_s`` seconds after
    the feeder starts (the first price posted from then on)."""

    symbol: str
    move_ppm: int
    after_s: float


_SHOCK = re.compile(r"^([^:@\s]+):([+-]?[0-9]+(?:\.[0-9]+)?)%?(?:@([0-9]+(?:\.[0-9]+)?))?$")
DEFAULT_SHOCK_AFTER_S = 60.0


def parse_shock(text: str) -> Shock:
    """``SYMBOL:PCT%[@SECONDS]`` (``BTC-PERP:-8%@60``; SECONDS default 60) as a Shock;
    raises ValueError with the reason. PCT is exact to 0.0001% and above -100%."""
    m = _SHOCK.match(text.strip())
    if m is None:
        raise ValueError(f"--shock {text!r}: expected SYMBOL:PCT%[@SECONDS], "
                         "e.g. BTC-PERP:-8%@60")
    symbol, pct, after = m.groups()
    ppm = Decimal(pct) * 10_000  # the pattern admits only plain decimals
    if ppm != ppm.to_integral_value():
        raise ValueError(f"--shock {text!r}: at most 4 decimal places of a percent")
    if not -PPM < ppm <= 10 * PPM or ppm == 0:
        raise ValueError(f"--shock {text!r}: the move must be above -100% and at most "
                         "+1000%, and not zero")
    return Shock(symbol, int(ppm), float(after) if after is not None else DEFAULT_SHOCK_AFTER_S)


def walks(instruments: Sequence[Instrument], seed: int, step_bps: int, band_bps: int
          ) -> dict[str, IndexWalk]:
    """One walk per margined instrument with a reference price, each with its own random
    stream derived from ``seed`` and the symbol (adding an instrument changes no other's)."""
    return {i.symbol: IndexWalk(i.reference_price, step_bps * BPS, band_bps * BPS,
                                random.Random(f"{seed}:{i.symbol}"))
            for i in instruments if i.margined and i.reference_price > 0}


class IndexFeeder:
    """Posts each walk's next price to the admin API every ``interval`` seconds."""

    def __init__(self, reactor: Any, base_url: str, token: str,
                 instruments: Sequence[Instrument], walks: dict[str, IndexWalk],
                 interval: float, shocks: Sequence[Shock] = ()) -> None:
        self.reactor = reactor
        self.url = base_url.rstrip("/") + "/admin/index"
        self.token = token
        self.instruments = {i.symbol: i for i in instruments}
        self.walks = walks
        self.interval = interval
        self.agent = Agent(reactor)
        self.in_flight: set[str] = set()
        self.posted = 0
        self.rounds = 0
        #: every this many rounds the current prices are logged (the demo shows them move)
        self.log_every = max(1, int(30 / interval))
        self.failed = 0
        self.last_error: str | None = None
        unknown = sorted({s.symbol for s in shocks} - set(walks))
        if unknown:
            raise ValueError(f"--shock names {', '.join(unknown)}: not a walked symbol "
                             f"(walked: {', '.join(sorted(walks)) or 'none'})")
        #: shocks not applied yet, soonest first
        self.shocks = sorted(shocks, key=lambda s: (s.after_s, s.symbol))
        self.started_at: float | None = None  # reactor time of the first round
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self.post_all)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def post_all(self) -> defer.Deferred:
        """Step every walk whose previous post is answered and post its price; fires once
        these posts are answered (or failed)."""
        posts = []
        self.rounds += 1
        now = self.reactor.seconds()
        if self.started_at is None:
            self.started_at = now
        elapsed = now - self.started_at
        if self.rounds % self.log_every == 1 or self.log_every == 1:
            log.info("index_feeder.prices {prices} posted={posted} failed={failed}",
                     prices=" ".join(f"{s}={self.instruments[s].ticks_to_price(w.price)}"
                                     for s, w in sorted(self.walks.items())),
                     posted=self.posted, failed=self.failed)
        for symbol in sorted(self.walks):
            if symbol in self.in_flight:
                continue  # a shock due now waits for the next round too
            walk = self.walks[symbol]
            shock = self._due(symbol, elapsed)
            if shock is None:
                ticks = walk.step()
            else:
                before = walk.price
                ticks = walk.shock(shock.move_ppm)
                inst = self.instruments[symbol]
                log.info("index_feeder.shock symbol={symbol} from={before} to={after} "
                         "move_pct={pct} after_s={after_s}", symbol=symbol,
                         before=inst.ticks_to_price(before), after=inst.ticks_to_price(ticks),
                         pct=str(Decimal(shock.move_ppm) / 10_000), after_s=round(elapsed, 3))
            price = self.instruments[symbol].ticks_to_price(ticks)
            posts.append(self.post(symbol, price))
        return defer.DeferredList(posts, consumeErrors=True)

    def _due(self, symbol: str, elapsed: float) -> Shock | None:
        """The first shock of ``symbol`` due at ``elapsed`` seconds, taken off the list."""
        for i, shock in enumerate(self.shocks):
            if shock.symbol == symbol and shock.after_s <= elapsed:
                return self.shocks.pop(i)
        return None

    def post(self, symbol: str, price: str) -> defer.Deferred:
        """POST one index price; fires with the HTTP status (0: not reachable)."""
        self.in_flight.add(symbol)
        body = json.dumps({"symbol": symbol, "price": price}).encode()
        headers = Headers({b"Authorization": [f"Bearer {self.token}".encode()],
                           b"Content-Type": [b"application/json"]})
        producer: Any = FileBodyProducer(BytesIO(body))  # an IBodyProducer (zope)
        d: Any = self.agent.request(b"POST", self.url.encode(), headers, producer)

        def answered(response: Any) -> defer.Deferred:
            return readBody(response).addCallback(lambda raw: (response.code, raw))

        def done(result: tuple[int, bytes]) -> int:
            code, raw = result
            if code == 200:
                self.posted += 1
            else:
                self._failed(symbol, f"HTTP {code}: {_error(raw)}")
            return code

        def unreachable(failure: Any) -> int:
            self._failed(symbol, f"cannot reach {self.url}: {failure.getErrorMessage()}")
            return 0

        def settled(result: Any) -> Any:
            self.in_flight.discard(symbol)
            return result

        d.addCallback(answered).addCallbacks(done, unreachable)
        d.addBoth(settled)
        return d

    def _failed(self, symbol: str, error: str) -> None:
        self.failed += 1
        self.last_error = error
        log.warn("index_feeder.post_failed symbol={symbol} error={error}", symbol=symbol,
                 error=error)


def _error(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error", raw[:200]))
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace")


def admin_url(config: Any) -> str | None:
    """The admin API's base URL from a ServerConfig (AdminPort, else HttpPort)."""
    if config.admin_port is not None:
        host, port = config.admin_address, config.admin_port
    elif config.http_port is not None:
        host, port = config.http_address, config.http_port
    else:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fixserver.index_feeder",
                                description="post a random-walk index price of every "
                                            "margined instrument to the admin API")
    p.add_argument("--config", required=True, help="the server's config file (instruments, "
                   "admin address)")
    p.add_argument("--http", metavar="URL", help="the admin API's address (default: from "
                   "the config)")
    p.add_argument("--token", help=f"admin token (default ${ENV_TOKEN}; prefer it)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same walk)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between prices")
    p.add_argument("--step-bps", type=int, default=5,
                   help="largest move per interval, basis points of the reference (5)")
    p.add_argument("--band-bps", type=int, default=200,
                   help="largest distance from the reference, basis points (200 = 2%%)")
    p.add_argument("--shock", action="append", default=[], metavar="SYMBOL:PCT%[@SECONDS]",
                   help="one jump of SYMBOL's index by PCT percent SECONDS after the start "
                        "(default 60), e.g. BTC-PERP:-8%%@60; the walk goes on from there "
                        "(repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the feeder until interrupted; 2 on bad usage."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from fixserver.config import ConfigError, load_config

    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"index_feeder: {exc}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(ENV_TOKEN)
    url = args.http or admin_url(config)
    if not token or not url:
        print(f"index_feeder: need an admin token (${ENV_TOKEN}) and the admin address "
              "(HttpPort/AdminPort in the config, or --http)", file=sys.stderr)
        return 2
    if args.interval <= 0 or args.step_bps < 0 or args.band_bps < 0:
        print("index_feeder: --interval must be > 0, --step-bps and --band-bps >= 0",
              file=sys.stderr)
        return 2
    paths = walks(config.instruments, args.seed, args.step_bps, args.band_bps)
    if not paths:
        print("index_feeder: no margined [INSTRUMENT] with a ReferencePrice in the config",
              file=sys.stderr)
        return 2
    try:
        shocks = [parse_shock(text) for text in args.shock]
        feeder = IndexFeeder(reactor, url, token, config.instruments, paths, args.interval,
                             shocks)
    except ValueError as exc:
        print(f"index_feeder: {exc}", file=sys.stderr)
        return 2
    # our own lines, and others' warnings (not twisted.web's per-connection chatter)
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    levels.setLogLevelForNamespace("fixserver.index_feeder", LogLevel.info)
    text: Any = textFileLogObserver(sys.stdout)  # zope interfaces: the stubs cannot see them
    predicate: Any = levels
    observer: Any = FilteringLogObserver(text, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    log.info("index_feeder.start url={url} symbols={symbols} seed={seed} interval_s={i} "
             "shocks={shocks}", url=url, symbols=sorted(paths), seed=args.seed,
             i=args.interval, shocks=" ".join(args.shock) or "none")
    running: Any = reactor
    running.callWhenRunning(feeder.start)
    running.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
