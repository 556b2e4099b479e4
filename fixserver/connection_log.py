"""Log lines and counters of noisy connections: those that never log on, and garbled frames
(the hosting side; ``fixserver.protocol`` reports to the host's one ``ConnectionLog``).

A connection flood (a port scanner, a client retrying with wrong CompIDs in a loop) or a
client streaming junk must not fill the disk with log lines, so each kind of line below has
its own ``LogRateLimiter``: at most ``max_lines`` per ``period_ns``, and the next line logged
after some were left out says how many in ``suppressed=N``. The metrics count every one.

- ``fix.connect peer=...``: a TCP connection was accepted. Rate-limited: the Logon of a
  connection that gets that far is logged by ``fix.logon`` in any case.
- ``fix.rejected peer=... cause=... reason=...``: a connection closed without ever being
  logged on (instead of ``fix.close``/``fix.disconnect`` lines), counted in
  ``fix_connections_rejected_total{cause}``; the causes are the ``*`` constants below.
  ``locked_out`` and ``logon_failed`` are counted without a line here: the logon guard's own
  rate-limited ``fix.logon_refused``/``fix.logon_failed`` lines say it.
- ``fix.garbled peer=... session=... reason=... raw=...``: a garbled frame was dropped
  (``fix_garbled_messages_total``).
- ``fix.garbled_limit session=... peer=... count=... window_s=...``: a logged-on session sent
  more than MaxGarbledMessages within GarbledMessageWindow and was logged out
  (``fix_disconnects_total{cause="garbled_messages"}``). Not rate-limited: only a logged-on
  session gets there, once per connection.
"""

from __future__ import annotations

from twisted.logger import Logger

from fixserver import metrics
from fixserver.logon_throttle import LogRateLimiter

log = Logger(namespace="fixserver")

#: the address, or the session its Logon named, is locked out (logon throttle)
LOCKED_OUT = "locked_out"
#: a Logon naming no configured session, or with refused credentials
LOGON_FAILED = "logon_failed"
#: a garbled frame before the Logon
GARBLED = "garbled"
#: no Logon within LogonTimeout
LOGON_TIMEOUT = "logon_timeout"
#: the first message was refused: not a Logon, invalid, session already logged on, outside
#: the session's hours, MsgSeqNum too low, ...
REFUSED = "refused"
#: the peer closed (or the connection broke) before a Logon
PEER_CLOSED = "peer_closed"
#: the server shut down (or stopped on a failure) before the connection logged on
SHUTDOWN = "shutdown"

CAUSES = (LOCKED_OUT, LOGON_FAILED, GARBLED, LOGON_TIMEOUT, REFUSED, PEER_CLOSED, SHUTDOWN)
_QUIET_CAUSES = frozenset({LOCKED_OUT, LOGON_FAILED})


class ConnectionLog:
    """The rate-limited lines and the counters of one server's noisy connections."""

    def __init__(self, max_lines: int = 10, period_ns: int = 10 * 1_000_000_000) -> None:
        self._connects = LogRateLimiter(max_lines, period_ns)
        self._rejects = LogRateLimiter(max_lines, period_ns)
        self._garbled = LogRateLimiter(max_lines, period_ns)

    def connected(self, peer: str, now_ns: int) -> None:
        suppressed = self._connects.allow(now_ns)
        if suppressed is not None:
            log.info("fix.connect peer={peer} suppressed={suppressed}", peer=peer,
                     suppressed=suppressed)

    def rejected(self, peer: str, cause: str, reason: str, now_ns: int) -> None:
        """A connection closed without having logged on."""
        metrics.CONNECTIONS_REJECTED.labels(cause).inc()
        if cause in _QUIET_CAUSES:
            return
        suppressed = self._rejects.allow(now_ns)
        if suppressed is not None:
            log.info("fix.rejected peer={peer} cause={cause} reason={reason!r} "
                     "suppressed={suppressed}", peer=peer, cause=cause, reason=reason,
                     suppressed=suppressed)

    def garbled(self, peer: str, session: str, reason: str, raw: bytes, now_ns: int) -> None:
        metrics.GARBLED_MESSAGES.inc()
        suppressed = self._garbled.allow(now_ns)
        if suppressed is not None:
            log.warn("fix.garbled peer={peer} session={session} reason={reason} raw={raw!r} "
                     "suppressed={suppressed}", peer=peer, session=session, reason=reason,
                     raw=raw[:200], suppressed=suppressed)

    def garbled_limit(self, peer: str, session: str, count: int, window_s: int) -> None:
        metrics.DISCONNECTS.labels("garbled_messages").inc()
        log.warn("fix.garbled_limit session={session} peer={peer} count={count} "
                 "window_s={window_s}: logged out", session=session, peer=peer, count=count,
                 window_s=window_s)
