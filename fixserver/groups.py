"""Message structure: scopes, repeating groups, and the validating walk over ``msg.fields``.

Theory of operation
-------------------
A ``Scope`` is what may appear at one level of a message: the header, the trailer, a message
body, or one entry of a repeating group. A group is announced by its NumInGroup count field;
its entries follow immediately, each starting with the group's delimiter (its first field),
and the group ends at the first field that its entry scope does not contain. Groups nest.

``validate_message`` walks the fields once in wire order, classifying each top-level field as
header, trailer or body, descending into groups as their count fields appear, and checking
every field as it passes. Problems are not raised where they are found: the first of each kind
is kept in a slot and, at the end, the slot that QuickFIX's ``DataDictionary::validate`` would
have reported first is raised (order in ``fixserver.dictionary``'s docstring). A valid message
allocates only the per-level ``seen`` sets.

``read_group_entries`` reads a group the same way, without checks, for the application layer.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from fixserver.codec import FixMessage
    from fixserver.dictionary import DataDictionary

#: Tags from this number up are user-defined (FIX 4.4 Volume 1: 5000-9999 user, 10000+ internal).
USER_DEFINED_TAG_MIN = 5000

FieldList = Sequence[tuple[int, bytes]]


class RejectReason(enum.IntEnum):
    """SessionRejectReason (373) values, FIX 4.4."""

    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_THIS_MESSAGE_TYPE = 2
    UNDEFINED_TAG = 3
    TAG_SPECIFIED_WITHOUT_A_VALUE = 4
    VALUE_IS_INCORRECT = 5
    INCORRECT_DATA_FORMAT_FOR_VALUE = 6
    DECRYPTION_PROBLEM = 7
    SIGNATURE_PROBLEM = 8
    COMPID_PROBLEM = 9
    SENDING_TIME_ACCURACY_PROBLEM = 10
    INVALID_MSG_TYPE = 11
    XML_VALIDATION_ERROR = 12
    TAG_APPEARS_MORE_THAN_ONCE = 13
    TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER = 14
    REPEATING_GROUP_FIELDS_OUT_OF_ORDER = 15
    INCORRECT_NUM_IN_GROUP_COUNT_FOR_REPEATING_GROUP = 16
    NON_DATA_VALUE_INCLUDES_FIELD_DELIMITER = 17
    OTHER = 99


class ValidationError(Exception):
    """A message the dictionary forbids; answered with a session-level Reject (35=3)."""

    def __init__(self, reason: int, ref_tag: int | None, text: str) -> None:
        super().__init__(reason, ref_tag, text)
        self.reason = RejectReason(reason)
        self.ref_tag = ref_tag
        self.text = text

    def __str__(self) -> str:
        ref = "" if self.ref_tag is None else f" (tag {self.ref_tag})"
        return f"{self.reason.name}{ref}: {self.text}"


class UnsupportedBeginString(ValidationError):
    """BeginString (8) is not the dictionary's version (reason 5, ref tag 8). The FIX session
    protocol answers this with Logout and disconnect, not a Reject (QuickFIX's
    UnsupportedVersion), so it has its own class."""


class Scope:
    """The fields allowed at one level: a header, trailer, message body or group entry."""

    __slots__ = ("groups", "required", "tags")

    def __init__(self) -> None:
        #: every tag that may appear directly at this level (group count tags included)
        self.tags: set[int] = set()
        #: tags this level requires, in definition order
        self.required: list[int] = []
        #: count tag -> group starting at this level
        self.groups: dict[int, GroupDef] = {}

    def add(self, tag: int, required: bool) -> None:
        self.tags.add(tag)
        if required and tag not in self.required:
            self.required.append(tag)


class GroupDef:
    """A repeating group: its NumInGroup count tag, delimiter (first field) and entry scope."""

    __slots__ = ("count_tag", "delimiter", "name", "scope")

    def __init__(self, count_tag: int, name: str, delimiter: int, scope: Scope) -> None:
        self.count_tag = count_tag
        self.name = name
        self.delimiter = delimiter
        self.scope = scope


# Error slots, in the order they are reported when a message breaks several rules.
_STRUCTURE = 0  # header/body/trailer order (14), group delimiter not first (15)
_GROUP_REQUIRED = 1  # a required field missing from a group entry (1)
_HEADER = 2  # per-field problems, by section
_TRAILER = 3
_BODY = 4

_SECTION_NAMES = ("header", "body", "trailer")
_IN_HEADER, _IN_BODY, _IN_TRAILER = 0, 1, 2

_FIRST_TAGS = ((8, "BeginString"), (9, "BodyLength"), (35, "MsgType"))


class _Walk:
    """The state of one validation: the dictionary's options and the error slots."""

    __slots__ = ("dd", "fields", "have_values", "slots")

    def __init__(self, dd: DataDictionary, fields: FieldList) -> None:
        self.dd = dd
        self.fields = fields
        self.have_values = dd.validate_fields_have_values
        self.slots: list[ValidationError | None] = [None, None, None, None, None]

    def record(self, slot: int, reason: RejectReason, tag: int | None, text: str) -> None:
        if self.slots[slot] is None:
            self.slots[slot] = ValidationError(reason, tag, text)

    def check_value(self, slot: int, tag: int, value: bytes) -> None:
        """Empty value (4), format (6) and enum value (5) of one field."""
        if not value:
            if self.have_values:
                self.record(
                    slot,
                    RejectReason.TAG_SPECIFIED_WITHOUT_A_VALUE,
                    tag,
                    "Tag specified without a value",
                )
            return
        field = self.dd.fields.get(tag)
        if field is None:
            return
        if field.max_len and len(value) > field.max_len:
            self.record(
                slot,
                RejectReason.VALUE_IS_INCORRECT,
                tag,
                f"Value is incorrect (out of range) for this tag: {field.name} longer than "
                f"{field.max_len} characters",
            )
            return
        check = field.check
        if check is not None and not check(value):
            self.record(
                slot,
                RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE,
                tag,
                f"Incorrect data format for value: {field.name} ({field.type})",
            )
            return
        values = field.values
        if values is not None:
            if field.multiple:
                ok = all(item in values for item in value.split(b" "))
            else:
                ok = value in values
            if not ok:
                self.record(
                    slot,
                    RejectReason.VALUE_IS_INCORRECT,
                    tag,
                    f"Value is incorrect (out of range) for this tag: {field.name}",
                )

    def stray_field(
        self, tag: int, value: bytes, section: int, seen: set[int], check_membership: bool
    ) -> None:
        """A top-level field outside the header, the trailer and the message type's body."""
        dd = self.dd
        if section == _IN_TRAILER and dd.validate_fields_out_of_order:
            self.record(
                _STRUCTURE,
                RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER,
                tag,
                "Body field after the trailer",
            )
        if tag in seen:
            self.record(
                _BODY, RejectReason.TAG_APPEARS_MORE_THAN_ONCE, tag, "Tag appears more than once"
            )
        else:
            seen.add(tag)
        self.check_value(_BODY, tag, value)
        if not check_membership:
            return  # an unknown MsgType is reported instead
        if tag < USER_DEFINED_TAG_MIN:
            if dd.allow_unknown_msg_fields:
                return
        elif not dd.validate_user_defined_fields:
            return
        # After the value checks: QuickFIX checks a field's value before its tag.
        if tag not in dd.fields:
            self.record(_BODY, RejectReason.INVALID_TAG_NUMBER, tag, "Invalid tag number")
        else:
            self.record(
                _BODY,
                RejectReason.TAG_NOT_DEFINED_FOR_THIS_MESSAGE_TYPE,
                tag,
                "Tag not defined for this message type",
            )

    def walk_group(self, index: int, group: GroupDef, slot: int) -> int:
        """Check a group whose count field is at ``index``; return the index after it."""
        fields = self.fields
        count_value = fields[index][1]
        scope = group.scope
        tags = scope.tags
        subgroups = scope.groups
        delimiter = group.delimiter
        accept_rules = self.dd._accepts
        entries = 0
        seen: set[int] | None = None
        end = len(fields)
        j = index + 1
        while j < end:
            tag, value = fields[j]
            if tag not in tags:
                break
            if tag == delimiter:
                if seen is not None:
                    self.check_entry(scope, seen, group)
                entries += 1
                seen = {tag}
            elif seen is None:
                self.record(
                    _STRUCTURE,
                    RejectReason.REPEATING_GROUP_FIELDS_OUT_OF_ORDER,
                    tag,
                    f"Repeating group {group.name} ({group.count_tag}) entry must "
                    f"start with its delimiter field {delimiter}",
                )
                entries += 1
                seen = {tag}
            elif tag in seen:
                self.record(
                    slot,
                    RejectReason.TAG_APPEARS_MORE_THAN_ONCE,
                    tag,
                    f"Tag appears more than once in an entry of group {group.name}",
                )
            else:
                seen.add(tag)
            accepts = accept_rules.get(tag)
            if not value or (accepts is not None and not accepts(value)):
                self.check_value(slot, tag, value)
            subgroup = subgroups.get(tag)
            if subgroup is not None:
                j = self.walk_group(j, subgroup, slot)
            else:
                j += 1
        if seen is not None:
            self.check_entry(scope, seen, group)
        if count_value.isdigit() and int(count_value) != entries:
            self.record(
                slot,
                RejectReason.INCORRECT_NUM_IN_GROUP_COUNT_FOR_REPEATING_GROUP,
                group.count_tag,
                f"Incorrect NumInGroup count for repeating group {group.name}: "
                f"{count_value.decode('latin-1')} declared, {entries} present",
            )
        return j

    def check_entry(self, scope: Scope, seen: set[int], group: GroupDef) -> None:
        for tag in scope.required:
            if tag not in seen:
                self.record(
                    _GROUP_REQUIRED,
                    RejectReason.REQUIRED_TAG_MISSING,
                    tag,
                    f"Required tag missing in an entry of group {group.name}",
                )
                return


