"""The approvals family's checks can see what they guard: with the check disabled they find violations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ledger.store import VerifyResult
from reliability import approvals
from reliability.harness import Recorder, Size
from reliability.tamper import _pg_database


def test_counting_every_signature_would_be_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = approvals.check_approvals

    def lenient(*args: Any, **kwargs: Any) -> Any:
        report = real(*args, **kwargs)
        return type(report)(report.package_sha256, report.policy, report.signatures, report.signatures, ())

    monkeypatch.setattr(approvals, "check_approvals", lenient)
    rec = Recorder()
    approvals.run_packages(Size("smoke"), tmp_path, rec)
    seen = {v.invariant for v in rec.violations}
    assert "no unapproved package verifies" in seen
    assert len([v for v in rec.violations if v.invariant == "no unapproved package verifies"]) >= 40


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_chain_check_without_the_witness_would_miss_every_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setattr(
        approvals, "check_against_witness", lambda entries, eid, heads: VerifyResult(True, None, "ok", 0, "")
    )
    drop = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url, drop = _pg_database()
    try:
        violations, trials, _ = approvals._chain_backend(backend, url, tmp_path / backend, 12, 7)
    finally:
        if drop is not None:
            drop()
    caught = [v for v in violations if v.invariant == "rewrite caught against the witness"]
    assert trials == 12 and len(caught) == 12
    assert not [v for v in violations if v.invariant == "rewrite is consistent"]
