"""Logon authentication: none, Username/Password, or an HMAC-SHA256 signed logon.

The session checks a Logon's credentials before acting on anything else in it (no sequence
reset, no HeartBtInt, no reply). A failure closes the connection without an answer: a Logout
would need a MsgSeqNum, and one the exchange does not keep would be counted by the client
(QuickFIX does) and then taken by the next real message, which the client would then find
"too low" (``fixserver.logon_screen``). ``str(AuthenticationError)`` is the detailed reason,
for the server's log only.

``LogonAuth.NONE``
    Any Logon for the configured CompIDs is accepted.

``LogonAuth.PASSWORD``
    Username (553) must equal the configured ``username`` (when one is configured) and
    Password (554) the configured ``password``; compared in constant time.

``LogonAuth.HMAC`` (signed logon)
    The client signs the Logon with the session's shared secret ``hmac_key``:

    * RawDataLength (95) / RawData (96) carry a fresh nonce: 8 to 256 bytes, chosen at random
      by the client for every Logon (e.g. 16 random bytes, hex-encoded).
    * The signed string is the ASCII bytes::

          SendingTime|MsgSeqNum|SenderCompID|TargetCompID|nonce

      that is, the Logon's own field values of tags 52, 34, 49 and 56 exactly as they appear
      on the wire, then the RawData bytes, joined by ``|``. SenderCompID is the client's
      CompID (tag 49 of the Logon), TargetCompID ours (tag 56). Example::

          20240102-12:00:00.000|1|CLIENT1|EXCH|3f9c2a7d1b5e4f60

    * The signature is HMAC-SHA256(hmac_key, signed string), sent in Password (554) either as
      64 lowercase or uppercase hex digits or as standard base64 (44 characters with padding).
    * Username (553), when the session configures ``username``, must match it.
    * Replay protection: SendingTime must be within ``hmac_window`` seconds of the server's
      clock (either direction), and a nonce the session has accepted within the last
      ``2 * hmac_window`` seconds is refused. A replayed Logon therefore fails either on its
      stale SendingTime or on its reused nonce. Spent nonces are kept in the session's
      ``MessageStore`` too (``spend_nonce``; the file store fsyncs them with its group
      commit), so a restart does not forget them.
    * Only those five values are signed. The rest of the Logon (HeartBtInt, ResetSeqNumFlag,
      NextExpectedMsgSeqNum, CancelOnDisconnect, ...) is not: the signature proves who sent
      the Logon, not that nobody on the path changed it; TLS protects the rest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Protocol

from fixserver.codec import FixMessage
from fixserver.settings import LogonAuth, SessionSettings
from fixserver.timeutil import NS_PER_SECOND, parse_utc_timestamp

MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 256


class AuthenticationError(Exception):
    """A Logon's credentials were refused; ``str(exc)`` is the detailed (log-only) reason."""


def signed_logon_payload(
    sending_time: bytes,
    msg_seq_num: bytes,
    sender_comp_id: bytes,
    target_comp_id: bytes,
    nonce: bytes,
) -> bytes:
    """The exact byte string a signed Logon's HMAC covers."""
    return b"|".join((sending_time, msg_seq_num, sender_comp_id, target_comp_id, nonce))


def sign_logon(key: bytes, payload: bytes) -> str:
    """The Password (554) value for a signed Logon (lowercase hex)."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def _decode_signature(value: bytes) -> bytes | None:
    if len(value) == 64:
        try:
            return bytes.fromhex(value.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
    if len(value) == 44:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


class NonceStore(Protocol):
    """Where spent nonces outlive the process (the session's ``MessageStore``)."""

    def spend_nonce(self, nonce: bytes, accepted_ns: int, forget_before_ns: int) -> None: ...

    def spent_nonces(self) -> dict[bytes, int]: ...


class NonceMemory:
    """Nonces accepted recently, forgotten once they are older than ``horizon_ns``; with a
    ``store``, loaded from it and written through to it (a restart remembers them)."""

    def __init__(self, horizon_ns: int, store: NonceStore | None = None) -> None:
        self.horizon_ns = horizon_ns
        self._store = store
        spent = store.spent_nonces() if store is not None else {}
        #: nonce -> time accepted, oldest first
        self._seen: dict[bytes, int] = dict(sorted(spent.items(), key=lambda item: item[1]))

    def seen(self, nonce: bytes, now_ns: int) -> bool:
        self._forget_before(now_ns - self.horizon_ns)
        return nonce in self._seen

    def remember(self, nonce: bytes, now_ns: int) -> None:
        self._seen.pop(nonce, None)
        self._seen[nonce] = now_ns
        if self._store is not None:
            self._store.spend_nonce(nonce, now_ns, now_ns - self.horizon_ns)

    def _forget_before(self, cutoff_ns: int) -> None:
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= cutoff_ns:
                break
            del seen[oldest]


def check_logon_credentials(
    settings: SessionSettings, logon: FixMessage, now_ns: int, nonces: NonceMemory
) -> None:
    """Raise AuthenticationError unless the Logon carries valid credentials for ``settings``."""
    if settings.auth is LogonAuth.NONE:
        return
    username = logon.get(553)
    if settings.username is not None and not hmac.compare_digest(
        username or b"", settings.username.encode("latin-1")
    ):
        raise AuthenticationError("wrong or missing Username (553)")
    password = logon.get(554)
    if not password:
        raise AuthenticationError("missing Password (554)")
    if settings.auth is LogonAuth.PASSWORD:
        if settings.password is None:
            raise AuthenticationError("session has no password configured")
        if not hmac.compare_digest(password, settings.password.encode("latin-1")):
            raise AuthenticationError("wrong Password (554)")
        return
    _check_signed_logon(settings, logon, now_ns, nonces, password)


def _check_signed_logon(
    settings: SessionSettings,
    logon: FixMessage,
    now_ns: int,
    nonces: NonceMemory,
    password: bytes,
) -> None:
    if not settings.hmac_key:
        raise AuthenticationError("session has no hmac_key configured")
    nonce = logon.get(96)
    if nonce is None or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise AuthenticationError(
            f"RawData (96) nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} bytes"
        )
    sending_time = logon.get(52) or b""
    try:
        sent_ns = parse_utc_timestamp(sending_time)
    except ValueError:
        raise AuthenticationError("unparseable SendingTime (52)") from None
    window_ns = settings.hmac_window * NS_PER_SECOND
    if abs(now_ns - sent_ns) > window_ns:
        raise AuthenticationError("signed logon SendingTime outside the replay window")
    signature = _decode_signature(password)
    if signature is None:
        raise AuthenticationError("Password (554) is not a hex or base64 HMAC-SHA256")
    payload = signed_logon_payload(
        sending_time, logon.get(34) or b"", logon.get(49) or b"", logon.get(56) or b"", nonce
    )
    expected = hmac.new(settings.hmac_key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise AuthenticationError("bad logon signature")
    if nonces.seen(nonce, now_ns):
        raise AuthenticationError("logon nonce reused")
    nonces.remember(nonce, now_ns)