class Layout:
    """One message type's top-level fields precomputed for the validation loop.

    ``fields`` maps every header, trailer and body tag to ``(section, accepts, group)``:
    where it belongs, its fast value check (``FieldDef.accepts``) and the group it counts.
    """

    __slots__ = ("fields", "required", "required_order")

    def __init__(
        self,
        header: Scope,
        trailer: Scope,
        body: Scope | None,
        accepts: dict[int, Callable[[bytes], object]],
    ) -> None:
        self.fields: dict[int, tuple[int, Callable[[bytes], object] | None, GroupDef | None]]
        self.fields = {}
        scopes = [(_IN_HEADER, header), (_IN_TRAILER, trailer)]
        if body is not None:
            scopes.insert(1, (_IN_BODY, body))
        for section, scope in scopes:
            for tag in scope.tags:
                # A tag in both the header and a body belongs to the header, as in QuickFIX.
                self.fields.setdefault(tag, (section, accepts.get(tag), scope.groups.get(tag)))
        #: required top-level tags in report order: the header's, the trailer's, the body's
        self.required_order = (
            tuple(header.required)
            + tuple(trailer.required)
            + (tuple(body.required) if body is not None else ())
        )
        self.required = frozenset(self.required_order)


_SLOT_OF_SECTION = (_HEADER, _BODY, _TRAILER)


