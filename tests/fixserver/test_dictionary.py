"""The data dictionary loads QuickFIX XML and rejects bad messages with the right reason (373)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver import codec
from fixserver.codec import FieldValue
from fixserver.dictionary import (
    DataDictionary,
    DictionaryError,
    RejectReason,
    UnsupportedBeginString,
    ValidationError,
    quickfix_spec_path,
    spec_path,
)

HEADER: list[tuple[int, FieldValue]] = [
    (49, "CLIENT1"),
    (56, "EXCH"),
    (34, 2),
    (52, "20240301-12:00:00.123"),
]
ORDER_BODY: list[tuple[int, FieldValue]] = [
    (11, "ord-1"),
    (453, 2),
    (448, "trader-7"),
    (447, "D"),
    (452, 11),
    (448, "desk-2"),
    (447, "D"),
    (452, 3),
    (55, "BTC-PERP"),
    (54, 1),
    (60, "20240301-12:00:00.123456"),
    (38, "0.5"),
    (40, 2),
    (44, "65000.5"),
    (59, 1),
    (18, "6 E"),
]


def build(msg_type: str, body=(), header=HEADER, data_tags=codec.STANDARD_DATA_TAGS):
    """A parsed message: MsgType, the standard header fields, then the body."""
    raw = codec.encode([(35, msg_type), *header, *body])
    return codec.parse(raw, data_tags)


def order(*replace, drop=(), extra=()):
    """A NewOrderSingle with some fields replaced (tag, value), dropped or appended."""
    replaced = dict(replace)
    body = [(t, replaced.get(t, v)) for t, v in ORDER_BODY if t not in drop]
    return build("D", [*body, *extra])


def reject(dd: DataDictionary, msg) -> tuple[int, int | None]:
    with pytest.raises(ValidationError) as info:
        dd.validate(msg)
    return info.value.reason, info.value.ref_tag


@pytest.fixture(scope="module", params=["exchange", "standard"])
def dd(request) -> DataDictionary:
    """Both the exchange's dictionary and the standard FIX44.xml installed by quickfix."""
    if request.param == "exchange":
        return DataDictionary.standard()
    path = quickfix_spec_path("FIX44.xml")
    if not os.path.exists(path):
        pytest.skip(f"quickfix's FIX44.xml not installed at {path}")
    return DataDictionary.load(path)


def test_valid_order_with_groups_passes(dd):
    """A well-formed NewOrderSingle with a Parties group validates."""
    dd.validate(order())


def test_valid_admin_messages_pass(dd):
    """Heartbeat and a Logon with RawData (containing SOH) validate."""
    dd.validate(build("0"))
    raw_data = "sig\x01nature"
    dd.validate(build("A", [(98, 0), (108, 30), (95, len(raw_data)), (96, raw_data), (141, "Y")]))


def test_identifiers_and_text_are_length_capped(dd):
    """A ClOrdID longer than 64 characters (or a Text over 1024) is reason 5 with its tag, on
    the fast path too (a message shape already seen clean): nothing that long is ever kept."""
    dd.validate(order((11, "x" * 64)))  # the longest accepted, and the shape is now known
    assert reject(dd, order((11, "x" * 65))) == (RejectReason.VALUE_IS_INCORRECT, 11)
    assert reject(dd, order((11, "x" * 50_000))) == (RejectReason.VALUE_IS_INCORRECT, 11)
    dd.validate(order(extra=[(58, "t" * 1024)]))
    assert reject(dd, order(extra=[(58, "t" * 1025)])) == (RejectReason.VALUE_IS_INCORRECT, 58)


def test_required_body_field_missing(dd):
    """A missing required body field is reason 1 with its tag."""
    assert reject(dd, order(drop=(11,))) == (RejectReason.REQUIRED_TAG_MISSING, 11)


def test_required_header_field_missing(dd):
    """A missing required header field (SenderCompID) is reason 1."""
    msg = build("0", header=[(56, "EXCH"), (34, 2), (52, "20240301-12:00:00")])
    assert reject(dd, msg) == (RejectReason.REQUIRED_TAG_MISSING, 49)


