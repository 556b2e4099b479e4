"""FIX data dictionary: loads QuickFIX-format XML and validates inbound messages against it.

Theory of operation
-------------------
``DataDictionary.load(path)`` reads any QuickFIX-format dictionary (the standard FIX44.xml or
the exchange's ``spec/FIX44-exchange.xml``) into flat, precomputed tables: field definitions by
tag, and for the header, the trailer, every message type and every repeating group a
``Scope``: the tags allowed at that level, the tags required there and the groups that start
there. Components are expanded at load time, so validation never looks at the XML structure.

``validate(msg)`` walks ``msg.fields`` once, in wire order (see ``fixserver.groups``), and
raises ``ValidationError`` with the SessionRejectReason (373) the FIX session protocol
prescribes. When a message breaks several rules, the reported one follows QuickFIX's
``DataDictionary::validate``: header field order (8, 9, 35 first), then BeginString, then
header/body/trailer order and repeating-group delimiters, then MsgType, then required fields
(header, trailer, body, group entries), then per-field problems (header fields first, then
trailer, then body; for each field: repeated tag, empty value, format, enum value, unknown
tag, tag not in this message type, group count).

Requiredness differs from QuickFIX C++ in one place on purpose: a field marked required inside
a repeating group is required in every entry of the group whenever the group is present (the
FIX specification's meaning), where QuickFIX C++ only checks it if the group itself is required.

Validation options mirror the QuickFIX session settings ValidateFieldsOutOfOrder,
ValidateFieldsHaveValues, ValidateUserDefinedFields and AllowUnknownMsgFields;
``with_options`` makes a copy with other options that shares the loaded tables.
"""

from __future__ import annotations

import os
import re
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Callable

from fixserver.codec import FixMessage
from fixserver.groups import (
    FieldList,
    GroupDef,
    Layout,
    RejectReason,
    Scope,
    UnsupportedBeginString,
    ValidationError,
    read_group_entries,
    validate_message,
)

__all__ = [
    "DataDictionary",
    "DictionaryError",
    "FieldDef",
    "GroupDef",
    "MessageDef",
    "RejectReason",
    "Scope",
    "UnsupportedBeginString",
    "ValidationError",
    "quickfix_spec_path",
    "spec_path",
]

SPEC_FILE_NAME = "FIX44-exchange.xml"

#: a format check returns a truthy value for a well-formed value (regex fullmatch included)
FormatCheck = Callable[[bytes], object]


class DictionaryError(Exception):
    """A dictionary file is malformed (unknown field name, missing section, ...)."""


# --- value formats --------------------------------------------------------------------------
# These run for every field of every inbound message, so the common types use bytes methods
# rather than regular expressions. Formats follow FIX 4.4 Volume 1 "Data types"; timestamps
# may carry milliseconds, microseconds or nanoseconds, as QuickFIX 1.15+ accepts.

_TIME = rb"(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.(?:\d{3}|\d{6}|\d{9}))?"
_DATE = rb"\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_ZONE = rb"(?:Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)"
_HHMM_SS = rb"(?:[01]\d|2[0-3]):[0-5]\d(?::(?:[0-5]\d|60))?"
_match_utc_timestamp = re.compile(_DATE + b"-" + _TIME).fullmatch
_match_utc_time_only = re.compile(_TIME).fullmatch
_match_date = re.compile(_DATE).fullmatch
_match_month_year = re.compile(rb"\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]|w[1-5])?").fullmatch
_match_tz_time_only = re.compile(_HHMM_SS + _ZONE).fullmatch
_match_tz_timestamp = re.compile(_DATE + b"-" + _HHMM_SS + _ZONE).fullmatch


def is_int(value: bytes) -> bool:
    """INT: an optional minus sign and digits."""
    return (value[1:] if value[:1] == b"-" else value).isdigit()


def is_decimal(value: bytes) -> bool:
    """FLOAT, PRICE, QTY, AMT, PRICEOFFSET, PERCENTAGE: ``-?digits[.digits]``, no exponent."""
    if value[:1] == b"-":
        value = value[1:]
    if value.isdigit():
        return True
    whole, dot, fraction = value.partition(b".")
    if not dot or not (whole or fraction):
        return False
    return (not whole or whole.isdigit()) and (not fraction or fraction.isdigit())


def _is_day_of_month(value: bytes) -> bool:
    return value.isdigit() and len(value) <= 2 and 1 <= int(value) <= 31


