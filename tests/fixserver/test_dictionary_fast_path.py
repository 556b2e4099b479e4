"""A dictionary that remembers clean message shapes rejects exactly what a fresh one does."""

from __future__ import annotations

import pytest

from fixserver import codec
from fixserver.codec import FieldValue
from fixserver.dictionary import DataDictionary, ValidationError, spec_path

HEADER: list[tuple[int, FieldValue]] = [
    (49, "CLIENT1"), (56, "EXCH"), (34, 2), (52, "20240301-12:00:00.123")]
BODY: list[tuple[int, FieldValue]] = [
    (11, "ord-1"), (1, "ACC1"), (55, "BTC-PERP"), (54, 1), (60, "20240301-12:00:00.123"),
    (38, "0.5"), (40, 2), (44, "65000.5"), (59, 1)]

#: same tags, one bad value each: empty, wrong type, not an enum value, bad timestamp
BAD_VALUES = [(38, "abc"), (54, "Z"), (40, "x"), (60, "2024-03-01"), (44, "1e5"), (34, "x"),
              (52, "20240301"), (11, "")]


def build(body: list[tuple[int, FieldValue]], header=HEADER, begin: bytes = b"FIX.4.4"):
    """A parsed NewOrderSingle with these header and body fields."""
    return codec.parse(codec.encode([(35, "D"), *header, *body], begin))


def outcome(dd: DataDictionary, msg: codec.FixMessage) -> tuple | None:
    """(reason, ref tag, text) of the rejection, or None if valid."""
    try:
        dd.validate(msg)
    except ValidationError as exc:
        return (type(exc), int(exc.reason), exc.ref_tag, str(exc))
    return None


def test_clean_shape_is_remembered_and_still_valid() -> None:
    """A valid order validates twice; the second time through the remembered shape."""
    dd = DataDictionary.load(spec_path())
    assert outcome(dd, build(BODY)) is None
    assert len(dd._clean_shapes) == 1
    assert outcome(dd, build([(11, "ord-2"), *BODY[1:]])) is None


@pytest.mark.parametrize("tag,value", BAD_VALUES)
def test_bad_value_in_a_remembered_shape_is_rejected_as_before(tag: int, value: str) -> None:
    """A bad value in a shape already seen valid gets the same Reject as from a fresh dictionary."""
    header = [(t, value if t == tag else v) for t, v in HEADER]
    body = [(t, value if t == tag else v) for t, v in BODY]
    bad = build(body, header)
    fresh = outcome(DataDictionary.load(spec_path()), bad)
    assert fresh is not None
    warmed = DataDictionary.load(spec_path())
    assert outcome(warmed, build(BODY)) is None
    assert outcome(warmed, bad) == fresh


def test_wrong_begin_string_in_a_remembered_shape_is_rejected() -> None:
    """The BeginString is checked on the fast path too."""
    warmed = DataDictionary.load(spec_path())
    assert outcome(warmed, build(BODY)) is None
    bad = build(BODY, begin=b"FIX.4.2")
    assert outcome(warmed, bad) == outcome(DataDictionary.load(spec_path()), bad) is not None


def test_options_are_part_of_the_shape() -> None:
    """A misplaced header field accepted with the order check off is rejected with it on."""
    misplaced = build([*BODY[:3], (50, "DESK"), *BODY[3:]])
    dd = DataDictionary.load(spec_path())
    lenient = dd.with_options(validate_fields_out_of_order=False)
    assert outcome(lenient, misplaced) is None
    lenient.validate_fields_out_of_order = True
    assert outcome(lenient, misplaced) == outcome(dd, misplaced) is not None