TINY_DICTIONARY = """<fix type='FIX' major='4' minor='4'>
 <header>
  <field name='BeginString' required='Y'/><field name='BodyLength' required='Y'/>
  <field name='MsgType' required='Y'/>
 </header>
 <trailer><field name='CheckSum' required='Y'/></trailer>
 <messages>
  <message name='Quote' msgtype='S' msgcat='app'>
   <field name='QuoteID' required='Y'/>
   <component name='Legs' required='N'/>
  </message>
 </messages>
 <components>
  <component name='Legs'>
   <group name='NoLegs' required='N'>
    <field name='LegSymbol' required='Y'/>
    <field name='LegSide' required='Y'/>
    <field name='LegRatioQty' required='N'/>
   </group>
  </component>
 </components>
 <fields>
  <field number='8' name='BeginString' type='STRING'/>
  <field number='9' name='BodyLength' type='LENGTH'/>
  <field number='10' name='CheckSum' type='STRING'/>
  <field number='35' name='MsgType' type='STRING'/>
  <field number='117' name='QuoteID' type='STRING'/>
  <field number='555' name='NoLegs' type='NUMINGROUP'/>
  <field number='600' name='LegSymbol' type='STRING'/>
  <field number='624' name='LegSide' type='CHAR'/>
  <field number='623' name='LegRatioQty' type='FLOAT'/>
 </fields>
</fix>
"""


def test_required_field_missing_in_group_entry(tmp_path):
    """A field required in a group is required in every entry, even of an optional group."""
    path = tmp_path / "tiny.xml"
    path.write_text(TINY_DICTIONARY)
    tiny = DataDictionary.load(path)
    legs = [(555, 2), (600, "A"), (624, "1"), (600, "B"), (624, "2"), (623, "0.5")]
    tiny.validate(build("S", [(117, "q1"), *legs], header=[]))
    del legs[4]
    assert reject(tiny, build("S", [(117, "q1"), *legs], header=[])) == (
        RejectReason.REQUIRED_TAG_MISSING,
        624,
    )
    tiny.validate(build("S", [(117, "q1")], header=[]))


def test_tag_not_defined_for_message_type(dd):
    """A known field that the message type does not contain is reason 2."""
    assert reject(dd, build("0", [(44, "1")])) == (
        RejectReason.TAG_NOT_DEFINED_FOR_THIS_MESSAGE_TYPE,
        44,
    )


def test_undefined_tag_is_invalid_tag_number(dd):
    """A tag the dictionary does not define is reason 0."""
    assert reject(dd, order(extra=[(4999, "x")])) == (RejectReason.INVALID_TAG_NUMBER, 4999)


def test_user_defined_fields_option(dd):
    """Undefined tags >= 5000 are reason 0, or accepted with ValidateUserDefinedFields off."""
    msg = order(extra=[(9876, "x")])
    assert reject(dd, msg) == (RejectReason.INVALID_TAG_NUMBER, 9876)
    dd.with_options(validate_user_defined_fields=False).validate(msg)
    # below the user range the option does not apply
    lenient = dd.with_options(validate_user_defined_fields=False)
    assert reject(lenient, order(extra=[(4999, "x")]))[0] == RejectReason.INVALID_TAG_NUMBER


def test_allow_unknown_msg_fields_option(dd):
    """AllowUnknownMsgFields accepts unknown and misplaced tags below 5000, but not their format."""
    lenient = dd.with_options(allow_unknown_msg_fields=True)
    lenient.validate(order(extra=[(4999, "x")]))
    lenient.validate(build("0", [(44, "1")]))
    assert reject(lenient, build("0", [(44, "x")])) == (
        RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE,
        44,
    )
    assert reject(lenient, order(extra=[(9876, "x")]))[0] == RejectReason.INVALID_TAG_NUMBER


def test_enum_value_incorrect(dd):
    """A value outside a field's enumeration is reason 5."""
    assert reject(dd, order((54, "Z"))) == (RejectReason.VALUE_IS_INCORRECT, 54)


def test_multiple_value_string_elements_are_checked(dd):
    """Each space-separated element of a MULTIPLEVALUESTRING must be an enum value."""
    dd.validate(order((18, "6")))
    assert reject(dd, order((18, "6 ZZ"))) == (RejectReason.VALUE_IS_INCORRECT, 18)