#: QuickFIX XML type name -> format check; None means any value is well formed.
FORMAT_CHECKS: dict[str, FormatCheck | None] = {
    "INT": is_int,
    "LENGTH": bytes.isdigit,
    "SEQNUM": bytes.isdigit,
    "NUMINGROUP": bytes.isdigit,
    "TAGNUM": bytes.isdigit,
    "DAYOFMONTH": _is_day_of_month,
    "FLOAT": is_decimal,
    "PRICE": is_decimal,
    "QTY": is_decimal,
    "AMT": is_decimal,
    "PRICEOFFSET": is_decimal,
    "PERCENTAGE": is_decimal,
    "CHAR": lambda value: len(value) == 1,
    "BOOLEAN": lambda value: value == b"Y" or value == b"N",
    "UTCTIMESTAMP": _match_utc_timestamp,
    "TIME": _match_utc_timestamp,
    "UTCTIMEONLY": _match_utc_time_only,
    "UTCDATEONLY": _match_date,
    "UTCDATE": _match_date,
    "LOCALMKTDATE": _match_date,
    "MONTHYEAR": _match_month_year,
    "TZTIMEONLY": _match_tz_time_only,
    "TZTIMESTAMP": _match_tz_timestamp,
    "STRING": None,
    "MULTIPLEVALUESTRING": None,
    "MULTIPLESTRINGVALUE": None,
    "MULTIPLECHARVALUE": None,
    "CURRENCY": None,
    "EXCHANGE": None,
    "COUNTRY": None,
    "LANGUAGE": None,
    "DATA": None,
    "XMLDATA": None,
    "XID": None,
    "XIDREF": None,
}
# A type missing from this table is not checked either (as QuickFIX treats unknown types).

#: Identifier fields the exchange keeps (ClOrdIDs per session, ids echoed back): capped so a
#: client cannot make it hold arbitrary amounts of memory; longer values are rejected by
#: validation (35=3, SessionRejectReason 5) before the application sees the message.
MAX_ID_LENGTH = 64
ID_FIELDS = frozenset({1, 11, 37, 41, 262, 320, 324, 553, 584, 790})
#: every other free-text field (Text, Username's siblings, ...)
MAX_TEXT_LENGTH = 1024
TEXT_TYPES = frozenset({"STRING", "MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE",
                        "MULTIPLECHARVALUE", "EXCHANGE", "CURRENCY", "COUNTRY", "LANGUAGE"})


def max_length(number: int, type_: str) -> int:
    """The longest value validation accepts for a field (0: no limit, e.g. DATA)."""
    if number in ID_FIELDS:
        return MAX_ID_LENGTH
    return MAX_TEXT_LENGTH if type_ in TEXT_TYPES else 0


#: Types whose value is a space-separated list; each element must be an enum value.
MULTIPLE_VALUE_TYPES = frozenset(
    {"MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"}
)


# --- the loaded model -----------------------------------------------------------------------


class FieldDef:
    """One ``<field>`` of the dictionary: number, name, XML type and enum values (if any)."""

    __slots__ = (
        "accepts",
        "check",
        "max_len",
        "multiple",
        "name",
        "number",
        "type",
        "value_names",
        "values",
    )

    def __init__(self, number: int, name: str, type_: str, value_names: dict[str, str]) -> None:
        self.number = number
        self.name = name
        self.type = type_
        #: enum value -> description, in file order
        self.value_names = value_names
        self.values: frozenset[bytes] | None = (
            frozenset(v.encode("latin-1") for v in value_names) if value_names else None
        )
        self.check: FormatCheck | None = FORMAT_CHECKS.get(type_)
        self.multiple = type_ in MULTIPLE_VALUE_TYPES
        self.max_len = max_length(number, type_)
        #: one call answering "format and enum both fine?" for validation's fast path (None:
        #: anything non-empty is); on False the slow path works out which rule failed.
        self.accepts: FormatCheck | None = self._fast_check()

    def _fast_check(self) -> FormatCheck | None:
        within = self._value_check()
        max_len = self.max_len
        if not max_len:
            return within
        if within is None:
            return lambda value: len(value) <= max_len
        return lambda value: len(value) <= max_len and within(value)

    def _value_check(self) -> FormatCheck | None:
        values, check = self.values, self.check
        if values is None:
            return check
        if self.multiple:
            return lambda value: all(item in values for item in value.split(b" "))
        if check is None or all(check(v) for v in values):
            # Every enum value is well formed, so membership alone decides (a C call).
            return values.__contains__
        return lambda value: value in values and check(value)

    def __repr__(self) -> str:
        return f"FieldDef({self.number}, {self.name!r}, {self.type!r})"


