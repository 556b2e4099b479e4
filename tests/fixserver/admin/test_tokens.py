"""Admin tokens: the config keys, the token file, and the constant-time check by name."""

from __future__ import annotations

import os

import pytest

from fixserver.admin.tokens import (
    AdminToken,
    TokenError,
    TokenVerifier,
    check_unique,
    parse_token_file,
    parse_token_list,
)
from fixserver.config import ConfigError, parse_config

SECRET_A = "alice-secret-0123456789"
SECRET_B = "bob-secret-9876543210xx"
BASE = ("[DEFAULT]\nBeginString=FIX.4.4\nSenderCompID=EXCH\nSocketAcceptPort=0\n"
        "HttpPort=0\n{extra}[SESSION]\nTargetCompID=C1\n")


def _config(extra: str, base_dir: str = "."):
    return parse_config(BASE.format(extra=extra), base_dir=base_dir)


def test_token_list_and_file_parse_names_and_secrets():
    """``name:secret`` pairs (comma-separated) and ``name secret`` lines with comments."""
    assert parse_token_list(f"alice:{SECRET_A}, bob:{SECRET_B}") == [
        AdminToken("alice", SECRET_A), AdminToken("bob", SECRET_B)]
    text = f"# operators\n\nalice {SECRET_A}\n  bob\t{SECRET_B}  \n"
    assert [t.name for t in parse_token_file(text)] == ["alice", "bob"]


@pytest.mark.parametrize("value", ["alice", "alice:tiny9", ":0123456789abcdefgh",
                                   "al ice:0123456789abcdefgh", "a:0123456789 abcdefgh"])
def test_bad_token_definitions_are_refused_without_showing_the_secret(value):
    """A missing name, a short or blank-containing secret: TokenError, no secret in it."""
    with pytest.raises(TokenError) as caught:
        parse_token_list(value)
    secret = value.partition(":")[2]
    assert not secret or secret not in str(caught.value)


def test_names_and_secrets_are_unique():
    """Two tokens with one name, or one secret for two names, are refused."""
    with pytest.raises(TokenError, match="twice"):
        check_unique([AdminToken("a", SECRET_A), AdminToken("a", SECRET_B)])
    with pytest.raises(TokenError, match="same secret"):
        check_unique([AdminToken("a", SECRET_A), AdminToken("b", SECRET_A)])


def test_secret_is_kept_out_of_reprs():
    """A token's repr (and so the config's) shows its name only."""
    assert SECRET_A not in repr(AdminToken("alice", SECRET_A))
    config = _config(f"AdminToken=alice:{SECRET_A}\n")
    assert SECRET_A not in repr(config)


def test_verifier_names_the_token_or_none():
    """The right secret gives its token's name; anything else None; no token: disabled."""
    verifier = TokenVerifier((AdminToken("alice", SECRET_A), AdminToken("bob", SECRET_B)))
    assert verifier.enabled
    assert verifier.who(SECRET_A) == "alice" and verifier.who(SECRET_B) == "bob"
    assert verifier.who(SECRET_A[:-1]) is None and verifier.who("") is None
    assert verifier.who(SECRET_A + "x") is None
    assert not TokenVerifier(()).enabled


def test_config_reads_tokens_from_the_key_and_the_file(tmp_path):
    """AdminToken and AdminTokenFile (relative to the config) together; AdminPort/Address."""
    path = tmp_path / "admin.tokens"
    path.write_text(f"bob {SECRET_B}\n")
    os.chmod(path, 0o600)
    config = _config(f"AdminToken=alice:{SECRET_A}\nAdminTokenFile=admin.tokens\n"
                     "AdminAddress=127.0.0.2\nAdminPort=9101\n", str(tmp_path))
    assert [t.name for t in config.admin_tokens] == ["alice", "bob"]
    assert (config.admin_address, config.admin_port) == ("127.0.0.2", 9101)
    assert _config("").admin_tokens == () and _config("").admin_port is None


def test_config_errors_name_the_key_and_hide_the_secret(tmp_path):
    """Bad tokens, a token file others can read, a duplicate across key and file,
    AdminAddress without AdminPort, tokens with no port to serve them on."""
    with pytest.raises(ConfigError) as caught:
        _config("AdminToken=alice:tooshort\n")
    assert "AdminToken" in str(caught.value) and "tooshort" not in str(caught.value)
    path = tmp_path / "admin.tokens"
    path.write_text(f"alice {SECRET_B}\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="other users may access it"):
        _config(f"AdminTokenFile={path}\n")
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="configured twice") as caught:
        _config(f"AdminToken=alice:{SECRET_A}\nAdminTokenFile={path}\n")
    assert SECRET_A not in str(caught.value) and SECRET_B not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        _config(f"AdminTokenFile={tmp_path / 'missing'}\n")
    with pytest.raises(ConfigError, match="AdminPort is not"):
        _config("AdminAddress=0.0.0.0\n")
    with pytest.raises(ConfigError, match="neither HttpPort nor AdminPort"):
        parse_config(BASE.replace("HttpPort=0\n", "").format(
            extra=f"AdminToken=alice:{SECRET_A}\n"))
