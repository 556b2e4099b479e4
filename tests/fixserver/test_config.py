"""The QuickFIX-style config file gives ServerConfig or a ConfigError naming the setting."""

from __future__ import annotations

import datetime
import os

import pytest

from fixserver.config import ConfigError, load_config, parse_config
from fixserver.settings import LogonAuth, SessionRole

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASIC = """\
# demo
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9876
SocketAcceptAddress=127.0.0.1
HttpPort=9100
HeartBtInt=30

[SESSION]
TargetCompID=CLIENT1
Firm=ACME

[SESSION]
TargetCompID=CLIENT2
HeartBtInt=5
ResetOnLogon=Y
StartTime=08:00:00
EndTime=17:30:00
SessionRole=drop-copy
"""


def test_defaults_are_inherited_and_overridden():
    """[DEFAULT] values reach every [SESSION]; a session's own value wins."""
    config = parse_config(BASIC)
    first, second = config.sessions
    assert first.session_id == "FIX.4.4:EXCH->CLIENT1"
    assert first.heart_bt_int == 30 and first.firm == "ACME"
    assert second.heart_bt_int == 5 and second.reset_on_logon is True
    assert second.start_time == datetime.time(8, 0) and second.end_time == datetime.time(17, 30)
    assert second.role is SessionRole.DROP_COPY
    assert first.role is SessionRole.ORDER_ENTRY
    assert (config.accept_address, config.accept_port, config.http_port) == (
        "127.0.0.1",
        9876,
        9100,
    )
    assert config.tls is None and config.file_store_path is None


def test_keys_are_case_insensitive():
    """QuickFIX users write keys in varying case; the canonical setting is found."""
    config = parse_config(BASIC.replace("HeartBtInt=5", "heartbtint=6"))
    assert config.sessions[1].heart_bt_int == 6


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            "HeartBtInt=5",
            "Starttime=08:00:00",
            r"x.cfg:18: StartTime set twice in \[SESSION\] #2 \(line 14\) \(first on line 16\)",
        ),
        (
            "HeartBtInt=5",
            "HeartBtInterval=5",
            r"x.cfg:16: unknown setting HeartBtInterval .*did you mean HeartBtInt",
        ),
        (
            "HeartBtInt=5",
            "HeartBtInt=five",
            r"x.cfg:16: HeartBtInt='five' in \[SESSION\] #2 \(line 14\): expected a whole number",
        ),
        (
            "ResetOnLogon=Y",
            "ResetOnLogon=maybe",
            r"x.cfg:17: ResetOnLogon='maybe'.*expected Y or N",
        ),
        ("StartTime=08:00:00", "StartTime=8am", r"StartTime='8am'.*HH:MM:SS"),
        ("EndTime=17:30:00\n", "", r"EndTime is missing in \[SESSION\] #2"),
        ("SocketAcceptPort=9876\n", "", r"SocketAcceptPort is missing in \[DEFAULT\]"),
        (
            "SocketAcceptPort=9876",
            "SocketAcceptPort=70000",
            r"x.cfg:5: SocketAcceptPort='70000'.*port",
        ),
        (
            "TargetCompID=CLIENT2",
            "TargetCompID=CLIENT1",
            r"\[SESSION\] #2 \(line 14\) repeats session FIX.4.4:EXCH->CLIENT1",
        ),
        ("BeginString=FIX.4.4", "BeginString=FIX.5.0", r"x.cfg:3: BeginString='FIX.5.0'"),
        ("SessionRole=drop-copy", "SessionRole=trader", r"SessionRole='trader'.*order-entry"),
        ("Firm=ACME", "HttpPort=1", r"x.cfg:12: HttpPort is server-wide: set it in \[DEFAULT\]"),
        ("SenderCompID=EXCH\n", "", r"SenderCompID is missing in \[SESSION\] #1"),
        (
            "Firm=ACME",
            "DataDictionary=nowhere/FIX44.xml",
            r"DataDictionary in \[SESSION\] #1.*no such file",
        ),
        ("Firm=ACME", "Password=pw\nHmacKey=" + "ab" * 16, r"either HmacKey or Password"),
        ("Firm=ACME", "HmacKey=xyz", r"HmacKey='xyz'.*hexadecimal"),
        ("Firm=ACME", "ConnectionType=initiator", r"ConnectionType='initiator'.*acceptor"),
        ("# demo", "stray=1", r"x.cfg:1: setting before any \[DEFAULT\] or \[SESSION\]"),
        ("[SESSION]\nTargetCompID=CLIENT1", "[SESION]", r"unknown section \[SESION\]"),
    ],
)
def test_wrong_settings_name_the_setting_and_line(replace, by, expected):
    """Each wrong or missing setting raises ConfigError naming it (and its section/line)."""
    text = BASIC.replace(replace, by, 1)
    assert text != BASIC
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, source="x.cfg")