class MessageDef:
    """A ``<message>``: MsgType, name, category (admin/app) and body scope."""

    __slots__ = ("body", "category", "msg_type", "name")

    def __init__(self, msg_type: str, name: str, category: str, body: Scope) -> None:
        self.msg_type = msg_type
        self.name = name
        self.category = category
        self.body = body


class _Tables:
    """Everything loaded from one file; shared by every DataDictionary made from it."""

    def __init__(self) -> None:
        self.begin_string = ""
        self.fields: dict[int, FieldDef] = {}
        self.tags_by_name: dict[str, int] = {}
        self.header = Scope()
        self.trailer = Scope()
        self.messages: dict[bytes, MessageDef] = {}
        self.components: dict[str, ET.Element] = {}
        #: length tag -> data tag, for the codec's length-prefixed fields
        self.data_tags: dict[int, int] = {}
        #: tag -> FieldDef.accepts, for the tags that have one
        self.accepts: dict[int, FormatCheck] = {}
        #: MsgType -> its precomputed top-level layout; and the layout for undefined types
        self.layouts: dict[bytes, Layout] = {}
        self.unknown_type_layout = Layout(self.header, self.trailer, None, {})


# --- loading --------------------------------------------------------------------------------


def _required(node: ET.Element) -> bool:
    return node.get("required", "N") in ("Y", "y")


def _tag_of(tables: _Tables, node: ET.Element) -> int:
    name = node.get("name")
    if name is None:
        raise DictionaryError(f"<{node.tag}> without a name attribute")
    tag = tables.tags_by_name.get(name)
    if tag is None:
        raise DictionaryError(f"field {name} is not defined in the <fields> section")
    return tag


def _first_tag(tables: _Tables, node: ET.Element) -> int:
    """The first field a group entry starts with: the group's delimiter."""
    for child in node:
        if child.tag in ("field", "group"):
            return _tag_of(tables, child)
        if child.tag == "component":
            return _first_tag(tables, _component(tables, child))
    raise DictionaryError(f"<{node.tag} name={node.get('name')!r}> has no fields")


def _component(tables: _Tables, node: ET.Element) -> ET.Element:
    name = node.get("name", "")
    component = tables.components.get(name)
    if component is None:
        raise DictionaryError(f"component {name!r} is not defined")
    return component


def _add_members(tables: _Tables, scope: Scope, node: ET.Element, required: bool) -> None:
    """Add a node's fields, groups and (expanded) components to ``scope``.

    ``required`` is False inside an optional component: its fields are then optional too.
    """
    for child in node:
        kind = child.tag
        if kind == "field":
            scope.add(_tag_of(tables, child), required and _required(child))
        elif kind == "group":
            count_tag = _tag_of(tables, child)
            scope.add(count_tag, required and _required(child))
            entry = Scope()
            # Entry requiredness is independent of whether the group is: see module doc.
            _add_members(tables, entry, child, True)
            delimiter = _first_tag(tables, child)
            scope.groups[count_tag] = GroupDef(count_tag, child.get("name", ""), delimiter, entry)
        elif kind == "component":
            _add_members(tables, scope, _component(tables, child), required and _required(child))


