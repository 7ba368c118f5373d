"""Evidence judged by the data (DESIGN rule 11): series by series, warm-up, tolerance, pre-change data.

Pure: hand-made evidence, states folded in memory, an explicit ``now``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from execution import commands as cmd
from execution import events as ev
from execution.contract.load import LoadedChange
from execution.decide import Observations, decide, reads
from execution.evaluate import evaluate
from execution.model import Evidence, Outcome, SeriesValue
from execution.promql import PromQLError, analyse
from ledger.entry import NewEntry
from tests.fakes import INITIATOR, PAYMENTS_HEALTHY, FakeClock, MemoryLedger, edited, evidence, example, stage_of

# ---------------------------------------------------------------- PromQL shapes


@pytest.mark.parametrize(
    ("query", "selectors", "window"),
    [
        ("up", ["up{}"], 0.0),
        ('sum(rate(a{svc="x"}[1m])) / sum(rate(b{svc="x"}[1m]))', ['a{svc="x"}', 'b{svc="x"}'], 60.0),
        ("last_over_time(x[5m])", ["x{}"], 300.0),
        ("max_over_time(rate(x[1m])[10m:30s])", ["x{}"], 660.0),
        # A baseline read with offset is neither fresh data nor data about the change.
        ("rate(x[5m]) / rate(x[5m] offset 1d)", ["x{}"], 300.0),
        ("x or vector(0)", ["x{}"], 0.0),
    ],
)
def test_a_query_is_parsed_for_its_live_selectors_and_window(query: str, selectors: list[str], window: float) -> None:
    shape = analyse(query)
    assert list(shape.live_selectors) == selectors
    assert shape.window_s == window


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("sum(rate(x[1m])", "does not parse: unclosed left parenthesis"),
        ("rate(x)", "expected type matrix"),
        ("x[5m]", "range vector"),
        ("vector(1)", "reads no series"),
        ("x offset 5m", "reads no series"),
    ],
)
def test_a_query_that_cannot_be_evidence_is_refused(query: str, fragment: str) -> None:
    with pytest.raises(PromQLError, match=fragment):
        analyse(query)


# ---------------------------------------------------------------- several series

NOW = datetime(2026, 11, 28, 22, 5, tzinfo=UTC)


def series(reduce: str, *values: tuple[str, float | None, float | None]) -> Evidence:
    """``(instance, value, age_s)`` per series; age None: no current raw sample."""
    items = tuple(
        SeriesValue({"instance": name}, value, None if age is None else NOW - timedelta(seconds=age))
        for name, value, age in values
    )
    times = [s.sampled_at for s in items]
    oldest = None if None in times else min(t for t in times if t is not None)
    return Evidence("up", items[0].value, oldest, "prometheus", series=items, reduce=reduce)


def test_every_series_must_pass_and_the_worst_is_named_with_its_labels() -> None:
    result = evaluate("check", series("all", ("a", 1.0, 1), ("b", 0.0, 1)), "== 1", 60, NOW)
    assert result.outcome == Outcome.FAIL
    assert (result.value, result.labels, result.series, result.series_not_passing) == (0.0, {"instance": "b"}, 2, 1)
    assert result.detail.startswith('1 of 2 series not passing; worst {instance="b"}')
    assert result.to_json()["labels"] == {"instance": "b"}


def test_the_worst_series_is_the_one_furthest_from_passing() -> None:
    result = evaluate("check", series("all", ("a", 0.05, 1), ("b", 0.5, 1), ("c", 0.001, 1)), "< 0.01", 60, NOW)
    assert (result.outcome, result.labels) == (Outcome.FAIL, {"instance": "b"})


@pytest.mark.parametrize(
    ("values", "outcome"),
    [
        ((("a", 1.0, 1), ("b", 1.0, 1)), Outcome.PASS),
        ((("a", 1.0, 1), ("b", 1.0, None)), Outcome.STALE),  # one series' scrape stopped
        ((("a", 1.0, 1), ("b", 1.0, 90)), Outcome.STALE),
        ((("a", 1.0, 1), ("b", None, 1)), Outcome.NO_DATA),  # NaN
    ],
)
def test_a_series_that_is_not_fresh_or_has_no_value_never_passes(
    values: tuple[tuple[str, float | None, float | None], ...], outcome: Outcome
) -> None:
    assert evaluate("check", series("all", *values), "== 1", 60, NOW).outcome == outcome


def test_any_passes_on_one_passing_series_only_when_the_plan_says_so() -> None:
    result = evaluate("check", series("any", ("a", 0.0, 1), ("b", 1.0, 1)), "== 1", 60, NOW)
    assert (result.outcome, result.labels) == (Outcome.PASS, {"instance": "b"})
    assert "1 of 2 series pass (reduce: any)" in result.detail


# ---------------------------------------------------------------- warm-up, tolerance, pre-change data


def confirmed_at(change: LoadedChange) -> tuple[MemoryLedger, datetime]:
    """canary-5 of ``change`` confirmed live at the returned time."""
    ledger = MemoryLedger()
    now = FakeClock()()
    ledger.append(cmd.start(change, INITIATOR, (), now))
    ledger.append(decide(ledger.state, observe(now), now).append)
    p = ledger.state.pending
    assert p is not None
    body = {"stage": p.stage, "index": p.index, "direction": p.direction, "key": p.key, "observed": {}}
    ledger.append([NewEntry(ev.ACTION_CONFIRMED, "role:executor", body, now)])
    return ledger, now


def observe(now: datetime, **overrides: Evidence) -> Observations:
    out = {name: evidence(name, value, now) for name, value in PAYMENTS_HEALTHY.items()}
    out.update(overrides)
    return Observations(out)


def canary(**verify: Any) -> LoadedChange:
    return edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"].update(verify))


def canary_check(**check: Any) -> LoadedChange:
    return edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"]["checks"][0].update(check))


def sampled(decision: Any) -> dict[str, Any]:
    found = [e.body for e in decision.append if e.kind == ev.VERIFICATION_SAMPLED]
    assert len(found) == 1, [e.kind for e in decision.append]
    return dict(found[0])


def test_the_first_sample_waits_the_initial_delay_after_the_read_back() -> None:
    ledger, confirmed = confirmed_at(canary(initial_delay="2m"))
    early = confirmed + timedelta(seconds=119)
    assert reads(ledger.state, early) is None
    waiting = decide(ledger.state, observe(early), early)
    assert waiting.idle and waiting.wake_at == confirmed + timedelta(minutes=2)
    due = confirmed + timedelta(minutes=2)
    assert reads(ledger.state, due) is not None
    assert sampled(decide(ledger.state, observe(due), due))["consecutive"] == 1


def test_without_an_initial_delay_the_first_sample_is_at_once() -> None:
    ledger, confirmed = confirmed_at(example())
    assert reads(ledger.state, confirmed) is not None


def high(now: datetime) -> Evidence:
    return evidence("error_rate", 0.05, now)


def test_a_hard_trigger_rolls_back_on_the_first_failing_sample_by_default() -> None:
    ledger, now = confirmed_at(example())
    decision = decide(ledger.state, observe(now, error_rate=high(now)), now)
    assert ev.ROLLBACK_STARTED in [e.kind for e in decision.append]


def test_consecutive_failures_are_tolerated_up_to_the_limit_and_never_count_toward_the_bake() -> None:
    ledger, now = confirmed_at(canary_check(consecutive_failure_limit=2))
    # Two passes, then two tolerated failures: no reaction, and the run of passes is broken.
    for _ in range(2):
        ledger.append(decide(ledger.state, observe(now), now).append)
        now += timedelta(seconds=30)
    for streak in (1, 2):
        decision = decide(ledger.state, observe(now, error_rate=high(now)), now)
        body = sampled(decision)
        assert (body["reaction"], body["consecutive"], body["failing"]) == (
            "continue",
            0,
            [["check:error_rate", streak]],
        )
        assert body["tolerated"] == ["check:error_rate"]
        ledger.append(decision.append)
        now += timedelta(seconds=30)
    # The third consecutive failure is the plan's fail reaction.
    third = decide(ledger.state, observe(now, error_rate=high(now)), now)
    assert sampled(third)["reaction"] == "rollback"


def test_a_pass_ends_the_failing_streak() -> None:
    ledger, now = confirmed_at(canary_check(consecutive_failure_limit=1))
    ledger.append(decide(ledger.state, observe(now, error_rate=high(now)), now).append)
    now += timedelta(seconds=30)
    ledger.append(decide(ledger.state, observe(now), now).append)
    assert ledger.state.stages[0].failing == {}
    now += timedelta(seconds=30)
    assert sampled(decide(ledger.state, observe(now, error_rate=high(now)), now))["reaction"] == "continue"


def windowed(now: datetime, value: float, window_s: float) -> Evidence:
    return Evidence("error_rate", value, now, "prometheus", samples=1000, evaluated_at=now, window_s=window_s)


def test_a_pass_on_data_that_could_predate_the_change_does_not_count_toward_the_bake() -> None:
    ledger, confirmed = confirmed_at(example())
    now = confirmed + timedelta(seconds=30)
    # A 1-minute rate window read 30 s after the change still holds pre-change data.
    early = decide(ledger.state, observe(now, error_rate=windowed(now, 0.001, 60)), now)
    body = sampled(early)
    assert (body["reaction"], body["consecutive"], body["predates_change"]) == ("continue", 0, ["error_rate"])
    ledger.append(early.append)
    later = confirmed + timedelta(seconds=60)
    counted = sampled(decide(ledger.state, observe(later, error_rate=windowed(later, 0.001, 60)), later))
    assert (counted["consecutive"], counted["predates_change"]) == (1, [])


def test_a_failure_on_data_that_could_predate_the_change_still_fails_closed() -> None:
    ledger, confirmed = confirmed_at(example())
    now = confirmed + timedelta(seconds=5)
    decision = decide(ledger.state, observe(now, error_rate=windowed(now, 0.05, 60)), now)
    assert sampled(decision)["reaction"] == "rollback"


def test_an_old_raw_sample_is_pre_change_data_too() -> None:
    ledger, confirmed = confirmed_at(example())
    now = confirmed + timedelta(seconds=5)
    stale_raw = Evidence("error_rate", 0.001, confirmed - timedelta(seconds=3), "prometheus", samples=1000)
    assert sampled(decide(ledger.state, observe(now, error_rate=stale_raw), now))["consecutive"] == 0


def test_rehearsal_windows_are_compressed_like_every_plan_duration() -> None:
    reading = windowed(NOW, 0.001, 60)
    assert reading.data_from() == NOW - timedelta(seconds=60)
    assert reading.data_from(speed=120) == NOW - timedelta(seconds=0.5)
