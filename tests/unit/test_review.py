"""The checkpoint review's figures, checked against values computed by hand.

Each ledger is written by the real engine (``Rig``: SQLite, a hand-moved clock, a fake target),
so the entries are exactly what production writes; the clock moves only where a test says, which
makes every latency and duration below a number one can work out on paper. Ledgers with broken
lineage are the engine's entries re-sealed with one link removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from execution import events as ev
from execution.project import State
from execution.review import Options, quantile, review, summary
from execution.transitions import Phase
from ledger.chain import GENESIS_HASH, seal
from ledger.entry import Entry, NewEntry
from tests.fakes import RELEASERS, ROLLBACKER, FakeClock, MemoryLedger, Rig, edited, example, stage_of

DANA, LEE = RELEASERS
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

# Per protected hold of the payments example (canary-25, full, retire-legacy): who releases after
# how many seconds since the previous click (the first since the hold opened).
CEREMONY = [[(3.0, DANA)], [(5.0, DANA)], [(8.0, DANA), (400.0, LEE)]]


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        # One minute apart, so each execution has its own id (the id carries the start time).
        clock = FakeClock(datetime(2026, 11, 28, 22, len(made), tzinfo=UTC))
        rig = Rig(tmp_path / f"l{len(made)}.db", clock=clock, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def released_run(rig: Rig, releases: Sequence[Sequence[tuple[float, str]]]) -> State:
    """Run, and at each protected hold in turn click as ``releases`` says; then run on."""
    for clicks in releases:
        state = rig.run()
        assert state.phase == Phase.HOLDING and state.hold is not None and state.hold.kind == "protected"
        for delay, user in clicks:
            rig.clock.advance(delay)
            outcome = rig.release(user)
            assert ev.RELEASE_GRANTED in outcome.kinds, outcome
    return rig.run()


def ceremony(make: Callable[..., Rig], start: datetime | None = None) -> Rig:
    rig = make()
    if start is not None:
        rig.clock.now = start
    rig.start(mode="rehearsal")
    assert released_run(rig, CEREMONY).phase == Phase.COMPLETED
    return rig


def ledgers(*rigs: Rig) -> list[tuple[str, list[Entry]]]:
    return [(r.eid, r.entries()) for r in rigs]


def opened_at(rig: Rig, hold: str) -> datetime:
    return next(e.ts for e in rig.of_kind(ev.HOLD_OPENED) if e.body["hold"] == hold)


# ---------------------------------------------------------------- statistics


def test_quantiles_interpolate_between_closest_ranks() -> None:
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([1, 2, 3, 4], 0.5) == 2.5  # position 1.5
    assert quantile([1, 2, 3, 4, 10], 0.9) == pytest.approx(7.6)  # position 3.6: 4 + 0.6 * 6
    assert quantile([10, 1, 4, 3, 2], 0.9) == pytest.approx(7.6)  # order does not matter
    assert summary([3, 3, 5, 5, 8, 8, 408, 408]) == {"count": 8, "median": 6.5, "p90": 408.0, "max": 408.0}


# ---------------------------------------------------------------- ceremonial releases


def test_ceremonial_releases_are_flagged_and_attributed(rigs: Callable[..., Rig]) -> None:
    """Two runs released seconds after each card opened, nearly always by the same person."""
    first = ceremony(rigs)
    second = ceremony(rigs, start=first.clock.now + timedelta(hours=1))
    r = review(ledgers(first, second), NOW)

    rel = r["releases"]
    # Latencies per run: H1 3 s, H2 5 s, H3 8 s (DANA) and 408 s (LEE); twice.
    assert sorted(x["latency_s"] for x in rel["items"]) == [3, 3, 5, 5, 8, 8, 408, 408]
    assert rel["latency_s"] == {"count": 8, "median": 6.5, "p90": 408.0, "max": 408.0}
    assert rel["fast"] == 6 and rel["fast_share"] == 0.75 and rel["fast_release_s"] == 60.0
    assert rel["shown_basis"] == {"slack": 0, "opened": 8}
    assert [(p["user"], p["releases"], p["share"], p["fast"]) for p in rel["by_person"]] == [
        (DANA, 6, 0.75, 6),
        (LEE, 2, 0.25, 0),
    ]
    assert rel["top_share"] == 0.75
    assert rel["by_person"][0]["latency_s"]["median"] == 5.0  # DANA: 3, 3, 5, 5, 8, 8
    assert {(x["hold"], x["user"], x["latency_s"]) for x in rel["flagged"]} == {
        ("H1", DANA, 3.0),
        ("H2", DANA, 5.0),
        ("H3", DANA, 8.0),
    }
    assert len(rel["flagged"]) == 6 and rel["degraded"] == 0 and rel["expired_evidence"] == 0

    holds = r["holds"]
    # Time in hold per run: 3, 5 and 408 s (H3 waits for its second releaser).
    assert holds["total"] == 6 and holds["released"] == 6 and holds["open"] == 0
    assert holds["time_in_hold_s"] == {"count": 6, "median": 5.0, "p90": 408.0, "max": 408.0}
    assert holds["expired"] == holds["escalated"] == 0
    assert [(g["stage"], g["kind"], g["holds"]) for g in holds["by_stage_kind"]] == [
        ("canary-25", "protected", 2),
        ("full", "protected", 2),
        ("retire-legacy", "protected", 2),
    ]
    assert holds["by_stage_kind"][2]["time_in_hold_s"]["median"] == 408.0

    assert r["outcomes"]["totals"]["completed"] == 2
    assert r["executions"]["total"] == 2 and r["executions"]["rehearsal"] == 2
    assert {s["stage"]: (s["entered"], s["passed"]) for s in r["outcomes"]["by_stage"]} == {
        "canary-5": (2, 2),
        "canary-25": (2, 2),
        "full": (2, 2),
        "retire-legacy": (2, 2),
    }
    e = r["evidence"]
    assert (e["transitions"], e["linked"], e["lineage_pct"]) == (8, 8, 100.0)

    # The operator's threshold decides what is flagged: at 4 s only the two 3 s releases are.
    strict = review(ledgers(first, second), NOW, Options(fast_release_s=4))
    assert strict["releases"]["fast"] == 2


def test_the_slack_delivery_time_of_a_card_is_used_when_it_fits(rigs: Callable[..., Rig]) -> None:
    rig = ceremony(rigs)
    h1, h2 = opened_at(rig, "H1"), opened_at(rig, "H2")
    shown = {
        (rig.eid, "H1"): h1 + timedelta(seconds=1),  # Slack had it 1 s after opening: 2 s to review
        (rig.eid, "H2"): h2 + timedelta(seconds=30),  # after the release: not the card that was clicked
    }
    rel = review(ledgers(rig), NOW, shown=shown)["releases"]
    by_hold = {(x["hold"], x["user"]): (x["basis"], x["latency_s"]) for x in rel["items"]}
    assert by_hold[("H1", DANA)] == ("slack", 2.0)
    assert by_hold[("H2", DANA)] == ("opened", 5.0)
    assert by_hold[("H3", LEE)] == ("opened", 408.0)
    assert rel["shown_basis"] == {"slack": 1, "opened": 3}


# ---------------------------------------------------------------- slow holds


def test_a_slow_hold_expires_escalates_and_is_released_on_expired_evidence(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.start(mode="rehearsal")
    state = rig.run()
    h1 = state.hold
    assert h1 is not None and h1.id == "H1"
    # The plan's holds expire after 2 h with a reminder 15 min before.
    rig.clock.now = h1.remind_at
    rig.tick()
    rig.clock.now = h1.expires_at
    rig.tick()
    held = rig.state.hold
    assert held is not None and held.reminded and held.escalated and held.evidence_stale
    rig.clock.now = h1.opened_at + timedelta(hours=3)
    rig.release(LEE)  # on the refreshed card: evidence version 2
    state = rig.run()
    h2 = state.hold
    assert h2 is not None and h2.id == "H2"
    now = h2.opened_at + timedelta(minutes=10)
    r = review(ledgers(rig), now)

    holds = r["holds"]
    items = {h["hold"]: h for h in holds["items"]}
    assert items["H1"]["duration_s"] == 10800.0 and items["H1"]["end"] == "released"
    assert items["H1"]["expired"] and items["H1"]["escalated"] and items["H1"]["reminded"]
    assert items["H1"]["evidence_expired"]
    assert items["H2"]["end"] == "open" and items["H2"]["duration_s"] == 600.0 and not items["H2"]["expired"]
    # Only ended holds count towards time in hold; the open one is listed with its age.
    assert holds["time_in_hold_s"] == {"count": 1, "median": 10800.0, "p90": 10800.0, "max": 10800.0}
    assert (holds["expired"], holds["escalated"], holds["reminded"], holds["open"]) == (1, 1, 1, 1)
    assert [h["hold"] for h in holds["open_now"]] == ["H2"]

    rel = r["releases"]
    assert rel["total"] == 1 and rel["latency_s"]["median"] == 10800.0 and rel["fast"] == 0
    assert rel["expired_evidence"] == 1 and rel["items"][0]["expired_evidence"]
    assert r["outcomes"]["totals"]["held"] == 1
    assert r["executions"]["items"][0]["stopped_at"] == "full"

    # Seen later, the open hold has passed its expiry without an escalation recorded yet.
    late = review(ledgers(rig), h2.expires_at + timedelta(seconds=1))["holds"]
    assert late["expired"] == 2 and late["escalated"] == 1


# ---------------------------------------------------------------- rollbacks


def breach(rig: Rig, value: float = 0.2, age: float = 4.0) -> None:
    """The error rate breaches; the breaching sample was taken ``age`` seconds before it is read."""
    rig.fake.signals["error_rate"] = value
    rig.fake.signal_age["error_rate"] = age


def test_rollback_quality_trigger_person_verified_failed_and_breach_to_sent(rigs: Callable[..., Rig]) -> None:
    verified = rigs()
    verified.start()
    verified.run(until=lambda s: s.stages[0].consecutive == 2)
    breach(verified)
    assert verified.run().phase == Phase.ROLLED_BACK

    failed = rigs()
    failed.fake.reject_rollback = True
    failed.start()
    failed.run(until=lambda s: s.stages[0].consecutive == 2)
    breach(failed)
    assert failed.run().phase == Phase.NEEDS_HUMAN

    manual = rigs()
    manual.start()
    assert manual.run().phase == Phase.HOLDING  # at canary-25's protected hold
    outcome = manual.engine.rollback(manual.eid, ROLLBACKER, "settlement parity looks off")
    assert ev.ROLLBACK_STARTED in outcome.kinds
    manual.clock.advance(2)
    assert manual.run().phase == Phase.ROLLED_BACK

    rb = review(ledgers(verified, failed, manual), NOW)["rollbacks"]
    items = {x["execution"]: x for x in rb["items"]}
    assert (rb["total"], rb["by_trigger"], rb["by_person"], rb["verified"], rb["failed"]) == (3, 2, 1, 2, 1)
    v, f, m = items[verified.eid], items[failed.eid], items[manual.eid]
    assert (v["by"], v["outcome"], v["verified"], v["steps_confirmed"], v["undo"]) == (
        "trigger",
        "rolled_back",
        True,
        1,
        ["canary-5"],
    )
    assert (f["outcome"], f["verified"], f["steps_confirmed"]) == ("failed", False, 0)
    # The breaching reading was sampled 4 s before the tick that read it and sent the rollback.
    assert v["breach_to_sent_s"] == 4.0 and f["breach_to_sent_s"] == 4.0
    assert rb["breach_to_sent_s"] == {"count": 2, "median": 4.0, "p90": 4.0, "max": 4.0}
    assert (m["by"], m["actor"], m["trigger"], m["breach_to_sent_s"], m["order_to_sent_s"]) == (
        "person",
        ROLLBACKER,
        "manual",
        None,
        2.0,
    )
    assert m["verified"] and m["outcome"] == "rolled_back"

    r = review(ledgers(verified, failed, manual), NOW)
    assert r["outcomes"]["totals"] == {
        "completed": 0,
        "held": 0,
        "narrowed": 0,
        "rolled_back": 2,
        "needs_human": 1,
        "running": 0,
    }
    canary5 = next(s for s in r["outcomes"]["by_stage"] if s["stage"] == "canary-5")
    assert (canary5["entered"], canary5["rolled_back"], canary5["needs_human"]) == (3, 2, 1)
    # Rollback steps are transitions too, and each links its trigger or the person's order.
    assert (r["evidence"]["transitions"], r["evidence"]["lineage_pct"]) == (3 + 3, 100.0)


def test_a_narrowing_is_a_verified_rollback_that_ends_narrowed(rigs: Callable[..., Rig]) -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-25")["verify"]["on"].update(fail="narrow"))
    rig = rigs(change=change)

    def recover(key: str, role: Any) -> None:
        if ":rollback:" in key:
            rig.fake.signals["error_rate"] = 0.002

    rig.start()
    rig.run_to_stage("canary-25")
    rig.fake.on_apply = recover
    breach(rig)
    assert rig.run().status() == "narrowed"
    r = review(ledgers(rig), NOW)
    (item,) = r["rollbacks"]["items"]
    assert (item["scope"], item["outcome"], item["verified"], item["undo"]) == (
        "narrow",
        "narrowed",
        True,
        ["canary-25"],
    )
    assert r["outcomes"]["totals"]["narrowed"] == 1
    assert r["executions"]["items"][0]["stopped_at"] == "canary-25"
    assert {(h["kind"], h["end"]) for h in r["holds"]["items"]} == {("protected", "released"), ("narrowed", "open")}


# ---------------------------------------------------------------- evidence


def test_stale_and_missing_readings_and_a_release_on_degraded_evidence(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.fake.signal_age["settlement_parity"] = 200  # max_age 120 s: stale
    rig.fake.signals["error_rate"] = None  # no data
    rig.start()
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "stale"
    rig.clock.advance(20)
    rig.release(DANA)
    r = review(ledgers(rig), NOW)
    e = r["evidence"]
    # Gate before canary-5: vault, legacy, snapshot (3 passing); first sample: error_rate (no data),
    # settlement_parity (stale), legacy, snapshot: 7 readings, 1 stale, 1 missing.
    assert (e["readings"], e["stale"], e["no_data"], e["error"]) == (7, 1, 1, 0)
    assert e["stale_or_missing_share"] == pytest.approx(round(2 / 7, 4))
    by_signal = {s["signal"]: s for s in e["by_signal"]}
    assert by_signal["settlement_parity"] == {
        "signal": "settlement_parity",
        "readings": 1,
        "stale": 1,
        "no_data": 0,
        "error": 0,
    }
    assert by_signal["error_rate"]["no_data"] == 1 and by_signal["legacy_healthy"]["readings"] == 2
    rel = r["releases"]
    assert (rel["total"], rel["degraded"], rel["fast"]) == (1, 1, 1)
    assert rel["items"][0]["degraded"] and rel["items"][0]["kind"] == "stale"
    assert rel["by_person"][0]["degraded"] == 1


def resealed(entries: Sequence[Entry], change: Callable[[Entry], NewEntry | None]) -> list[Entry]:
    """The entries sealed again into a fresh chain, each passed through ``change`` (None drops it)."""
    ledger = MemoryLedger(entries[0].execution_id)
    for e in entries:
        new = change(e)
        if new is not None:
            ledger.append([new])
    return ledger.entries


def as_new(e: Entry, **changes: Any) -> NewEntry:
    fields: dict[str, Any] = {"kind": e.kind, "actor": e.actor, "body": dict(e.body), "ts": e.ts}
    fields.update(changes)
    return NewEntry(**fields)


def test_transitions_missing_a_link_are_named(rigs: Callable[..., Rig]) -> None:
    rig = ceremony(rigs)
    entries = rig.entries()
    first_gate = next(e.seq for e in entries if e.kind == ev.GATE_CHECKED)

    def no_gate_and_a_person_acting(e: Entry) -> NewEntry | None:
        if e.seq == first_gate:
            return None  # canary-5 entered without recorded evidence
        if e.kind == ev.ACTION_INTENDED and e.body["stage"] == "canary-25":
            return as_new(e, actor="U05OPS")  # a person acting instead of the executor duty
        return as_new(e)

    def no_release_of_h2(e: Entry) -> NewEntry | None:
        if e.kind in (ev.RELEASE_GRANTED, ev.HOLD_RELEASED) and e.body["hold"] == "H2":
            return None  # "full" entered while its protected hold was never released
        return as_new(e)

    def no_digest(e: Entry) -> NewEntry | None:
        if e.kind == ev.EXECUTION_STARTED:
            return as_new(e, body={**e.body, "plan_sha256": "unknown"})
        return as_new(e)

    a = ("CHG-A", resealed(entries, no_gate_and_a_person_acting))
    b = ("CHG-B", resealed(entries, no_release_of_h2))
    c = ("CHG-C", resealed(entries, no_digest))
    e = review([(eid, [*es]) for eid, es in (a, b)], NOW)["evidence"]
    assert (e["transitions"], e["linked"], e["lineage_pct"]) == (8, 5, 62.5)
    assert e["missing_links"] == {
        "package": 0,
        "plan_digest": 0,
        "stage": 0,
        "evidence": 1,
        "release": 1,
        "actor": 1,
    }
    assert sorted((t["stage"], tuple(t["missing"])) for t in e["unlinked"]) == [
        ("canary-25", ("actor",)),
        ("canary-5", ("evidence",)),
        ("full", ("release",)),
    ]
    digestless = review([c], NOW)["evidence"]
    assert (digestless["linked"], digestless["missing_links"]["plan_digest"]) == (0, 4)


# ---------------------------------------------------------------- selection


def test_since_change_pattern_and_weeks(rigs: Callable[..., Rig]) -> None:
    early = ceremony(rigs, start=datetime(2026, 11, 16, 9, 0, tzinfo=UTC))  # ISO week 47
    late = ceremony(rigs, start=datetime(2026, 11, 27, 9, 0, tzinfo=UTC))  # ISO week 48
    both = ledgers(early, late)
    assert [w["week"] for w in review(both, NOW)["outcomes"]["by_week"]] == ["2026-W47", "2026-W48"]
    recent = review(both, NOW, Options(since=datetime(2026, 11, 20, tzinfo=UTC)))
    assert [x["execution"] for x in recent["executions"]["items"]] == [late.eid]
    assert recent["filters"]["since"] == "2026-11-20T00:00:00.000000Z"
    assert review(both, NOW, Options(change="CHG-20*"))["executions"]["total"] == 2
    assert review(both, NOW, Options(change="TRS-*"))["executions"]["total"] == 0
    empty = review([], NOW)
    assert empty["evidence"]["lineage_pct"] is None and empty["releases"]["latency_s"]["median"] is None


def test_a_ledger_the_fold_cannot_read_is_left_out_and_named(rigs: Callable[..., Rig]) -> None:
    rig = ceremony(rigs)
    first = rig.entries()[0]
    broken = [seal("CHG-2041-broken", 1, as_new(first, body={"change_id": "CHG-2041"}), GENESIS_HASH)]
    r = review([*ledgers(rig), ("CHG-2041-broken", broken)], NOW, excluded=[{"execution": "X", "reason": "tampered"}])
    assert r["executions"]["total"] == 1
    reasons = {x["execution"]: x["reason"] for x in r["executions"]["excluded"]}
    assert reasons["X"] == "tampered" and reasons["CHG-2041-broken"] == (
        "cannot be folded: MalformedEvent: execution.started: the body has no 'package'"
    )