def test_abuse_limits_and_listen_backlog_are_read():
    """MaxGarbledMessages/GarbledMessageWindow per session (0 = no limit), ListenBacklog
    server-wide; a backlog of 0 is refused."""
    text = BASIC.replace("HttpPort=9100", "HttpPort=9100\nListenBacklog=4096\n"
                         "MaxGarbledMessages=5\nGarbledMessageWindow=30")
    config = parse_config(text.replace("ResetOnLogon=Y", "MaxGarbledMessages=0"))
    assert config.listen_backlog == 4096
    assert [(s.max_garbled_messages, s.garbled_message_window) for s in config.sessions] == [
        (5, 30), (0, 30)]
    assert parse_config(BASIC).listen_backlog == 1024
    with pytest.raises(ConfigError, match=r"ListenBacklog='0'.*> 0"):
        parse_config(BASIC.replace("HttpPort=9100", "ListenBacklog=0"))


def test_no_session_is_an_error():
    """A file without any [SESSION] is refused: the server would serve nobody."""
    with pytest.raises(ConfigError, match="no \\[SESSION\\]"):
        parse_config("[DEFAULT]\nSocketAcceptPort=1\n")


def test_logon_auth_follows_credentials():
    """Password gives password auth, HmacKey gives HMAC auth (hex-decoded), neither gives none."""
    text = BASIC.replace("Firm=ACME", "Username=u1\nPassword=secret").replace(
        "SessionRole=drop-copy", "HmacKey=" + "0f" * 32
    )
    first, second = parse_config(text).sessions
    assert first.auth is LogonAuth.PASSWORD and (first.username, first.password) == ("u1", "secret")
    assert second.auth is LogonAuth.HMAC and second.hmac_key == bytes([15]) * 32
    assert parse_config(BASIC).sessions[0].auth is LogonAuth.NONE


def test_paths_resolve_against_the_config_folder(tmp_path):
    """Relative DataDictionary, FileStorePath and certificate paths are relative to the file."""
    (tmp_path / "dd.xml").write_text("<fix/>")
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    text = BASIC.replace("Firm=ACME", "DataDictionary=dd.xml").replace(
        "HttpPort=9100",
        "FileStorePath=store\nSocketAcceptPortTLS=9877\nServerCertificateFile=c.pem\n"
        "ServerCertificateKeyFile=k.pem",
    )
    path = tmp_path / "server.cfg"
    path.write_text(text)
    config = load_config(str(path))
    assert config.sessions[0].data_dictionary == str(tmp_path / "dd.xml")
    assert config.file_store_path == str(tmp_path / "store")
    assert config.tls is not None and config.tls.port == 9877
    assert config.tls.certificate_file == str(tmp_path / "c.pem")


def test_tls_port_needs_certificate_and_key():
    """SocketAcceptPortTLS without ServerCertificateFile is refused, naming the missing key."""
    with pytest.raises(ConfigError, match="ServerCertificateFile is missing"):
        parse_config(BASIC.replace("HttpPort=9100", "SocketAcceptPortTLS=9877"))


def test_unreadable_file_is_a_config_error(tmp_path):
    """A missing config file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path / "missing.cfg"))


@pytest.mark.parametrize("name", ["fixserver.cfg", "conformance.cfg"])
def test_shipped_configs_load(name):
    """The configs in ops/ are valid."""
    config = load_config(os.path.join(REPO, "ops", name))
    assert config.sessions


def test_quickfix_dictionary_prefix_names_the_installed_standard_dictionary():
    """DataDictionary=quickfix:FIX44.xml resolves to quickfix's share/quickfix/FIX44.xml."""
    from fixserver.dictionary import quickfix_spec_path

    text = BASIC.replace("Firm=ACME", "DataDictionary=quickfix:FIX44.xml")
    if not os.path.isfile(quickfix_spec_path("FIX44.xml")):
        with pytest.raises(ConfigError, match="not installed"):
            parse_config(text)
        return
    assert parse_config(text).sessions[0].data_dictionary == quickfix_spec_path("FIX44.xml")
    with pytest.raises(ConfigError, match=r"FIX99\.xml is not installed"):
        parse_config(BASIC.replace("Firm=ACME", "DataDictionary=quickfix:FIX99.xml"))