#: at most this many clean shapes are remembered per dictionary (then the memory restarts)
MAX_CLEAN_SHAPES = 1024

_tag_of = itemgetter(0)


def validate_message(dd: DataDictionary, msg: FixMessage) -> None:
    """Raise ValidationError for the first problem, in QuickFIX's order (see the module doc).

    Fast path: the walk's every decision except the value checks depends only on the options,
    the MsgType and the sequence of tags. A shape whose walk found nothing but values to check
    (no group, stray, misplaced, repeated or missing field) is remembered with each field's
    value check; a message of a remembered shape whose BeginString and values all pass is
    valid. Anything else, including any failing value, takes the full walk, which reports
    exactly what it always did.
    """
    fields = msg.fields
    shape: tuple | None = None
    if len(fields) > 2:
        shape = (dd.validate_fields_out_of_order, fields[2][1], *map(_tag_of, fields))
        checks = dd._clean_shapes.get(shape)
        if checks is not None and fields[0][1] == dd._begin_string_bytes:
            for (_, value), accepts in zip(fields, checks):
                if not value or (accepts is not None and not accepts(value)):
                    break
            else:
                return
    _walk_message(dd, fields, shape)


def _walk_message(dd: DataDictionary, fields: FieldList, shape: tuple | None) -> None:
    end = len(fields)
    if end < 3 or fields[0][0] != 8 or fields[1][0] != 9 or fields[2][0] != 35:
        _raise_first_tags_error(fields)
    if fields[0][1] != dd._begin_string_bytes:
        raise UnsupportedBeginString(
            RejectReason.VALUE_IS_INCORRECT, 8, f"BeginString must be {dd.begin_string}"
        )
    msg_type = fields[2][1]
    message = dd.messages.get(msg_type)
    layout = dd._layouts.get(msg_type) or dd._unknown_type_layout
    layout_get = layout.fields.get
    check_order = dd.validate_fields_out_of_order
    walk: _Walk | None = None
    seen: set[int] = set()
    section = _IN_HEADER
    i = 0
    while i < end:
        tag, value = fields[i]
        info = layout_get(tag)
        if info is None:
            # Not in the header, the trailer or this message's body: QuickFIX files it in the
            # body; it is misplaced or unknown unless the options say otherwise.
            if walk is None:
                walk = _Walk(dd, fields)
            walk.stray_field(tag, value, section, seen, message is not None)
            section = _IN_BODY
            i += 1
            continue
        field_section, accepts, group = info
        if field_section != section:
            if field_section > section:
                section = field_section
            else:
                if check_order:
                    if walk is None:
                        walk = _Walk(dd, fields)
                    walk.record(
                        _STRUCTURE,
                        RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER,
                        tag,
                        f"{_SECTION_NAMES[field_section].capitalize()} field after the "
                        f"{_SECTION_NAMES[section]}",
                    )
                if field_section == _IN_BODY:
                    section = _IN_BODY
        if tag in seen:
            if walk is None:
                walk = _Walk(dd, fields)
            walk.record(
                _SLOT_OF_SECTION[field_section],
                RejectReason.TAG_APPEARS_MORE_THAN_ONCE,
                tag,
                "Tag appears more than once",
            )
        else:
            seen.add(tag)
        if not value or (accepts is not None and not accepts(value)):
            if walk is None:
                walk = _Walk(dd, fields)
            walk.check_value(_SLOT_OF_SECTION[field_section], tag, value)
        if group is not None:
            if walk is None:
                walk = _Walk(dd, fields)
            i = walk.walk_group(i, group, _SLOT_OF_SECTION[field_section])
            continue
        i += 1

    if check_order and fields[-1][0] != 10 and 10 in seen:
        if walk is None:
            walk = _Walk(dd, fields)
        walk.record(
            _STRUCTURE,
            RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER,
            10,
            "CheckSum (10) must be the last field",
        )
    slots = walk.slots if walk is not None else _NO_ERRORS
    structure_error = slots[_STRUCTURE]
    if structure_error is not None:
        raise structure_error
    if message is None:
        raise ValidationError(
            RejectReason.INVALID_MSG_TYPE, 35, f"Invalid MsgType: {msg_type.decode('latin-1')}"
        )
    if not layout.required <= seen:
        for tag in layout.required_order:
            if tag not in seen:
                raise ValidationError(
                    RejectReason.REQUIRED_TAG_MISSING,
                    tag,
                    f"Required tag missing: {dd.field_name(tag)}",
                )
    for error in slots[_GROUP_REQUIRED:]:
        if error is not None:
            raise error
    if walk is None and shape is not None:
        clean = dd._clean_shapes
        if len(clean) >= MAX_CLEAN_SHAPES:
            clean.clear()
        clean[shape] = [layout_get(tag)[1] for tag, _ in fields]  # type: ignore[index]


