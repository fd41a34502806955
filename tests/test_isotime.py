"""hpcexec.isotime reads the ISO 8601 forms of Python 3.11's ``datetime.fromisoformat`` on
every supported Python (3.10's reads only what ``isoformat`` writes), and ``begin`` and
``deadline`` accept them all."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hpcexec.errors import ResourceError
from hpcexec.isotime import parse_iso_datetime
from hpcexec.resources import Resources

UTC = timezone.utc
PLUS2 = timezone(timedelta(hours=2))

# Forms 3.11's fromisoformat reads and 3.10's refuses, with the instant each names.
FORMS_NEW_IN_311 = [
    ("2030-01-31T18:00:00.2Z", datetime(2030, 1, 31, 18, 0, 0, 200000, UTC)),
    ("2030-01-31T18:00:00+0200", datetime(2030, 1, 31, 18, tzinfo=PLUS2)),
    ("2030-01-31T18:00+02", datetime(2030, 1, 31, 18, tzinfo=PLUS2)),
    ("20300131T1800", datetime(2030, 1, 31, 18, 0)),
    ("20300131T180030", datetime(2030, 1, 31, 18, 0, 30)),
    ("20300131", datetime(2030, 1, 31)),
    ("2030-01-31T18:00:00,5", datetime(2030, 1, 31, 18, 0, 0, 500000)),
    ("2030-01-31T18:00:00.1234567", datetime(2030, 1, 31, 18, 0, 0, 123456)),
    ("2030-W05-4T18:00", datetime(2030, 1, 31, 18, 0)),  # ISO week 5 of 2030, Thursday
    ("2030W054T18:00", datetime(2030, 1, 31, 18, 0)),
    ("2030-W05", datetime(2030, 1, 28)),  # the week's Monday
    ("2030-W05-1800", datetime(2030, 1, 28, 18, 0)),  # week, '-' as separator, then HHMM
    ("2030-01-31x18:00", datetime(2030, 1, 31, 18, 0)),  # any one separator but a digit
    (
        "2030-01-31T18:00:00-05:30:15.5",
        datetime(2030, 1, 31, 18, tzinfo=timezone(-timedelta(hours=5, minutes=30, seconds=15.5))),
    ),
    ("2030-01-31T18:00-00", datetime(2030, 1, 31, 18, 0, tzinfo=UTC)),
]

# Forms every Python reads.
FORMS_OF_EVERY_PYTHON = [
    ("2030-01-31", datetime(2030, 1, 31)),
    ("2030-01-31T18", datetime(2030, 1, 31, 18)),
    ("2030-01-31T18:00Z", datetime(2030, 1, 31, 18, 0, tzinfo=UTC)),  # hpcexec read Z itself
    ("2030-01-31T18:00", datetime(2030, 1, 31, 18, 0)),
    ("2030-01-31 18:00:05", datetime(2030, 1, 31, 18, 0, 5)),
    ("2030-01-31T18:00:00.250", datetime(2030, 1, 31, 18, 0, 0, 250000)),
    ("2030-01-31T18:00+02:00", datetime(2030, 1, 31, 18, tzinfo=PLUS2)),
]

REFUSED = [
    "2030-01-31T",  # a separator and no time
    "2030-1-31",
    "2030-01-32",  # no such day
    "2030-13-01",
    "2029-W53-1",  # 2029 has 52 ISO weeks
    "2030-01-31T18.5",  # fractional hours: 3.11 reads 18:00:00.5, not 18:30
    "2030-01-31T18:00.5",  # fractional minutes: likewise
    "2030-01-31T18:0000",  # mixed extended and basic time
    "2030-01-31T24:00",
    "2030-01-31T18:00+24:00",
    "2030-01-31T18:00z",
    "2030-01-31T18:00+2",
    "203001311800",  # a digit cannot be the separator
    "tomorrow",
    "",
]


@pytest.mark.parametrize("text, when", FORMS_NEW_IN_311 + FORMS_OF_EVERY_PYTHON)
def test_forms_are_read(text, when):
    got = parse_iso_datetime(text)
    assert got == when and got.utcoffset() == when.utcoffset()


@pytest.mark.parametrize("text", REFUSED)
def test_other_text_is_refused(text):
    with pytest.raises(ValueError):
        parse_iso_datetime(text)


@pytest.mark.parametrize("text, when", FORMS_NEW_IN_311 + FORMS_OF_EVERY_PYTHON)
def test_begin_and_deadline_read_every_form_on_every_python(text, when):
    """The 3.11 forms failed on Python 3.10, which hpcexec claims (requires-python >= 3.10)."""
    if when.tzinfo is None:
        when = when.astimezone()  # a naive time is this machine's local time
    instant = when.astimezone(UTC)
    down = instant.replace(microsecond=0)
    up = down + timedelta(seconds=1 if instant.microsecond else 0)
    assert Resources.create(deadline=text).deadline == down.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert Resources.create(begin=text).begin == up.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_refused_begin_says_which_forms_are_read():
    with pytest.raises(ResourceError, match="ISO 8601 time such as"):
        Resources.create(begin="2030-01-31T18.5")


# Texts built from the documented pieces, to check against the standard library's reader.
_DATES = st.sampled_from(
    [
        "2030-01-31",
        "20300131",
        "2030-W05",
        "2030W05",
        "2030-W05-4",
        "2030W054",
        "2026-W53-7",
        "2028-02-29",
    ]
)
_SEPARATORS = st.sampled_from(["T", " ", "t", "_", "-", "é"])
_DIGITS2 = st.integers(0, 23).map("{:02d}".format)
_MS = st.integers(0, 59).map("{:02d}".format)
_FRACTIONS = st.from_regex(r"\A[.,][0-9]{1,9}\Z")


@st.composite
def _clock(draw, extended):
    parts = [draw(_DIGITS2)]
    for _ in range(draw(st.integers(0, 2))):
        parts.append(draw(_MS))
    text = (":" if extended else "").join(parts)
    if len(parts) == 3 and draw(st.booleans()):
        text += draw(_FRACTIONS)
    return text


@st.composite
def _texts(draw):
    text = draw(_DATES)
    if draw(st.booleans()):
        text += draw(_SEPARATORS) + draw(_clock(draw(st.booleans())))
        zone = draw(st.sampled_from(["", "Z", "+", "-"]))
        if zone in "+-" and zone:
            zone += draw(_clock(draw(st.booleans())))
        text += zone
    return text


# CPython's C reader (3.11-3.13) reads an offset of 0 h 0 min 0 s with a fraction of a second
# as UTC, dropping the fraction; its pure-Python reader (``_pydatetime``, 3.12 on) keeps it, as
# hpcexec does: the text names that offset, and ``timezone`` accepts it.
_ZERO_OFFSET_WITH_FRACTION = re.compile(r"[+-]00(?::?00(?::?00))[.,](?P<frac>\d+)\Z")


def _standard_reading(text: str) -> datetime:
    """``datetime.fromisoformat(text)``, less the C reader's quirk above."""
    expected = datetime.fromisoformat(text)
    quirk = _ZERO_OFFSET_WITH_FRACTION.search(text)
    if quirk and int(quirk["frac"][:6]):
        micro = timedelta(microseconds=int(quirk["frac"][:6].ljust(6, "0")))
        zone = timezone(-micro if text[quirk.start()] == "-" else micro)
        expected = expected.replace(tzinfo=zone)
    return expected


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with 3.11's fromisoformat")
@settings(deadline=None)  # a loaded machine must not fail it
@given(_texts())
@example("2030-01-31T00+000000.1")  # the C reader's quirk: found by Hypothesis
@example("2030-01-31T00-00:00:00.000001")
@example("2030-01-31T00+00:00:00.0000001")  # past the sixth digit: UTC after all
def test_agrees_with_the_standard_library_from_311_on(text):
    try:
        expected = _standard_reading(text)
    except ValueError:  # e.g. an offset of 24 hours or more
        with pytest.raises(ValueError):
            parse_iso_datetime(text)
        return
    got = parse_iso_datetime(text)
    assert got == expected and got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["2030-01-31T00+000000.1", "2030-01-31T00-00:00:00.5"])
def test_a_zero_offset_with_a_fraction_is_read_as_the_pure_python_reader_reads_it(text):
    pydatetime = pytest.importorskip("_pydatetime")  # 3.12 on
    expected = pydatetime.datetime.fromisoformat(text).utcoffset()
    got = parse_iso_datetime(text).utcoffset()
    assert got  # not UTC
    assert (got.days, got.seconds, got.microseconds) == (
        expected.days,
        expected.seconds,
        expected.microseconds,
    )
