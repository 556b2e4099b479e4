"""Session layer against acceptance scripts in QuickFIX's .def format, replayed in-process.

The QuickFIX fix44 server scripts are not part of this repository: point
``FIX_SESSION_DEFS_DIR`` at a local copy (e.g. quickfix's test/definitions/server/fix44) to run
them; otherwise only the runner's own scripts below run.
"""

from __future__ import annotations

import glob
import os

import pytest

from fixserver.session import SessionRegistry
from tests.fixserver.session_helpers import standard_dictionary
from tests.fixserver.session_script import (
    START_NS,
    EchoApplication,
    ScriptFailure,
    compare,
    default_sessions,
    fixify,
    run_script,
)

DEFS_DIR = os.environ.get("FIX_SESSION_DEFS_DIR")
def _run(text: str) -> None:
    registry = SessionRegistry(default_sessions(standard_dictionary()))
    run_script(text, registry, EchoApplication(), START_NS)


OWN_SCRIPT = """# logon, test request, resend of an echoed order, logout
iCONNECT
I8=FIX.4.4\x0135=A\x0134=1\x0149=TW44\x0152=<TIME>\x0156=ISLD\x0198=0\x01108=30\x01
E8=FIX.4.4\x019=63\x0135=A\x0134=1\x0149=ISLD\x0152=00000000-00:00:00.000\x0156=TW44\x0198=0\x01108=30\x0110=0\x01
I8=FIX.4.4\x0135=1\x0134=2\x0149=TW44\x0152=<TIME>\x0156=ISLD\x01112=PING\x01
E8=FIX.4.4\x019=60\x0135=0\x0134=2\x0149=ISLD\x0152=00000000-00:00:00.000\x0156=TW44\x01112=PING\x0110=0\x01
I8=FIX.4.4\x0135=2\x0134=3\x0149=TW44\x0152=<TIME>\x0156=ISLD\x017=1\x0116=0\x01
E8=FIX.4.4\x019=93\x0135=4\x0134=1\x0143=Y\x0149=ISLD\x0152=00000000-00:00:00.000\x0156=TW44\x01122=00000000-00:00:00.000\x0136=3\x01123=Y\x0110=0\x01
I8=FIX.4.4\x0135=5\x0134=4\x0149=TW44\x0152=<TIME>\x0156=ISLD\x01
E8=FIX.4.4\x019=51\x0135=5\x0134=3\x0149=ISLD\x0152=00000000-00:00:00.000\x0156=TW44\x0110=0\x01
eDISCONNECT
"""


def test_runner_passes_a_correct_script():
    """The in-process runner replays a script the session answers correctly."""
    _run(OWN_SCRIPT)


def test_runner_detects_a_wrong_expectation():
    """A script expecting the wrong MsgSeqNum fails with the line and the difference."""
    wrong = OWN_SCRIPT.replace("\x0134=3\x0149=ISLD", "\x0134=9\x0149=ISLD")
    with pytest.raises(ScriptFailure, match="field 34 should be '9' but was '3'"):
        _run(wrong)


def test_runner_fills_body_length_and_checksum_and_compares_by_shape():
    """fixify adds 9 and 10; compare accepts any SendingTime shape but exact other values."""
    raw = fixify("8=FIX.4.4\x0135=0\x0134=2\x01")
    total = sum(raw.rsplit("10=", 1)[0].encode()) % 256
    assert raw == f"8=FIX.4.4\x019=10\x0135=0\x0134=2\x0110={total:03d}\x01"
    assert compare("52=00000000-00:00:00.000\x01", "52=20240102-12:00:00.123\x01") is None
    assert compare("58=a\x01", "58=b\x01") is not None


@pytest.mark.skipif(DEFS_DIR is None, reason="FIX_SESSION_DEFS_DIR not set")
@pytest.mark.parametrize(
    "path",
    sorted(glob.glob(os.path.join(DEFS_DIR or ".", "*.def"))),
    ids=os.path.basename,
)
def test_quickfix_fix44_server_script(path):
    """Each QuickFIX fix44 server acceptance script passes against the session core."""
    name = os.path.basename(path)
    with open(path, encoding="latin-1") as handle:
        text = handle.read()
    if "8=FIX.4.2" in text:
        pytest.skip(f"{name} is a FIX.4.2 script")
    _run(text)
