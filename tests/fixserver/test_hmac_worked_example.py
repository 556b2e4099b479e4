"""The signed-logon worked example in spec/rules-of-engagement.md is what the exchange accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.config import load_config
from fixserver.logon_auth import (
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    sign_logon,
    signed_logon_payload,
)
from fixserver.server import load_dictionary
from fixserver.session import Session, SessionConnection, SessionRegistry
from fixserver.settings import LogonAuth, SessionSettings
from fixserver.store import MemoryMessageStore
from fixserver.timeutil import NS_PER_SECOND, parse_utc_timestamp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(REPO, "spec", "rules-of-engagement.md")
DEMO_CONFIG = os.path.join(REPO, "ops", "fixserver.cfg")


def _spec() -> str:
    with open(SPEC, encoding="utf-8") as handle:
        return handle.read()


def _fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def _signed_logon_chapter() -> str:
    text = _spec()
    start = text.index("### Signed logon")
    end = text.index("\n## ", start)
    return text[start:end]


def _example() -> tuple[dict[str, str], list[str]]:
    """The example's named values, and the Logon's wire fields (one per line)."""
    chapter = _signed_logon_chapter()
    values_block, wire_block = _fenced_blocks(chapter[chapter.index("#### Worked example"):],
                                              "text")[:2]
    values = {}
    for line in values_block.splitlines():
        name, value = re.fullmatch(r"(.+?)\s+(\S+)", line.strip()).groups()  # type: ignore[union-attr]
        values[name] = value
    return values, wire_block.splitlines()


def _wire(lines: list[str]) -> bytes:
    return "".join(line + "\x01" for line in lines).encode("ascii")


def _field(lines: list[str], tag: int) -> str:
    return next(line.split("=", 1)[1] for line in lines if line.startswith(f"{tag}="))


def _demo_settings() -> SessionSettings:
    config = load_config(DEMO_CONFIG)
    return next(s for s in config.sessions if s.target_comp_id == "GAMMAHMAC")


class _Client:
    """One connection to a fresh in-memory copy of the demo session, with our clock."""

    def __init__(self, session: Session | None = None) -> None:
        settings = _demo_settings()
        if session is None:
            sent_ns = parse_utc_timestamp(b"20240102-12:00:00")
            session = Session(settings, MemoryMessageStore(sent_ns - 3600 * NS_PER_SECOND),
                              load_dictionary(settings))
        self.session = session
        self.registry = SessionRegistry([session])
        self.closed = False

    def send_at(self, raw: bytes, when: str) -> list[FixMessage]:
        now_ns = parse_utc_timestamp(when.encode())
        conn = SessionConnection(self.registry, now_ns)
        conn.receive_data(raw, now_ns)
        self.closed = conn.should_close
        decoder = FrameDecoder()
        decoder.feed(conn.data_to_send())
        out = []
        while (item := decoder.next_message()) is not None:
            assert isinstance(item, FixMessage), item
            out.append(item)
        if conn.session is not None:
            conn.connection_lost(now_ns)
        return out


def _answer(messages: list[FixMessage]) -> tuple:
    assert len(messages) == 1, messages
    msg = messages[0]
    return (msg.get_str(35), msg.get_str(58))


def test_example_uses_the_demo_session_and_its_key():
    """The example's key, CompIDs and HeartBtInt are those of GAMMAHMAC in ops/fixserver.cfg."""
    values, lines = _example()
    settings = _demo_settings()
    assert settings.auth is LogonAuth.HMAC
    assert settings.hmac_key == bytes.fromhex(values["HmacKey"]) == bytes(range(32))
    assert values["SenderCompID"] == settings.target_comp_id == _field(lines, 49)
    assert values["TargetCompID"] == settings.sender_comp_id == _field(lines, 56)
    assert settings.hmac_window == 30
    assert _field(lines, 108) == str(settings.heart_bt_int)