def _load_tables(path: str) -> _Tables:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DictionaryError(f"{path}: cannot read data dictionary: {exc}") from exc
    if root.tag != "fix":
        raise DictionaryError(f"{path}: root element is <{root.tag}>, expected <fix>")
    tables = _Tables()
    fix_type = root.get("type", "FIX")
    tables.begin_string = f"{fix_type}.{root.get('major')}.{root.get('minor')}"
    sp = root.get("servicepack", "0")
    if fix_type == "FIX" and root.get("major") == "5" and sp not in ("", "0"):
        tables.begin_string += f"SP{sp}"

    fields_node = root.find("fields")
    if fields_node is None:
        raise DictionaryError(f"{path}: no <fields> section")
    for node in fields_node.iter("field"):
        number, name, type_ = node.get("number"), node.get("name"), node.get("type")
        if not (number and name and type_) or not number.isdigit():
            raise DictionaryError(f"{path}: <field> needs a numeric number, a name and a type")
        values = {v.get("enum", ""): v.get("description", "") for v in node.iter("value")}
        tag = int(number)
        tables.fields[tag] = FieldDef(tag, name, type_, values)
        tables.tags_by_name[name] = tag

    components = root.find("components")
    if components is not None:
        tables.components = {c.get("name", ""): c for c in components}
    for section, scope in (("header", tables.header), ("trailer", tables.trailer)):
        section_node = root.find(section)
        if section_node is not None:
            _add_members(tables, scope, section_node, True)
        elif fix_type == "FIXT" or root.get("major", "") < "5":
            raise DictionaryError(f"{path}: no <{section}> section")

    messages = root.find("messages")
    if messages is None:
        raise DictionaryError(f"{path}: no <messages> section")
    for node in messages.iter("message"):
        msg_type = node.get("msgtype")
        if not msg_type:
            raise DictionaryError(f"{path}: <message> without msgtype")
        body = Scope()
        _add_members(tables, body, node, True)
        tables.messages[msg_type.encode("latin-1")] = MessageDef(
            msg_type, node.get("name", ""), node.get("msgcat", "app"), body
        )

    lengths = {f.name: f.number for f in tables.fields.values() if f.type == "LENGTH"}
    for field in tables.fields.values():
        if field.type in ("DATA", "XMLDATA"):
            for suffix in ("Len", "Length"):
                length_tag = lengths.get(field.name + suffix)
                if length_tag is not None:
                    tables.data_tags[length_tag] = field.number
    tables.accepts = {t: f.accepts for t, f in tables.fields.items() if f.accepts is not None}
    tables.layouts = {
        msg_type: Layout(tables.header, tables.trailer, message.body, tables.accepts)
        for msg_type, message in tables.messages.items()
    }
    tables.unknown_type_layout = Layout(tables.header, tables.trailer, None, tables.accepts)
    tables.components = {}  # only needed while loading
    return tables


# --- paths ----------------------------------------------------------------------------------


