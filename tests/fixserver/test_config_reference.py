"""ops/README.md documents every config section and key the parser accepts (and no other)."""

from __future__ import annotations

import os
import re

import attr
import pytest

from fixserver import config as config_module
from fixserver.config import ConfigError, ServerConfig, parse_config
from fixserver.settings import SessionSettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(REPO, "ops", "README.md")

#: the parser's own tables: key -> (field, parser) or key -> parser
PARSER_KEYS = {
    "server": set(config_module._SERVER_KEYS),
    "session": set(config_module._SESSION_KEYS),
    "firm": set(config_module._FIRM_KEYS),
    "account": set(config_module._ACCOUNT_KEYS),
    "instrument": set(config_module.INSTRUMENT_KEYS),
    "funding": set(config_module.FUNDING_KEYS),
}

#: which heading of ops/README.md holds which group's table
HEADINGS = {
    "server": "### Server-wide keys",
    "session": "### Per-session keys",
    "firm": "### `[FIRM]` section",
    "account": "### `[ACCOUNT]` section",
    "instrument": "### `[INSTRUMENT]` section",
    "funding": "### `[FUNDING]` section",
}

MINIMAL = "[DEFAULT]\nBeginString=FIX.4.4\nSenderCompID=EXCH\nSocketAcceptPort=0\n"


class Row:
    """One documented key: the group it is in, its default cell and its meaning cell."""

    def __init__(self, key: str, group: str, default: str, meaning: str) -> None:
        self.key = key
        self.group = group
        self.default = default
        self.meaning = meaning


def _config_chapter() -> list[str]:
    with open(REFERENCE, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    start = lines.index("## The config file")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start:end]


def _tables(lines: list[str]) -> dict[str, list[list[str]]]:
    """Heading -> the body rows (cells) of the tables under it."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    in_table = False
    for line in lines:
        if line.startswith("#"):
            heading = line
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:  # the header row
            in_table = True
            continue
        if all(set(c) <= set("-: ") for c in cells):  # the |---| row
            continue
        tables.setdefault(heading, []).append(cells)
    return tables


def _documented() -> list[Row]:
    tables = _tables(_config_chapter())
    rows: list[Row] = []
    for group, prefix in HEADINGS.items():
        found = [h for h in tables if h.startswith(prefix)]
        assert len(found) == 1, f"ops/README.md needs one heading starting {prefix!r}"
        for cells in tables[found[0]]:
            assert len(cells) == 3, f"expected | key | default | meaning |, got {cells}"
            keys = re.findall(r"`([A-Za-z]+)`", cells[0])
            assert keys, f"no `Key` in the first cell of {cells}"
            rows.extend(Row(key, group, cells[1], cells[2]) for key in keys)
    return rows


def _documented_sections() -> list[str]:
    rows = _tables(_config_chapter())["### Sections"]
    return [re.fullmatch(r"`\[([A-Z]+)\]`", cells[0]).group(1) for cells in rows]  # type: ignore[union-attr]


@pytest.mark.parametrize("group", sorted(PARSER_KEYS))
def test_every_key_the_parser_accepts_is_documented_and_nothing_else(group):
    """Each group's documented keys are exactly the keys the parser accepts in that group."""
    documented = [r.key for r in _documented() if r.group == group]
    assert len(documented) == len(set(documented)), f"a {group} key is documented twice"
    missing = PARSER_KEYS[group] - set(documented)
    unknown = set(documented) - PARSER_KEYS[group]
    assert not missing, f"accepted by fixserver/config.py but not in ops/README.md: {missing}"
    assert not unknown, f"in ops/README.md but not accepted by fixserver/config.py: {unknown}"


def test_every_documented_key_has_a_default_and_a_meaning():
    """No row leaves its default or its meaning empty."""
    for row in _documented():
        assert row.default and row.meaning, f"{row.key}: default and meaning must be filled in"


def _field_default(cls: type, name: str | None) -> object:
    fields = {f.name: f for f in attr.fields(cls)}
    if name is None or name not in fields:
        return attr.NOTHING
    return fields[name].default


@pytest.mark.parametrize("group", ["server", "session"])
def test_documented_defaults_are_the_code_defaults(group):
    """A default written as a value (`120`, `Y`) parses to the field's default; `unset` is None."""
    table = config_module._SERVER_KEYS if group == "server" else config_module._SESSION_KEYS
    cls = ServerConfig if group == "server" else SessionSettings
    checked = 0
    for row in (r for r in _documented() if r.group == group):
        field, parser = table[row.key]
        default = _field_default(cls, field)
        if default is attr.NOTHING:  # no field of its own (ConnectionType, TLS settings)
            continue
        literal = re.match(r"`([^`]*)`", row.default)
        if literal:
            assert parser(literal.group(1)) == default, f"{row.key}: documented {row.default}"
        elif row.default.startswith("unset"):
            assert default is None, f"{row.key}: documented unset, code default {default!r}"
        else:
            assert row.default.startswith("required"), f"{row.key}: unreadable default"
            continue
        checked += 1
    assert checked >= 10


def test_documented_sections_are_the_sections_the_parser_accepts():
    """[DEFAULT], [SESSION], [FIRM], [ACCOUNT], [INSTRUMENT], [FUNDING] parse; the
    unknown-section error lists them all."""
    sections = _documented_sections()
    assert sections == ["DEFAULT", "SESSION", "FIRM", "ACCOUNT", "INSTRUMENT", "FUNDING"]
    text = (
        MINIMAL + "JournalPath=journal\n"
        "[FIRM]\nFirm=ACME\nAccounts=A1\n[ACCOUNT]\nAccount=A2\nFirm=ACME\n"
        "[SESSION]\nTargetCompID=C1\nFirm=ACME\n"
    )
    parsed = parse_config(text)
    assert [a.account for a in parsed.firms[0].accounts] == ["A1", "A2"]
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "[SESSION]\nTargetCompID=C1\n[SESION]\n")
    message = str(caught.value)
    assert "unknown section [SESION]" in message
    listed = re.findall(r"\[([A-Z]+)\]", message.split("expected", 1)[1])
    assert listed == sections


def test_reference_names_journal_path_and_max_open_orders():
    """The keys order entry cannot run without are where an operator looks for them."""
    rows = {(r.group, r.key): r for r in _documented()}
    assert "required" in rows[("server", "JournalPath")].default
    assert ("firm", "MaxOpenOrders") in rows and ("account", "MaxOpenOrders") in rows