def test_signed_string_and_signature_are_the_exchanges():
    """logon_auth builds the documented signed string and signs it to the documented hex."""
    values, _ = _example()
    payload = signed_logon_payload(
        values["SendingTime"].encode(), values["MsgSeqNum"].encode(),
        values["SenderCompID"].encode(), values["TargetCompID"].encode(),
        values["nonce"].encode(),
    )
    assert payload == values["signed string"].encode()
    key = bytes.fromhex(values["HmacKey"])
    assert sign_logon(key, payload) == values["signature hex"]
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == values["signature base64"]


def test_reference_implementation_on_the_page_gives_the_example():
    """The Python snippet of the page, run as printed, reproduces the worked example."""
    values, _ = _example()
    (snippet,) = _fenced_blocks(_signed_logon_chapter(), "python")
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    result = namespace["sign_logon"](  # type: ignore[operator]
        values["HmacKey"], values["SendingTime"], values["MsgSeqNum"],
        values["SenderCompID"], values["TargetCompID"], values["nonce"],
    )
    assert result == (values["signed string"], values["signature hex"],
                      values["signature base64"])


def test_wire_logon_is_framed_correctly_and_carries_the_example_values():
    """BodyLength and CheckSum on the page are right; 52/34/95/96/554 are the example's."""
    values, lines = _example()
    assert lines[0] == "8=FIX.4.4" and lines[1].startswith("9=") and lines[-1].startswith("10=")
    body = [(int(t), v) for t, v in (line.split("=", 1) for line in lines[2:-1])]
    assert encode(body) == _wire(lines)
    assert _field(lines, 52) == values["SendingTime"]
    assert _field(lines, 34) == values["MsgSeqNum"]
    assert _field(lines, 96) == values["nonce"]
    assert _field(lines, 95) == str(len(values["nonce"]))
    assert _field(lines, 554) == values["signature hex"]
    assert MIN_NONCE_BYTES <= len(values["nonce"]) <= MAX_NONCE_BYTES


def test_example_logon_accepted_in_the_window_and_refused_on_replay():
    """The page's bytes log on by 12:00:30; again, or later, they are refused: the connection
    is closed without an answer."""
    _, lines = _example()
    raw = _wire(lines)
    client = _Client()
    reply = client.send_at(raw, "20240102-12:00:05")
    assert _answer(reply) == ("A", None)
    assert (reply[0].get_str(98), reply[0].get_str(108)) == ("0", "30")
    assert client.send_at(raw, "20240102-12:00:10") == [] and client.closed

    assert _answer(_Client().send_at(raw, "20240102-12:00:30")) == ("A", None)
    late = _Client()
    assert late.send_at(raw, "20240102-12:00:31") == [] and late.closed


def test_base64_form_with_the_documented_framing_is_accepted():
    """The base64 signature, with the BodyLength and CheckSum the page gives, logs on too."""
    values, lines = _example()
    body = [(int(t), v) for t, v in (line.split("=", 1) for line in lines[2:-1])]
    body = [(t, values["signature base64"] if t == 554 else v) for t, v in body]
    raw = encode(body)
    body_length = re.search(rb"\x019=(\d+)\x01", raw).group(1).decode()  # type: ignore[union-attr]
    checksum = raw[-4:-1].decode()
    chapter = _signed_logon_chapter()
    assert f"554={values['signature base64']}" in chapter
    assert f"9={body_length}, 10={checksum}" in chapter
    assert _answer(_Client().send_at(raw, "20240102-12:00:00")) == ("A", None)


def test_page_states_the_refusal_and_nonce_limits():
    """What a refusal looks like (no answer), that nonces outlive a restart, and the nonce
    sizes are the code's."""
    chapter = _signed_logon_chapter()
    assert "closed without an answer" in chapter and "Authentication failed" not in chapter
    assert "a restart does not forget them" in chapter
    assert f"{MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes" in chapter
