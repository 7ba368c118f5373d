"""What every trial family reports, and the one table they are published in.

A family runs ``trials`` independent trials and checks a fixed list of ``invariants`` on each;
every breach is a ``Violation`` naming the trial, the invariant and what was seen. A negative
control is a family run against a deliberately unsafe build: it passes when it *finds*
violations, which shows the checks can see the failures they are meant to catch.
"""

from __future__ import annotations

import json
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "reliability.md"
_DATA_START = "<!-- reliability-data"
_DATA_END = "-->"


@dataclass(frozen=True)
class Size:
    """How big a run is: ``smoke`` for CI, ``full`` for the published figures."""

    name: str
    seed: int = 20261128

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, smoke: int, full: int) -> int:
        return full if self.full else smoke


@dataclass
class Violation:
    trial: str
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.trial}] {self.invariant}: {self.detail}"


@dataclass
class FamilyResult:
    family: str
    title: str
    unit: str  # what one trial is: "trials", "actions", "modifications", ...
    trials: int
    invariants: list[str]
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str = ""
    size: str = ""
    seconds: float = 0.0
    negative_control: bool = False
    finished_at: str = ""
    # How many violations were found. The report keeps only the first ten, so a row read back
    # from it (a partial re-run keeps the other rows) needs the count stored beside them.
    found: int | None = None

    @property
    def count(self) -> int:
        return len(self.violations) if self.found is None else self.found

    @property
    def ok(self) -> bool:
        """A normal family holds with no violation; a negative control holds when it finds some."""
        return self.count > 0 if self.negative_control else self.count == 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"violations": [asdict(v) for v in self.violations[:10]], "found": self.count}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FamilyResult:
        violations = [Violation(**v) for v in data.pop("violations", [])]
        return cls(**data, violations=violations)


class Recorder:
    """Collects violations from worker threads and counts trials."""

    def __init__(self, limit: int = 200) -> None:
        self._lock = threading.Lock()
        self.violations: list[Violation] = []
        self.dropped = 0
        self.limit = limit
        self.trials = 0

    def trial_done(self, count: int = 1) -> None:
        with self._lock:
            self.trials += count

    def result(
        self,
        family: str,
        title: str,
        unit: str,
        invariants: list[str],
        notes: list[str],
        size: Size,
        started: float,
        *,
        trials: int | None = None,
        negative_control: bool = False,
    ) -> FamilyResult:
        """The family's row: what it checked, what it found, and the command that reproduces it."""
        return FamilyResult(
            family=family,
            title=title,
            unit=unit,
            trials=self.trials if trials is None else trials,
            invariants=invariants,
            violations=self.violations,
            notes=notes,
            command=command_for(family, size),
            size=size.name,
            seconds=time.monotonic() - started,
            negative_control=negative_control,
        )

    def add(self, trial: str, invariant: str, details: Sequence[str] | str) -> None:
        items = [details] if isinstance(details, str) else list(details)
        with self._lock:
            for detail in items:
                if len(self.violations) < self.limit:
                    self.violations.append(Violation(trial, invariant, detail))
                else:
                    self.dropped += 1


@dataclass(frozen=True)
class Family:
    name: str
    run: Callable[[Size, Path], list[FamilyResult]]
    about: str


def command_for(family: str, size: Size) -> str:
    flag = "--full" if size.full else "--smoke"
    return f"python -m reliability {flag} --family {family}"


# ---------------------------------------------------------------- the published table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class RunHeader:
    """When the whole table was last produced, and which rows were re-run on their own since.

    A partial run (``--family``) keeps the whole run's time, length and load in the header, since
    those describe most rows, and lists the rows it replaced with their own finishing time.
    """

    started: str
    seconds: float
    load: float | None = None
    rerun: tuple[tuple[str, str], ...] = ()  # (family, finished_at)

    def after_partial(self, results: Sequence[FamilyResult]) -> RunHeader:
        names = {r.family for r in results}
        kept = tuple(item for item in self.rerun if item[0] not in names)
        return RunHeader(
            self.started, self.seconds, self.load, kept + tuple((r.family, r.finished_at) for r in results)
        )


