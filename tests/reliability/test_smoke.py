"""The reliability harness at smoke size, as CI runs it: every family holds, the negative control does not.

``python -m reliability --smoke`` runs the same thing from the command line; the published figures
in docs/reliability.md come from ``python -m reliability --full``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability import FAMILIES, run_families
from reliability.harness import FamilyResult, Size

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FamilyResult]:
    workdir: Path = tmp_path_factory.mktemp("reliability")
    out = run_families(Size("smoke"), [f.name for f in FAMILIES], workdir)
    return {r.family: r for r in out}


@pytest.mark.parametrize("family", [f.name for f in FAMILIES if f.name != "negative-control"])
def test_family_holds_at_smoke_size(results: dict[str, FamilyResult], family: str) -> None:
    result = results[family]
    assert result.trials > 0, f"{family} ran no trials"
    assert not result.violations, "\n".join(str(v) for v in result.violations[:20])


def test_negative_control_finds_violations(results: dict[str, FamilyResult]) -> None:
    result = results["negative-control"]
    assert result.trials > 0
    assert result.violations, "the unsafe build showed no violation: the crash checks cannot see what they guard"
    seen = {v.invariant for v in result.violations}
    assert "effect once per transition" in seen, seen
