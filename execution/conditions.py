"""Threshold and duration grammar: parsed by hand, never evaluated with ``eval``.

Grammar (whitespace between tokens is optional)::

    condition := OP value | "between" NUMBER "and" NUMBER
    OP        := "<" | "<=" | ">" | ">=" | "==" | "!="
    value     := NUMBER | "true" | "false"
    duration  := NUMBER UNIT        UNIT := "ms" | "s" | "m" | "h" | "d"

Worked example: ``parse_condition("between 0.98 and 1.02").holds(1.0)`` is True;
``parse_condition("== true").holds(1)`` is None, because a number is not a boolean: a value of
the wrong type is an *error*, never a pass.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARE = re.compile(rf"^\s*(<=|>=|==|!=|<|>)\s*({_NUMBER}|true|false)\s*$")
_BETWEEN = re.compile(rf"^\s*between\s+({_NUMBER})\s+and\s+({_NUMBER})\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# The same grammar as one regular expression each, published in the JSON Schema so editors can
# flag a bad threshold or duration while it is typed; the parsers below still decide.
CONDITION_PATTERN = rf"^\s*(?:(?:<=|>=|==|!=|<|>)\s*(?:{_NUMBER}|true|false)|between\s+{_NUMBER}\s+and\s+{_NUMBER})\s*$"
DURATION_PATTERN = _DURATION.pattern

Scalar = float | bool


class GrammarError(ValueError):
    """The text is not in the grammar; the message says what was expected."""


@dataclass(frozen=True)
class Condition:
    op: str
    value: Scalar
    upper: float | None = None
    text: str = ""

    def holds(self, observed: object) -> bool | None:
        """True/False when comparable; None when the observed value has the wrong type."""
        if isinstance(self.value, bool):
            if not isinstance(observed, bool):
                return None
            if self.op == "==":
                return observed is self.value
            return observed is not self.value
        if isinstance(observed, bool) or not isinstance(observed, (int, float)):
            return None
        x = float(observed)
        if math.isnan(x):
            return None
        if self.op == "between":
            assert self.upper is not None
            return self.value <= x <= self.upper
        return {
            "<": x < self.value,
            "<=": x <= self.value,
            ">": x > self.value,
            ">=": x >= self.value,
            "==": x == self.value,
            "!=": x != self.value,
        }[self.op]

    def __str__(self) -> str:
        return self.text


def parse_condition(text: str) -> Condition:
    if not isinstance(text, str):  # checked before the cache, which cannot hash lists or dicts
        raise GrammarError("a condition is text such as '< 0.01', '== true' or 'between 0.98 and 1.02'")
    return _parse_condition(text)


@lru_cache(maxsize=4096)
def _parse_condition(text: str) -> Condition:
    m = _BETWEEN.match(text)
    if m:
        low, high = float(m.group(1)), float(m.group(2))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise GrammarError(f"'{text}': bounds must be finite numbers")
        if low > high:
            raise GrammarError(f"'{text}': lower bound {low:g} is above upper bound {high:g}")
        return Condition("between", low, high, text.strip())
    m = _COMPARE.match(text)
    if m:
        op, raw = m.group(1), m.group(2)
        if raw in ("true", "false"):
            if op not in ("==", "!="):
                raise GrammarError(f"'{text}': booleans compare only with == or !=")
            return Condition(op, raw == "true", None, text.strip())
        value = float(raw)
        if not math.isfinite(value):
            raise GrammarError(f"'{text}': the number must be finite")
        return Condition(op, value, None, text.strip())
    raise GrammarError(
        f"'{text}' is not a condition; expected '<op> <number>' (op one of < <= > >= == !=), "
        "'== true', '== false' or 'between <low> and <high>'"
    )


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``5m``, ``2h``, ``1.5d`` or ``250ms``."""
    if not isinstance(text, str):
        raise GrammarError("a duration is text such as '30s', '5m' or '2h'")
    return _parse_duration(text)


@lru_cache(maxsize=4096)
def _parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise GrammarError(f"'{text}' is not a duration; expected a number and a unit (ms, s, m, h, d), e.g. '30s'")
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise GrammarError(f"'{text}': a duration must be greater than zero")
    return seconds
