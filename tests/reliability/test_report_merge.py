"""A partial reliability run keeps the rest of the published report as it was."""

from __future__ import annotations

from pathlib import Path

from reliability.harness import FamilyResult, RunHeader, Violation, merge_partial, previous, render


def _row(family: str, found: int, *, negative: bool = False, finished: str = "2026-11-30 01:00 UTC") -> FamilyResult:
    return FamilyResult(
        family=family,
        title=family.title(),
        unit="trials",
        trials=30,
        invariants=["something holds"],
        violations=[Violation(f"t{i}", "something holds", "broken") for i in range(found)],
        size="full",
        seconds=12.0,
        negative_control=negative,
        finished_at=finished,
    )


def test_a_partial_run_keeps_the_whole_runs_header_and_the_other_rows_counts(tmp_path: Path) -> None:
    report = tmp_path / "reliability.md"
    whole = RunHeader("2026-11-30 01:00 UTC", 700.0, 0.4)
    report.write_text(render([_row("crash", 0), _row("negative-control", 46, negative=True), _row("tamper", 0)], whole))

    rerun = _row("tamper", 0, finished="2026-11-30 03:18 UTC")
    partial = RunHeader("2026-11-30 03:10 UTC", 30.0, 3.5)
    header, rows = merge_partial(report, [rerun], ["crash", "negative-control", "tamper"], partial)
    report.write_text(render(rows, header))

    text = report.read_text()
    # The header no longer claims one run's time and length; it names the row re-run since.
    assert "11.7 min in total" not in text and "30.0" not in text
    assert "the rows come from runs that finished between 2026-11-30 01:00 UTC and 2026-11-30 03:18 UTC" in text
    assert "Re-run on their own since the last whole run: tamper (2026-11-30 03:18 UTC)" in text
    # Only ten violations are kept in the data, but the negative control found 46.
    assert "| 46 (expected > 0) |" in text
    again, kept = previous(report)
    assert again is not None and again.started == "2026-11-30 01:00 UTC"
    control = next(r for r in kept if r.family == "negative-control")
    assert len(control.violations) == 10 and control.count == 46 and control.ok


def test_a_whole_run_clears_the_list_of_rows_re_run_on_their_own(tmp_path: Path) -> None:
    report = tmp_path / "reliability.md"
    header = RunHeader("2026-11-30 01:00 UTC", 700.0).after_partial([_row("crash", 0)])
    report.write_text(render([_row("crash", 0)], header))
    assert "Re-run on their own since the last whole run: crash" in report.read_text()
    report.write_text(render([_row("crash", 0)], RunHeader("2026-11-30 04:00 UTC", 710.0)))
    assert "Re-run on their own" not in report.read_text()
    assert "Run: 2026-11-30 04:00 UTC, 11.8 min in total" in report.read_text()
