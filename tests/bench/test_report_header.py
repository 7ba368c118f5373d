"""Re-measuring one part keeps the whole run's header and says which part was re-measured when."""

from __future__ import annotations

from pathlib import Path

from bench import Row
from bench.report import published, render


def _row(part: str, value: float) -> Row:
    return Row.from_json(
        Row(figure=f"{part} figure", unit="ms", stagehold=[value], goal="≤ 1 ms", met=value <= 1).to_json()
        | {"part": part}
    )


def test_a_part_re_measured_is_listed_beside_the_whole_runs_header(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    rows = [_row("verify", 0.5), _row("scale", 2.0)]
    report.write_text(render(rows, started="2026-11-30 05:46 UTC", minutes=11.6, load=[1.2, 1.4, 1.6]))
    again = published(report)
    assert again is not None and again["remeasured"] == []
    this = [{"part": "scale", "started": "2026-11-30 06:47 UTC", "minutes": 7.9, "load": [2.1, 1.5, 1.1]}]
    report.write_text(
        render(rows, started=again["started"], minutes=again["minutes"], load=again["load"], remeasured=this)
    )
    text = report.read_text()
    assert "Run: 2026-11-30 05:46 UTC, 11.6 min in total" in text
    assert (
        "Parts re-measured on their own since (`--part`), their rows from those runs: scale (2026-11-30 06:47 UTC, 7.9 min, load 2.10)."
        in text
    )
