"""rewrite_for_resend's fast path (header rebuilt from the split fields, body copied) gives
exactly what rewriting through the parser gives, for every header and body shape."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver.admin_messages import _rewrite_parsed, rewrite_for_resend
from fixserver.codec import encode, parse

NOW = b"20240102-12:00:05.000"
THEN = b"20240102-11:00:00.000"


def both(raw: bytes) -> bytes:
    fast = rewrite_for_resend(raw, 0, NOW)
    assert fast == _rewrite_parsed(raw, NOW)
    return fast


def test_execution_report_gets_possdup_and_orig_sending_time():
    """Header 35, 34, 43=Y, 49, 52=now, 56, 122=then; the body unchanged."""
    raw = encode([(35, b"8"), (34, 7), (49, b"EXCH"), (52, THEN), (56, b"C1"), (37, b"O1"),
                  (11, b"CL1"), (150, b"0")])
    out = parse(both(raw))
    assert [t for t, _ in out.fields] == [8, 9, 35, 34, 43, 49, 52, 56, 122, 37, 11, 150, 10]
    assert (out.get(52), out.get(122), out.get(43)) == (NOW, THEN, b"Y")


def test_routing_sub_ids_and_poss_resend_keep_their_places():
    """Other header fields (50, 57, 97, 115, 128, 369) are kept, header in tag order."""
    raw = encode([(35, b"j"), (34, 3), (49, b"EXCH"), (50, b"S"), (52, THEN), (56, b"C1"),
                  (57, b"T"), (97, b"Y"), (128, b"FIRM"), (369, 2), (45, 2), (58, b"x"),
                  (372, b"D"), (380, 3)])
    out = parse(both(raw))
    assert [t for t, _ in out.fields][:14] == [8, 9, 35, 34, 43, 49, 50, 52, 56, 57, 97, 122,
                                              128, 369]


def test_a_message_resent_before_is_rewritten_again():
    """An existing PossDupFlag and OrigSendingTime are replaced, not repeated."""
    raw = encode([(35, b"8"), (34, 7), (43, b"Y"), (49, b"EXCH"), (52, THEN), (56, b"C1"),
                  (122, b"20240101-00:00:00.000"), (37, b"O1")])
    out = parse(both(raw))
    assert [v for t, v in out.fields if t == 122] == [THEN]
    assert [v for t, v in out.fields if t == 43] == [b"Y"]


def test_data_fields_with_soh_are_copied_intact():
    """A body data field holding SOH (RawData) survives; a header one (XmlData) is parsed."""
    body = encode([(35, b"8"), (34, 7), (49, b"EXCH"), (52, THEN), (56, b"C1"), (95, 5),
                   (96, b"a\x01b=c"), (58, b"t")])
    assert parse(both(body)).get(96) == b"a\x01b=c"
    header = encode([(35, b"8"), (34, 7), (49, b"EXCH"), (52, THEN), (56, b"C1"), (212, 3),
                     (213, b"<\x01>"), (58, b"t")])
    assert parse(both(header)).get(213) == b"<\x01>"


_value = st.binary(min_size=1, max_size=8).filter(lambda v: b"\x01" not in v and b"=" not in v)
_header_tags = st.sets(st.sampled_from([43, 50, 57, 97, 115, 116, 122, 128, 129, 142, 143,
                                        144, 145, 347, 369]), max_size=5)
_body = st.lists(st.tuples(st.sampled_from([1, 6, 11, 14, 17, 37, 38, 39, 44, 54, 55, 58,
                                            150, 151, 5000]), _value), max_size=12)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(header_tags=_header_tags, values=st.lists(_value, min_size=5, max_size=5), body=_body)
def test_fast_path_equals_parser_path(header_tags, values, body):
    """Random extra header fields and bodies: byte for byte the parser's result."""
    extra = sorted((tag, values[i % 5]) for i, tag in enumerate(header_tags))
    header = sorted([(34, 9), (49, b"EXCH"), (52, THEN), (56, b"C1"), *extra])
    both(encode([(35, b"8"), *header, *body]))
