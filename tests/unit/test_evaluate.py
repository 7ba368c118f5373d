"""Evidence -> outcome, in the documented order; only pass counts; the most severe outcome wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from execution.evaluate import categories, changed, evaluate, overall
from execution.model import Evidence, Outcome, most_severe

NOW = datetime(2026, 11, 28, 22, 30, tzinfo=UTC)


def reading(value: Any, *, age: float | None = 5.0, samples: int | None = 1200, error: str | None = None) -> Evidence:
    sampled = None if age is None else NOW - timedelta(seconds=age)
    return Evidence("error_rate", value, sampled, "prometheus metrics", samples=samples, error=error)


CASES = [
    # (reading, pass, hold band, min_samples, max_age) -> outcome
    pytest.param(reading(0.004), "< 0.01", "< 0.02", 20, 60, Outcome.PASS, id="pass"),
    pytest.param(reading(0.015), "< 0.01", "< 0.02", 20, 60, Outcome.HOLD, id="hold-band"),
    pytest.param(reading(0.05), "< 0.01", "< 0.02", 20, 60, Outcome.FAIL, id="fail-outside-both"),
    pytest.param(reading(0.015), "< 0.01", None, 20, 60, Outcome.FAIL, id="fail-without-band"),
    pytest.param(reading(None), "< 0.01", "< 0.02", 20, 60, Outcome.NO_DATA, id="no-data"),
    pytest.param(reading(0.004, error="HTTP 500"), "< 0.01", None, None, 60, Outcome.ERROR, id="read-error"),
    pytest.param(reading(0.004, age=61), "< 0.01", None, None, 60, Outcome.STALE, id="older-than-max-age"),
    pytest.param(reading(0.004, age=60), "< 0.01", None, None, 60, Outcome.PASS, id="exactly-max-age"),
    pytest.param(reading(0.004, age=None), "< 0.01", None, None, 60, Outcome.STALE, id="no-sample-time"),
    pytest.param(reading(0.004, samples=19), "< 0.01", None, 20, 60, Outcome.NO_DATA, id="too-few-samples"),
    pytest.param(reading(0.004, samples=None), "< 0.01", None, 20, 60, Outcome.NO_DATA, id="unknown-samples"),
    pytest.param(reading(0.004, samples=20), "< 0.01", None, 20, 60, Outcome.PASS, id="enough-samples"),
    pytest.param(reading(0.004, samples=None), "< 0.01", None, None, 60, Outcome.PASS, id="no-floor-no-count"),
    pytest.param(reading("0.004"), "< 0.01", None, None, 60, Outcome.ERROR, id="text-is-not-a-number"),
    pytest.param(reading(1), "== true", None, None, 60, Outcome.ERROR, id="number-is-not-a-boolean"),
    pytest.param(reading(True), "< 0.01", None, None, 60, Outcome.ERROR, id="boolean-is-not-a-number"),
    pytest.param(reading(float("nan")), "< 0.01", None, None, 60, Outcome.ERROR, id="nan"),
    pytest.param(reading([0.1]), "< 0.01", None, None, 60, Outcome.ERROR, id="list"),
    pytest.param(reading(True), "== true", None, None, 60, Outcome.PASS, id="boolean-pass"),
    pytest.param(reading(False), "== true", None, None, 60, Outcome.FAIL, id="boolean-fail"),
    pytest.param(reading(1.0), "between 0.98 and 1.02", None, None, 60, Outcome.PASS, id="between"),
]


@pytest.mark.parametrize(("ev", "pass_text", "hold_text", "min_samples", "max_age", "expected"), CASES)
def test_outcome_table(
    ev: Evidence, pass_text: str, hold_text: str | None, min_samples: int | None, max_age: float, expected: Outcome
) -> None:
    result = evaluate("check", ev, pass_text, max_age, NOW, hold_text=hold_text, min_samples=min_samples)
    assert result.outcome == expected, result.detail


def test_order_error_beats_everything_then_no_data_then_stale() -> None:
    # A failed read that also looks stale and thin is an error: the read itself is the problem.
    r = evaluate("check", reading(None, age=999, samples=1, error="timeout"), "< 0.01", 60, NOW, min_samples=20)
    assert r.outcome == Outcome.ERROR
    assert r.detail == "timeout"
    # No value wins over staleness (there is nothing to be stale).
    assert evaluate("check", reading(None, age=999), "< 0.01", 60, NOW).outcome == Outcome.NO_DATA
    # Stale is decided before the sample floor and the threshold: stale evidence is never used.
    stale = evaluate("check", reading(0.004, age=120, samples=1), "< 0.01", 60, NOW, min_samples=20)
    assert stale.outcome == Outcome.STALE
    assert "120.0s old" in stale.detail
    # Too little data is decided before the threshold: a passing value on 3 samples is not a pass.
    thin = evaluate("check", reading(0.004, samples=3), "< 0.01", 60, NOW, min_samples=20)
    assert thin.outcome == Outcome.NO_DATA
    assert "3 samples; at least 20 needed" in thin.detail


def test_a_stale_reading_inside_the_hold_band_is_stale_not_hold() -> None:
    r = evaluate("check", reading(0.015, age=90), "< 0.01", 60, NOW, hold_text="< 0.02")
    assert r.outcome == Outcome.STALE


def test_result_records_what_was_judged() -> None:
    r = evaluate("readiness", reading(0.015, age=5.5), "< 0.01", 60, NOW, hold_text="< 0.02", min_samples=20)
    data = r.to_json()
    assert data["key"] == "readiness:error_rate"
    assert data["outcome"] == "hold"
    assert data["value"] == 0.015
    assert data["age_s"] == 5.5
    assert data["max_age_s"] == 60
    assert data["samples"] == 1200
    assert data["min_samples"] == 20
    assert data["condition"] == "< 0.01"
    assert data["hold_band"] == "< 0.02"
    assert data["sampled_at"] == "2026-11-28T22:29:54.500000Z"
    assert data["source"] == "prometheus metrics"


# ---------------------------------------------------------------- none but pass counts; most severe wins


@pytest.mark.parametrize("outcome", [o for o in Outcome if o != Outcome.PASS])
def test_any_non_pass_outcome_makes_the_overall_non_pass(outcome: Outcome) -> None:
    passing = evaluate("check", reading(0.001), "< 0.01", 60, NOW)
    other = _result_with(outcome)
    assert overall([passing, other]) == outcome


def test_conflicting_checks_resolve_to_the_most_severe() -> None:
    order = [Outcome.PASS, Outcome.HOLD, Outcome.NO_DATA, Outcome.STALE, Outcome.ERROR, Outcome.FAIL]
    for i, worst in enumerate(order):
        assert most_severe(order[: i + 1]) == worst
        assert most_severe(list(reversed(order[: i + 1]))) == worst
    assert overall([_result_with(Outcome.HOLD), _result_with(Outcome.FAIL), _result_with(Outcome.PASS)]) == Outcome.FAIL


def test_no_results_at_all_is_no_data_never_a_pass() -> None:
    assert overall([]) == Outcome.NO_DATA
    assert most_severe([]) == Outcome.NO_DATA


def test_categories_and_changes_name_each_signal() -> None:
    before = {"preflight:vault": "pass", "readiness:snapshot": "pass"}
    after = {"preflight:vault": "pass", "readiness:snapshot": "stale", "check:new": "pass"}
    assert changed(before, after) == ["check:new absent -> pass", "readiness:snapshot pass -> stale"]
    assert changed(before, dict(before)) == []
    results = [evaluate("preflight", reading(0.001), "< 0.01", 60, NOW), _result_with(Outcome.STALE)]
    assert categories(results) == {"preflight:error_rate": "pass", "check:error_rate": "stale"}


def _result_with(outcome: Outcome) -> Any:
    ev = {
        Outcome.PASS: reading(0.001),
        Outcome.HOLD: reading(0.015),
        Outcome.FAIL: reading(0.5),
        Outcome.NO_DATA: reading(None),
        Outcome.STALE: reading(0.001, age=600),
        Outcome.ERROR: reading(0.001, error="boom"),
    }[outcome]
    r = evaluate("check", ev, "< 0.01", 60, NOW, hold_text="< 0.02")
    assert r.outcome == outcome
    return r
