"""Performance figures you can quote: ``python -m bench`` measures every one, each beside its baseline.

How it works: ``bench/__main__.py`` runs every *part* listed in ``PARTS`` (one module of this
package each), prints their rows as they come and, at full size, rewrites docs/performance.md.
Every figure is measured three times (min / median / max) with its baseline measured in the same
run, on the same machine state, so the ratio is what to quote on a noisy machine.

Adding a part:

1. Write ``bench/<name>.py`` with ``TITLE = "..."`` (one line: what the part measures) and
   ``def run(size: Size) -> list[Row]``. Use ``size.pick(smoke=..., full=...)`` for sizes (smoke is
   what CI runs: seconds, not minutes) and ``size.repeats`` repetitions. Measure anything that
   needs its own memory or start-up figures in a subprocess (``bench.measure.child``).
2. Return one ``Row`` per figure: the stagehold values (one per repetition), the baseline values
   measured beside them and what the baseline is, the goal in words and whether it was met — or,
   when a goal cannot be met on this machine, ``met=False`` with the measured bound in ``note``.
3. Add ``"<name>"`` to ``PARTS`` below. ``python -m bench --part <name>`` runs it alone and keeps
   the other parts' published rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Run in this order; each name is a module of this package.
PARTS: tuple[str, ...] = ("verify", "append", "cli", "scale", "clicks", "reaction", "listing", "startup")


@dataclass(frozen=True)
class Size:
    """``smoke`` (CI: proves the part runs, one repetition) or ``full`` (the published figures)."""

    name: str = "full"

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def repeats(self) -> int:
        return 1 if self.smoke else 3

    def pick(self, smoke: Any, full: Any) -> Any:
        return smoke if self.smoke else full


def _measured(values: Sequence[float]) -> list[float]:
    """The repetitions that produced a value (a run with nothing to measure reports NaN)."""
    return [v for v in values if math.isfinite(v)]


@dataclass(frozen=True)
class Row:
    """One figure: stagehold's values beside its baseline's, one value per repetition.

    ``lower_is_better`` says which way the unit points (a latency: True; a rate: False); the ratio
    is always stagehold's cost over the baseline's, so 1.0 is "as fast as the baseline" and 2.0
    "twice the baseline's cost", whatever the unit.
    """

    figure: str
    unit: str
    stagehold: Sequence[float]
    baseline: Sequence[float] = ()
    baseline_name: str = ""
    lower_is_better: bool = True
    goal: str = ""
    met: bool | None = None  # None: reported for information, no goal
    note: str = ""  # further figures, or the measured bound that stops the goal
    part: str = field(default="", compare=False)

    @property
    def ratio(self) -> float | None:
        mine_values, their_values = _measured(self.stagehold), _measured(self.baseline)
        if not mine_values or not their_values:
            return None
        mine, theirs = statistics.median(mine_values), statistics.median(their_values)
        if self.lower_is_better:
            return mine / theirs if theirs else None
        return theirs / mine if mine else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stagehold"] = list(self.stagehold)
        data["baseline"] = list(self.baseline)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(**data)
