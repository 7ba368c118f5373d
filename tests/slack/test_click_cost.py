"""What one Release click costs the ledger, counted on the thread that handles it: one read of
the ledger and one fold. The button's binding, the clicker's authority and the release are all
decided on that one state, and the answer is built from the entries just written (folded into
the cached state, not read back)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import execution.project as project_module
import execution.service as service_module
from handlers import actions
from ledger.sql import SqlLedgerStore
from tests.slack.conftest import INITIATOR, RELEASERS, Harness
from tests.slack.test_actions import ephemeral_text, start


class Counter:
    def __init__(self) -> None:
        self.thread: int | None = None
        self.reads = 0
        self.read_entries = 0
        self.folds = 0  # engine loads and whole-ledger projections: each is a fold
        self.applied = 0  # entries folded, by any of them or by the engine after an append

    def mine(self) -> bool:
        return self.thread == threading.get_ident()


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    c = Counter()
    real_read = SqlLedgerStore.read
    real_apply = project_module.apply
    real_project = project_module.project
    real_load = service_module.Engine.load
    real_release = actions.handle_release

    def read(self: SqlLedgerStore, execution_id: str, after_seq: int = 0) -> Any:
        out = real_read(self, execution_id, after_seq)
        if c.mine():
            c.reads += 1
            c.read_entries += len(out)
        return out

    def apply(state: Any, entry: Any) -> Any:
        if c.mine():
            c.applied += 1
        return real_apply(state, entry)

    def project(execution_id: str, entries: Any) -> Any:
        if c.mine():
            c.folds += 1
        return real_project(execution_id, entries)

    def load(self: Any, execution_id: str) -> Any:
        if c.mine():
            c.folds += 1
        return real_load(self, execution_id)

    def handle_release(*args: Any, **kwargs: Any) -> None:
        c.thread = threading.get_ident()
        try:
            real_release(*args, **kwargs)
        finally:
            c.thread = None

    monkeypatch.setattr(SqlLedgerStore, "read", read)
    monkeypatch.setattr(service_module, "apply", apply)  # the engine's incremental folds
    monkeypatch.setattr(project_module, "project", project)
    monkeypatch.setattr(service_module.Engine, "load", load)
    monkeypatch.setattr(actions, "handle_release", handle_release)
    yield c


def test_a_release_click_reads_the_ledger_once_and_folds_once(harness: Harness, counter: Counter) -> None:
    h = harness
    start(h, INITIATOR)
    card = h.hold_card("H1")
    assert h.click(card, RELEASERS[0]).status_code == 200
    assert "You released H1" in ephemeral_text(h, RELEASERS[0])
    assert (counter.reads, counter.folds) == (1, 1), vars(counter)
    # Only what the click appended is folded (release.granted, hold.released): the bot's cached
    # state already holds everything before it.
    assert counter.applied == 2, vars(counter)