@pytest.mark.parametrize(
    ("tag", "good", "bad"),
    [
        (38, "10", "1e5"),  # QTY
        (38, ".5", "1.2.3"),
        (44, "-1.25", "12,5"),  # PRICE
        (110, "3", "three"),  # QTY
        (54, "1", "12"),  # CHAR (format checked before the enum)
        (60, "20240301-23:59:60", "20240301-24:00:00"),  # UTCTIMESTAMP
        (60, "20240301-12:00:00.123456789", "20240301-12:00:00.12"),
        (60, "20240229-12:00:00", "2024-03-01 12:00:00"),
        (432, "20240331", "20241331"),  # LOCALMKTDATE
        (200, "202406w2", "2024"),  # MONTHYEAR
        (200, "20240628", "202413"),
        (126, "20240301-12:00:00.000", "20240301"),  # UTCTIMESTAMP (ExpireTime)
    ],
)
def test_incorrect_data_format(dd, tag, good, bad):
    """A value that is not of the field's type is reason 6; a well-formed one passes."""
    dd.validate(order((tag, good)) if tag in dict(ORDER_BODY) else order(extra=[(tag, good)]))
    msg = order((tag, bad)) if tag in dict(ORDER_BODY) else order(extra=[(tag, bad)])
    assert reject(dd, msg) == (RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE, tag)


def test_incorrect_data_format_of_other_types(dd):
    """INT, BOOLEAN, SEQNUM, NUMINGROUP, LENGTH, UTCTIMEONLY and UTCDATEONLY formats are checked."""
    logon = [(98, 0), (108, 30)]
    six = RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE
    assert reject(dd, build("A", [(98, 0), (108, "3O")])) == (six, 108)  # INT
    assert reject(dd, build("A", [*logon, (141, "y")])) == (six, 141)  # BOOLEAN
    assert reject(dd, build("A", [*logon, (789, "-1")])) == (six, 789)  # SEQNUM
    seq = [(49, "C"), (56, "X"), (34, "two"), (52, "20240301-12:00:00")]
    assert reject(dd, build("0", header=seq)) == (six, 34)
    assert reject(dd, order((453, "x"))) == (six, 453)  # NUMINGROUP
    no_length_framing: dict[int, int] = {}
    msg = build("A", [*logon, (95, "ab"), (96, "x")], data_tags=no_length_framing)
    assert reject(dd, msg) == (six, 95)  # LENGTH
    entries = [(268, 1), (269, 2), (270, "1"), (272, "20240301"), (273, "12:00:00.5")]
    assert reject(dd, build("W", [(55, "BTC-PERP"), *entries])) == (six, 273)  # UTCTIMEONLY
    entries[-1] = (273, "12:00:00.500")
    dd.validate(build("W", [(55, "BTC-PERP"), *entries]))
    entries[3] = (272, "2024-03-01")
    assert reject(dd, build("W", [(55, "BTC-PERP"), *entries])) == (six, 272)  # UTCDATEONLY


def test_tag_without_value(dd):
    """An empty value is reason 4, or accepted with ValidateFieldsHaveValues off."""
    msg = order(extra=[(58, "")])
    assert reject(dd, msg) == (RejectReason.TAG_SPECIFIED_WITHOUT_A_VALUE, 58)
    dd.with_options(validate_fields_have_values=False).validate(msg)
    empty_price = order((44, ""))
    assert reject(dd, empty_price) == (RejectReason.TAG_SPECIFIED_WITHOUT_A_VALUE, 44)
    dd.with_options(validate_fields_have_values=False).validate(empty_price)


def test_repeated_tag(dd):
    """A tag twice in the body, the header or one group entry is reason 13."""
    assert reject(dd, order(extra=[(11, "again")])) == (
        RejectReason.TAG_APPEARS_MORE_THAN_ONCE,
        11,
    )
    header = [*HEADER, (49, "CLIENT2")]
    assert reject(dd, build("0", header=header)) == (RejectReason.TAG_APPEARS_MORE_THAN_ONCE, 49)
    body = [(11, "o"), (453, 1), (448, "a"), (447, "D"), (447, "D"), (54, 1)]
    body += [(60, "20240301-12:00:00"), (40, 1)]
    assert reject(dd, build("D", body)) == (RejectReason.TAG_APPEARS_MORE_THAN_ONCE, 447)


