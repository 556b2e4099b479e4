"""A FixServer rebuilt from the same config and FileStorePath refuses a signed Logon replayed
from before the restart (the nonces are in the stores' directory)."""

from __future__ import annotations

from twisted.internet import task

from fixserver.codec import encode
from fixserver.config import parse_config
from fixserver.logon_auth import sign_logon, signed_logon_payload
from fixserver.server import FixServer
from fixserver.session import SessionConnection
from fixserver.session_events import LoggedOn, LogonFailed
from fixserver.timeutil import NS_PER_SECOND, format_utc_timestamp

T0 = 1_704_196_800 * NS_PER_SECOND
KEY = bytes(range(32))


def _server(tmp_path, now_ns: int) -> FixServer:
    text = (
        "[DEFAULT]\nBeginString=FIX.4.4\nSenderCompID=EXCH\nSocketAcceptPort=0\n"
        f"FileStorePath=store\n[SESSION]\nTargetCompID=GAMMA\nHmacKey={KEY.hex()}\n"
    )
    config = parse_config(text, base_dir=str(tmp_path))
    return FixServer(config, task.Clock(), now_ns=lambda: now_ns)


def _signed_logon(now_ns: int, nonce: bytes) -> bytes:
    sending_time = format_utc_timestamp(now_ns)
    signature = sign_logon(KEY, signed_logon_payload(sending_time, b"1", b"GAMMA", b"EXCH", nonce))
    return encode([
        (35, "A"), (34, 1), (49, "GAMMA"), (52, sending_time), (56, "EXCH"),
        (95, len(nonce)), (96, nonce), (98, 0), (108, 30), (554, signature), (141, "Y"),
    ])


def _events(server: FixServer, raw: bytes, now_ns: int) -> list[object]:
    connection = SessionConnection(server.registry, now_ns)
    connection.receive_data(raw, now_ns)
    events: list[object] = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    if connection.session is not None:
        connection.connection_lost(now_ns)
    return events


def test_replayed_signed_logon_is_refused_after_a_restart(tmp_path):
    """Accepted before the restart; the same bytes 5 s after it fail (nonce reused)."""
    raw = _signed_logon(T0, b"captured-nonce-01")
    first = _server(tmp_path, T0)
    assert isinstance(_events(first, raw, T0)[0], LoggedOn)
    first.write_batch.flush()  # what the reactor does before any socket write
    # SIGKILL-like: nothing closed, no fsync; the page cache is all there is.
    second = _server(tmp_path, T0 + 5 * NS_PER_SECOND)
    failed = _events(second, raw, T0 + 5 * NS_PER_SECOND)[0]
    assert isinstance(failed, LogonFailed) and "nonce reused" in failed.reason