def render(results: Sequence[FamilyResult], header: RunHeader) -> str:
    started, seconds, load = header.started, header.seconds, header.load
    lines = [
        "# Reliability",
        "",
        "Trials that try to make stagehold advance when it should not: crashes at the worst moments,",
        "answers lost after a change was applied, repeated and forged Slack deliveries, a tampered",
        "ledger, malformed input, secrets in every field, and people clicking buttons they should not.",
        "Every row is produced by `python -m reliability --full` (this file is rewritten by it); the",
        "last column reproduces one row on its own. A *negative control* runs the same trials against",
        "a build with a safety turned off and must find violations: it shows the checks can see the",
        "failures they guard against.",
        "",
        _run_line(results, header, started, seconds, load),
        *(
            [
                "Re-run on their own since the last whole run: "
                + ", ".join(f"{family} ({finished})" for family, finished in header.rerun)
                + "."
            ]
            if header.rerun
            else []
        ),
        "",
        "| family | size | trials | invariants checked | violations | reproduce |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in results:
        name = r.title + (" (negative control)" if r.negative_control and "negative" not in r.title else "")
        found = f"{r.count}" + (" (expected > 0)" if r.negative_control else "")
        lines.append(
            f"| {_cell(name)} | {r.size} | {r.trials:,} {r.unit} | "
            f"{'<br>'.join(_cell(i) for i in r.invariants)} | {found} | `{r.command}` |"
        )
    lines += ["", "## Details", ""]
    for r in results:
        lines.append(f"### {r.title}")
        lines.append("")
        lines.append(
            f"{r.trials:,} {r.unit} at {r.size} size in {r.seconds:.0f} s"
            + (f", finished {r.finished_at}" if r.finished_at else "")
            + "; "
            f"{r.count} violation(s){' — expected, this is the negative control' if r.negative_control else ''}."
        )
        lines.append("")
        for note in r.notes:
            lines.append(f"- {note}")
        if r.violations:
            lines.append("")
            lines.append("Violations (first 10):")
            lines.append("")
            for v in r.violations[:10]:
                lines.append(f"- `{_cell(str(v))[:400]}`")
        lines.append("")
    data = [r.to_json() for r in results]
    meta = {"started": started, "seconds": seconds, "load": load, "rerun": [list(item) for item in header.rerun]}
    lines += [
        _DATA_START,
        json.dumps(meta | {"results": data}, indent=1),
        _DATA_END,
    ]
    return "\n".join(lines) + "\n"


def _run_line(
    results: Sequence[FamilyResult], header: RunHeader, started: str, seconds: float, load: float | None
) -> str:
    machine = f"on {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    if header.rerun:
        # The rows come from several runs: say which span, not one run's time and length.
        finished = sorted(r.finished_at for r in results if r.finished_at)
        span = f"between {finished[0]} and {finished[-1]}" if finished else "at different times"
        return f"Run: the rows come from runs that finished {span}, {machine}; each family's details give its own."
    return f"Run: {started}, {seconds / 60:.1f} min in total {machine}" + (
        f", load average {load:.1f} when it started." if load is not None else "."
    )


def previous(path: Path = REPORT) -> tuple[RunHeader | None, list[FamilyResult]]:
    """The header and rows of the current report, so a run of one family keeps the others' figures."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, []
    match = re.search(re.escape(_DATA_START) + r"\n(.*)\n" + re.escape(_DATA_END), text, re.DOTALL)
    if not match:
        return None, []
    try:
        data = json.loads(match.group(1))
        rows = [FamilyResult.from_json(dict(r)) for r in data["results"]]
        header = RunHeader(
            str(data["started"]),
            float(data["seconds"]),
            None if data.get("load") is None else float(data["load"]),
            tuple((str(f), str(t)) for f, t in data.get("rerun", [])),
        )
    except (ValueError, KeyError, TypeError):
        return None, []
    return header, rows


def merge_partial(
    report: Path, results: Sequence[FamilyResult], order: Sequence[str], fallback: RunHeader
) -> tuple[RunHeader, list[FamilyResult]]:
    """A partial run's report: its rows replace theirs; the other rows and the whole run's header stay."""
    last, rows = previous(report)
    kept = {r.family: r for r in rows}
    kept.update({r.family: r for r in results})
    return (last or fallback).after_partial(results), [kept[n] for n in order if n in kept]


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
