"""The logon throttle in the running server: what is refused, counted and logged (the hosting
side of the sans-IO ``fixserver.logon_throttle``).

``SessionHost`` has one ``LogonGuard``. Its connections consult it when they are made (a
locked-out address is closed at once, without a word), before a Logon's credentials are checked
(``FixProtocol.refuse_logon`` is the session core's ``LogonGate``), after a failed Logon
(``LogonFailed``: how long to hold the connection before closing it) and after a logon.

Every event is counted in Prometheus (``fix_logon_failures_total{session}``,
``fix_logon_lockouts_total{scope}``, ``fix_logon_refused_total{scope}``,
``fix_logon_lockouts_active``). The log lines (``fix.logon_failed``, ``fix.logon_lockout``,
``fix.logon_refused``) share one ``LogRateLimiter``: a flood of bad Logons gives a few lines
per period, each saying in ``suppressed=N`` how many were left out before it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from twisted.logger import Logger

from fixserver import metrics
from fixserver.logon_throttle import (
    ADDRESS_SCOPE,
    SESSION_SCOPE,
    LockoutPolicy,
    LogonThrottle,
    LogRateLimiter,
    ThrottleKey,
)
from fixserver.timeutil import NS_PER_SECOND

if TYPE_CHECKING:
    from fixserver.session_registry import Session

log = Logger(namespace="fixserver")


class LogonGuard:
    """One server's logon throttle with its metrics and rate-limited log lines."""

    def __init__(
        self,
        throttle: LogonThrottle,
        now_ns: Callable[[], int],
        log_limiter: LogRateLimiter | None = None,
    ) -> None:
        self.throttle = throttle
        self._limiter = log_limiter if log_limiter is not None else LogRateLimiter()
        metrics.LOGON_LOCKOUTS_ACTIVE.set_function(lambda: throttle.active_lockouts(now_ns()))

    def refuse_connection(self, address: str, peer: str, now_ns: int) -> bool:
        """True if connections from ``address`` are locked out (close it at once)."""
        return self._refusal([(ADDRESS_SCOPE, address)], peer, now_ns) is not None

    def refuse_logon(
        self, address: str, peer: str, session: Session | None, now_ns: int
    ) -> str | None:
        """Why a Logon for ``session`` from ``address`` is refused unchecked, or None."""
        return self._refusal(_keys(address, session), peer, now_ns)

    def failed(
        self, address: str, peer: str, session: Session | None, reason: str, now_ns: int
    ) -> int:
        """Count a failed Logon; returns how long to hold the connection before closing it."""
        if session is not None:
            policy = LockoutPolicy.from_settings(session.settings)
            label = session.settings.session_id
        else:
            policy, label = self.throttle.default_policy, metrics.UNBOUND_SESSION
        verdict = self.throttle.record_failure(_keys(address, session), policy, now_ns)
        metrics.LOGON_FAILURES.labels(label).inc()
        self._log(
            now_ns,
            "fix.logon_failed peer={peer} session={session} reason={reason!r} "
            "delay={delay} suppressed={suppressed}",
            peer=peer,
            session=label,
            reason=reason,
            delay=verdict.delay_ns / NS_PER_SECOND,
        )
        for scope, key in verdict.locked_out:
            metrics.LOGON_LOCKOUTS.labels(scope).inc()
            self._log(
                now_ns,
                "fix.logon_lockout scope={scope} key={key!r} seconds={seconds} "
                "suppressed={suppressed}",
                scope=scope,
                key=key,
                seconds=policy.lockout_ns / NS_PER_SECOND,
            )
        return verdict.delay_ns

    def succeeded(self, session: Session) -> None:
        self.throttle.record_success((SESSION_SCOPE, session.settings.session_id))

    def _refusal(self, keys: list[ThrottleKey], peer: str, now_ns: int) -> str | None:
        locked = self.throttle.first_locked(keys, now_ns)
        if locked is None:
            return None
        (scope, key), until = locked
        seconds_left = math.ceil((until - now_ns) / NS_PER_SECOND)
        metrics.LOGON_REFUSED.labels(scope).inc()
        self._log(
            now_ns,
            "fix.logon_refused peer={peer} scope={scope} key={key!r} seconds_left={seconds_left} "
            "suppressed={suppressed}",
            peer=peer,
            scope=scope,
            key=key,
            seconds_left=seconds_left,
        )
        return f"logon refused: {scope} {key} locked out for {seconds_left} s more"

    def _log(self, now_ns: int, fmt: str, **fields: object) -> None:
        suppressed = self._limiter.allow(now_ns)
        if suppressed is not None:
            log.warn(fmt, suppressed=suppressed, **fields)


def _keys(address: str, session: Session | None) -> list[ThrottleKey]:
    keys: list[ThrottleKey] = [(ADDRESS_SCOPE, address)]
    if session is not None:
        keys.insert(0, (SESSION_SCOPE, session.settings.session_id))
    return keys