_NO_ERRORS: list[ValidationError | None] = [None, None, None, None, None]


def _raise_first_tags_error(fields: FieldList) -> None:
    """8, 9 and 35 must be the first three fields (QuickFIX: "Header fields out of order")."""
    for position, (expected, name) in enumerate(_FIRST_TAGS):
        if position >= len(fields):
            raise ValidationError(
                RejectReason.REQUIRED_TAG_MISSING, expected, f"Required tag missing: {name}"
            )
        if fields[position][0] != expected:
            raise ValidationError(
                RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER,
                fields[position][0],
                f"{name} ({expected}) must be field {position + 1}",
            )


def group_end(fields: FieldList, index: int, group: GroupDef) -> int:
    """The index after the group whose count field is at ``index`` (no checks)."""
    tags = group.scope.tags
    subgroups = group.scope.groups
    end = len(fields)
    j = index + 1
    while j < end:
        tag = fields[j][0]
        if tag not in tags:
            break
        subgroup = subgroups.get(tag)
        j = group_end(fields, j, subgroup) if subgroup is not None else j + 1
    return j


def read_group_entries(
    dd: DataDictionary,
    msg: FixMessage,
    count_tag: int,
    entry: FieldList | None = None,
    parents: Sequence[int] = (),
) -> list[list[tuple[int, bytes]]]:
    """Entries of a group in ``msg`` (or in ``entry`` of the group path ``parents``)."""
    if entry is None:
        message = dd.messages.get(msg.msg_type)
        if message is None:
            return []
        fields: FieldList = msg.fields
        scope_groups = dict(dd.header.groups)
        scope_groups.update(message.body.groups)
    else:
        outer = dd.group(msg.msg_type, parents[-1], parents[:-1]) if parents else None
        if outer is None:
            return []
        fields = entry
        scope_groups = outer.scope.groups
    group = scope_groups.get(count_tag)
    if group is None:
        return []
    end = len(fields)
    i = 0
    # Find the count field at this level, skipping over other groups' entries.
    while i < end:
        tag = fields[i][0]
        if tag == count_tag:
            break
        other = scope_groups.get(tag)
        i = group_end(fields, i, other) if other is not None else i + 1
    else:
        return []
    entries: list[list[tuple[int, bytes]]] = []
    tags = group.scope.tags
    subgroups = group.scope.groups
    current: list[tuple[int, bytes]] | None = None
    j = i + 1
    while j < end:
        field = fields[j]
        tag = field[0]
        if tag not in tags:
            break
        if tag == group.delimiter or current is None:
            current = []
            entries.append(current)
        subgroup = subgroups.get(tag)
        if subgroup is not None:
            stop = group_end(fields, j, subgroup)
            current.extend(fields[j:stop])
            j = stop
        else:
            current.append(field)
            j += 1
    return entries