def spec_path() -> str:
    """Where the exchange's dictionary is: a copy shipped inside the package (installed use)
    or the repository's ``spec/`` directory (checkout use)."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    candidates = (
        os.path.join(package_dir, "spec", SPEC_FILE_NAME),
        os.path.join(os.path.dirname(package_dir), "spec", SPEC_FILE_NAME),
    )
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DictionaryError(f"{SPEC_FILE_NAME} not found in any of {', '.join(candidates)}")


def quickfix_spec_path(file_name: str = "FIX44.xml") -> str:
    """A standard dictionary as the quickfix package installs it (``<prefix>/share/quickfix``).

    Only the path is computed; quickfix itself is not imported (the server never needs it).
    """
    return os.path.join(sysconfig.get_paths()["data"], "share", "quickfix", file_name)


_tables_cache: dict[str, _Tables] = {}


# --- the public dictionary ------------------------------------------------------------------


class DataDictionary:
    """A loaded FIX dictionary with validation options (see the module docstring)."""

    def __init__(
        self,
        tables: _Tables,
        *,
        validate_fields_out_of_order: bool = True,
        validate_fields_have_values: bool = True,
        validate_user_defined_fields: bool = True,
        allow_unknown_msg_fields: bool = False,
    ) -> None:
        self._tables = tables
        self.validate_fields_out_of_order = validate_fields_out_of_order
        self.validate_fields_have_values = validate_fields_have_values
        self.validate_user_defined_fields = validate_user_defined_fields
        self.allow_unknown_msg_fields = allow_unknown_msg_fields
        self.begin_string = tables.begin_string
        self._begin_string_bytes = tables.begin_string.encode("ascii")
        self.fields = tables.fields
        self.header = tables.header
        self.trailer = tables.trailer
        self.messages = tables.messages
        self.data_tags = tables.data_tags
        self._accepts = tables.accepts
        self._layouts = tables.layouts
        self._unknown_type_layout = tables.unknown_type_layout
        #: message shapes known to need only their value checks (``groups.validate_message``)
        self._clean_shapes: dict[tuple, list] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: bool) -> DataDictionary:
        """Load a QuickFIX-format XML dictionary. Files are parsed once per process."""
        key = os.path.abspath(os.fspath(path))
        tables = _tables_cache.get(key)
        if tables is None:
            tables = _tables_cache[key] = _load_tables(key)
        return cls(tables, **options)

    @classmethod
    def standard(cls, **options: bool) -> DataDictionary:
        """The exchange's dictionary, ``spec/FIX44-exchange.xml``."""
        return cls.load(spec_path(), **options)

    def with_options(self, **options: bool) -> DataDictionary:
        """A dictionary with other validation options, sharing this one's tables."""
        current = {
            "validate_fields_out_of_order": self.validate_fields_out_of_order,
            "validate_fields_have_values": self.validate_fields_have_values,
            "validate_user_defined_fields": self.validate_user_defined_fields,
            "allow_unknown_msg_fields": self.allow_unknown_msg_fields,
        }
        current.update(options)
        return DataDictionary(self._tables, **current)

    # -- lookups --

    def has_msg_type(self, msg_type: str | bytes) -> bool:
        """True if the dictionary defines this message type."""
        return _as_bytes(msg_type) in self.messages

    def is_valid_msg_type(self, msg_type: str | bytes) -> bool:
        """True if MsgType (35) lists the value: a valid FIX MsgType, defined here or not.

        A session answers a valid but undefined type with BusinessMessageReject (380=3) and an
        invalid one with Reject (373=11); with no MsgType enum, defined types are the valid ones.
        """
        key = _as_bytes(msg_type)
        msg_type_field = self.fields.get(35)
        if msg_type_field is None or msg_type_field.values is None:
            return key in self.messages
        return key in msg_type_field.values or key in self.messages

    def is_admin(self, msg_type: str | bytes) -> bool:
        """True for session-level (msgcat="admin") message types."""
        message = self.messages.get(_as_bytes(msg_type))
        return message is not None and message.category == "admin"

    def message_name(self, msg_type: str | bytes) -> str | None:
        message = self.messages.get(_as_bytes(msg_type))
        return None if message is None else message.name

    def field_name(self, tag: int) -> str | None:
        field = self.fields.get(tag)
        return None if field is None else field.name

    def field_tag(self, name: str) -> int | None:
        return self._tables.tags_by_name.get(name)

    def field_type(self, tag: int) -> str | None:
        """The QuickFIX XML type name (``"PRICE"``, ``"UTCTIMESTAMP"``, ...)."""
        field = self.fields.get(tag)
        return None if field is None else field.type

    def enum_values(self, tag: int) -> dict[str, str] | None:
        """Enum value -> description for a field with enumerated values, else None."""
        field = self.fields.get(tag)
        return None if field is None or not field.value_names else dict(field.value_names)

    def is_header_field(self, tag: int) -> bool:
        return tag in self.header.tags

    def is_trailer_field(self, tag: int) -> bool:
        return tag in self.trailer.tags

    def is_message_field(self, msg_type: str | bytes, tag: int) -> bool:
        """True if the tag may appear directly in the body of this message type."""
        message = self.messages.get(_as_bytes(msg_type))
        return message is not None and tag in message.body.tags

    def is_required_field(self, msg_type: str | bytes, tag: int) -> bool:
        """True if the tag is required in the body of this message type (groups aside)."""
        message = self.messages.get(_as_bytes(msg_type))
        return message is not None and tag in message.body.required

    def group(
        self, msg_type: str | bytes, count_tag: int, parents: Iterable[int] = ()
    ) -> GroupDef | None:
        """The definition of a group in a message body (``parents``: enclosing count tags)."""
        message = self.messages.get(_as_bytes(msg_type))
        if message is None:
            return None
        scope = message.body
        for parent in parents:
            outer = scope.groups.get(parent)
            if outer is None:
                return None
            scope = outer.scope
        return scope.groups.get(count_tag)

    # -- validation and group reading (fixserver.groups) --

    def validate(self, msg: FixMessage) -> None:
        """Raise ValidationError if the dictionary forbids the message; see the module doc."""
        validate_message(self, msg)

    def group_entries(
        self,
        msg: FixMessage,
        count_tag: int,
        entry: FieldList | None = None,
        parents: Sequence[int] = (),
    ) -> list[list[tuple[int, bytes]]]:
        """The entries of a repeating group, each a list of its fields in wire order.

        Top-level groups: ``dd.group_entries(msg, 453)``. A group nested in an entry of another:
        ``dd.group_entries(msg, 802, entry=party, parents=(453,))``. Nested groups' fields stay
        inline in an entry. Returns [] when the message has no such group.
        """
        return read_group_entries(self, msg, count_tag, entry, parents)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value