def test_group_count_mismatch(dd):
    """A NumInGroup that does not match the entries present is reason 16, nested groups too."""
    assert reject(dd, order((453, 3))) == (
        RejectReason.INCORRECT_NUM_IN_GROUP_COUNT_FOR_REPEATING_GROUP,
        453,
    )
    assert reject(dd, order((453, 1)))[1] == 453
    nested = [(11, "o"), (453, 1), (448, "a"), (447, "D"), (452, 3), (802, 2)]
    nested += [(523, "sub"), (803, 1), (54, 1), (60, "20240301-12:00:00"), (40, 1)]
    assert reject(dd, build("D", nested)) == (
        RejectReason.INCORRECT_NUM_IN_GROUP_COUNT_FOR_REPEATING_GROUP,
        802,
    )
    nested[5] = (802, 1)
    dd.validate(build("D", nested))


def test_group_entry_must_start_with_delimiter(dd):
    """A group entry that does not start with the delimiter field is reason 15."""
    body = [(11, "o"), (453, 1), (447, "D"), (448, "a"), (54, 1)]
    body += [(60, "20240301-12:00:00"), (40, 1)]
    assert reject(dd, build("D", body)) == (RejectReason.REPEATING_GROUP_FIELDS_OUT_OF_ORDER, 447)


def test_begin_string_body_length_msg_type_come_first(dd):
    """8, 9, 35 must be the first three fields, in that order (reason 14)."""
    raw = codec.encode([(49, "CLIENT1"), (35, "0"), *HEADER[1:]])
    assert reject(dd, codec.parse(raw)) == (RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER, 49)


def test_header_field_after_body(dd):
    """A header field after a body field is reason 14, accepted with the order check off."""
    msg = build("A", [(98, 0), (108, 30), (57, "desk")])
    assert reject(dd, msg) == (RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER, 57)
    dd.with_options(validate_fields_out_of_order=False).validate(msg)


def test_body_field_after_trailer(dd):
    """A body field after a trailer field (Signature) is reason 14."""
    msg = build("1", [(93, 3), (89, "sig"), (112, "t1")])
    assert reject(dd, msg) == (RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER, 112)
    dd.validate(build("1", [(112, "t1"), (93, 3), (89, "sig")]))


def test_invalid_msg_type(dd):
    """A MsgType the dictionary does not define is reason 11."""
    assert reject(dd, build("ZZ")) == (RejectReason.INVALID_MSG_TYPE, 35)


def test_unsupported_begin_string(dd):
    """Another FIX version raises UnsupportedBeginString (the session logs out)."""
    msg = codec.parse(codec.encode([(35, "0"), *HEADER], begin_string=b"FIX.4.2"))
    with pytest.raises(UnsupportedBeginString) as info:
        dd.validate(msg)
    assert info.value.ref_tag == 8


def test_check_order_follows_quickfix(dd):
    """Of several problems the one reported follows QuickFIX: order, MsgType, required, fields."""
    bad_enum_and_missing = order((54, "Z"), drop=(11,))
    assert reject(dd, bad_enum_and_missing) == (RejectReason.REQUIRED_TAG_MISSING, 11)
    out_of_order_and_unknown_type = build("ZZ", [(1, "acct"), (57, "desk")])
    assert reject(dd, out_of_order_and_unknown_type)[0] == (
        RejectReason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER
    )
    header_before_body = build("0", [(58, "")], header=[*HEADER, (97, "maybe")])
    assert reject(dd, header_before_body) == (RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE, 97)
    first_body_problem_wins = order((54, "Z"), extra=[(4999, "x")])
    assert reject(dd, first_body_problem_wins) == (RejectReason.VALUE_IS_INCORRECT, 54)


def test_exchange_custom_fields_need_the_exchange_dictionary(dd):
    """SelfTradePreventionMode and CancelOnDisconnect pass only where the dictionary has them."""
    stp = order(extra=[(7928, "T")])
    logon = build("A", [(98, 0), (108, 30), (7929, "Y")])
    if dd.field_name(7928) is None:
        assert reject(dd, stp) == (RejectReason.INVALID_TAG_NUMBER, 7928)
        dd.with_options(validate_user_defined_fields=False).validate(logon)
    else:
        dd.validate(stp)
        dd.validate(logon)
        assert reject(dd, order(extra=[(7928, "X")])) == (RejectReason.VALUE_IS_INCORRECT, 7928)
        assert reject(dd, build("A", [(98, 0), (108, 30), (7929, "1")]))[0] == (
            RejectReason.INCORRECT_DATA_FORMAT_FOR_VALUE
        )


