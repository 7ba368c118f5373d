"""The threshold and duration grammar, table-driven. Nothing here is ever passed to eval."""

from __future__ import annotations

import math

import pytest

from execution.conditions import GrammarError, parse_condition, parse_duration

# (condition, observed value, expected holds())
HOLDS = [
    ("< 0.01", 0.005, True),
    ("< 0.01", 0.01, False),
    ("<0.01", 0.02, False),
    ("<= 0.01", 0.01, True),
    ("> 4500", 4500.5, True),
    (">4500", 4500, False),
    (">= 0.99", 0.99, True),
    (">= 0.99", 0.98, False),
    ("== 0", 0, True),
    ("== 0", 0.0, True),
    ("== 0", 1e-9, False),
    ("!= 0", 3, True),
    ("!= 0", 0, False),
    ("< 1e-3", 0.0005, True),
    ("> -5", -4, True),
    ("< +5", 4, True),
    ("< .5", 0.4, True),
    ("< 5.", 4.9, True),
    ("  <   3600  ", 12, True),
    ("== true", True, True),
    ("== true", False, False),
    ("== false", False, True),
    ("!= true", False, True),
    ("!= false", False, False),
    ("between 0.98 and 1.02", 1.0, True),
    ("between 0.98 and 1.02", 0.98, True),
    ("between 0.98 and 1.02", 1.02, True),
    ("between 0.98 and 1.02", 0.979, False),
    ("between 0.98 and 1.02", 1.03, False),
    ("between -1 and -1", -1, True),
    ("between 0 and 100", 50, True),
]

# A value of the wrong type is an error (None), never a pass or a fail.
TYPE_MISMATCH = [
    ("== true", 1),
    ("== true", 1.0),
    ("== false", 0),
    ("== true", "true"),
    ("== true", None),
    ("!= false", 0),
    ("< 0.01", True),
    ("< 0.01", False),
    ("== 0", False),
    ("> 1", "2"),
    ("> 1", None),
    ("> 1", [2]),
    ("> 1", {"value": 2}),
    ("< 1", math.nan),
    ("between 0 and 1", True),
    ("between 0 and 1", math.nan),
    ("between 0 and 1", "0.5"),
]

INVALID_CONDITIONS = [
    "",
    "   ",
    "0.01",
    "< ",
    "<< 0.01",
    "=< 1",
    "=> 1",
    "= 1",
    "=== 1",
    "<> 1",
    "< 0.01 or 1",
    "< 1 2",
    "< abc",
    "< nan",
    "< NaN",
    "< inf",
    "< 1e999",
    "< 0x10",
    "< 1_000",
    "< 1,5",
    "== True",
    "== yes",
    "< true",
    ">= false",
    "between 1 and",
    "between and 2",
    "between 2 and 1",
    "between 1 2",
    "between 1 or 2",
    "between 1e999 and 2e999",
    "between true and false",
    "is 1",
    "__import__('os').system('id')",
    "< 1; import os",
    "lambda: 1",
    "< 1\n< 2",
]


@pytest.mark.parametrize(("text", "observed", "expected"), HOLDS)
def test_condition_holds(text: str, observed: object, expected: bool) -> None:
    assert parse_condition(text).holds(observed) is expected


@pytest.mark.parametrize(("text", "observed"), TYPE_MISMATCH)
def test_wrong_type_is_none(text: str, observed: object) -> None:
    assert parse_condition(text).holds(observed) is None


@pytest.mark.parametrize("text", INVALID_CONDITIONS)
def test_invalid_condition_refused(text: str) -> None:
    with pytest.raises(GrammarError):
        parse_condition(text)


# Only hashable values: the parse cache raises TypeError on a list before the type check runs.
# The contract models only ever pass strings, so that is not reachable from a plan file.
@pytest.mark.parametrize("value", [None, 0.01, 1, True, ("<", 1)])
def test_condition_must_be_text(value: object) -> None:
    with pytest.raises(GrammarError, match="a condition is text"):
        parse_condition(value)


def test_condition_is_parsed_into_parts() -> None:
    c = parse_condition(" between 0.98 and 1.02 ")
    assert (c.op, c.value, c.upper, str(c)) == ("between", 0.98, 1.02, "between 0.98 and 1.02")
    b = parse_condition("== true")
    assert (b.op, b.value) == ("==", True)
    assert isinstance(b.value, bool)
    n = parse_condition(">=0.99")
    assert (n.op, n.value, n.upper) == (">=", 0.99, None)


def test_error_messages_say_what_was_expected() -> None:
    with pytest.raises(GrammarError, match="lower bound 2 is above upper bound 1"):
        parse_condition("between 2 and 1")
    with pytest.raises(GrammarError, match="booleans compare only with == or !="):
        parse_condition("< true")
    with pytest.raises(GrammarError, match="expected '<op> <number>'"):
        parse_condition("about 3")


DURATIONS = [
    ("250ms", 0.25),
    ("1ms", 0.001),
    ("30s", 30.0),
    ("30 s", 30.0),
    (" 5m ", 300.0),
    ("2h", 7200.0),
    ("1.5d", 129600.0),
    ("0.5s", 0.5),
    ("90m", 5400.0),
]

INVALID_DURATIONS = [
    "0s",
    "0m",
    "0.0h",
    "0ms",
    "",
    "30",
    "s",
    "5 minutes",
    "5min",
    "5M",
    "5S",
    "1w",
    "-5s",
    "+5s",
    "1e3s",
    ".5s",
    "5.s",
    "1h30m",
    "5 m m",
    "nan s",
    "infs",
    "P1D",
    "30s; rm -rf /",
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", INVALID_DURATIONS)
def test_invalid_duration_refused(text: str) -> None:
    with pytest.raises(GrammarError):
        parse_duration(text)


def test_zero_duration_message() -> None:
    with pytest.raises(GrammarError, match="greater than zero"):
        parse_duration("0s")


@pytest.mark.parametrize("value", [None, 30, 30.0, ("30", "s")])
def test_duration_must_be_text(value: object) -> None:
    with pytest.raises(GrammarError, match="a duration is text"):
        parse_duration(value)
