"""Fixtures shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """An engine over a SQLite file with a fake clock and a healthy fake target (payments example)."""
    r = Rig(tmp_path / "ledger.db")
    try:
        yield r
    finally:
        r.close()