def test_group_entries_reads_top_level_and_nested_groups(dd):
    """group_entries returns each entry's fields; nested groups are read within an entry."""
    msg = order()
    parties = dd.group_entries(msg, 453)
    assert parties == [
        [(448, b"trader-7"), (447, b"D"), (452, b"11")],
        [(448, b"desk-2"), (447, b"D"), (452, b"3")],
    ]
    assert dd.group_entries(msg, 268) == []
    nested = [(11, "o"), (453, 2), (448, "a"), (447, "D"), (802, 2), (523, "s1"), (803, 1)]
    nested += [(523, "s2"), (448, "b"), (54, 1), (60, "20240301-12:00:00"), (40, 1)]
    msg = build("D", nested)
    first, second = dd.group_entries(msg, 453)
    assert first[:2] == [(448, b"a"), (447, b"D")] and second == [(448, b"b")]
    subs = dd.group_entries(msg, 802, entry=first, parents=(453,))
    assert subs == [[(523, b"s1"), (803, b"1")], [(523, b"s2")]]


def test_lookups(dd):
    """Field names, types, enums, message kinds and groups are exposed by tag and MsgType."""
    assert dd.field_name(44) == "Price" and dd.field_type(44) == "PRICE"
    assert dd.field_tag("ClOrdID") == 11 and dd.field_name(4999) is None
    assert dd.enum_values(54)["1"] == "BUY" and dd.enum_values(11) is None
    assert dd.is_admin("A") and dd.is_admin(b"0") and not dd.is_admin("D")
    assert dd.has_msg_type("AF") and not dd.has_msg_type("ZZ")
    assert dd.is_valid_msg_type("AE") and not dd.is_valid_msg_type("ZZ")
    assert dd.is_header_field(52) and dd.is_trailer_field(10) and not dd.is_header_field(11)
    assert dd.is_required_field("D", 11) and not dd.is_required_field("D", 38)
    assert dd.group("D", 453).delimiter == 448
    assert dd.group("D", 802, parents=(453,)).delimiter == 523
    assert dd.data_tags[95] == 96 and dd.begin_string == "FIX.4.4"


def test_exchange_dictionary_defines_only_its_messages():
    """The exchange dictionary defines exactly the session and application messages it supports."""
    dd = DataDictionary.standard()
    expected = "0 1 2 3 4 5 A D F G H q r AF 8 9 j V W X Y x y e f AN AO AP AL AM BB BA BG".split()
    assert sorted(dd.messages) == sorted(t.encode() for t in expected)
    assert reject(dd, build("E")) == (RejectReason.INVALID_MSG_TYPE, 35)
    assert dd.is_valid_msg_type("E") and not dd.has_msg_type("E")
    assert spec_path().endswith(os.path.join("spec", "FIX44-exchange.xml"))


def test_malformed_dictionary_files_are_refused(tmp_path):
    """Unreadable XML, missing sections and unknown field names raise DictionaryError."""
    bad = tmp_path / "bad.xml"
    bad.write_text("<fix major='4' minor='4'><fields>")
    with pytest.raises(DictionaryError):
        DataDictionary.load(bad)
    unknown = tmp_path / "unknown.xml"
    unknown.write_text(
        "<fix major='4' minor='4'><header><field name='Nope' required='Y'/></header>"
        "<trailer/><messages/><fields/></fix>"
    )
    with pytest.raises(DictionaryError, match="Nope"):
        DataDictionary.load(unknown)


FIELD_TAGS = st.sampled_from([11, 38, 44, 54, 55, 58, 60, 447, 448, 452, 453, 802, 4999, 7928])
FIELD_VALUES = st.sampled_from(["", "1", "-2.5", "Z", "20240301-12:00:00", "x y", "0"])


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(FIELD_TAGS, FIELD_VALUES), max_size=12))
def test_any_field_sequence_validates_or_raises_validation_error(fields):
    """Validation of arbitrary body fields either passes or raises ValidationError, nothing else."""
    dd = DataDictionary.standard()
    msg = build("D", fields)
    try:
        dd.validate(msg)
    except ValidationError as exc:
        assert exc.reason in RejectReason.__members__.values()
