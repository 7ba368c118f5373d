"""Chains written by an earlier release (tests/data/chains, exported as they were stored) still
verify, read back as typed events that encode to the very same bodies, and fold to the state
that release folded them to (tests/data/chains/states.json, written by that release)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from execution import events as ev
from execution.project import project
from ledger.chain import canonical_json, export_line, verify_chain
from ledger.entry import Entry
from tests.fakes import INITIATOR, RELEASERS, ROLLBACKER, Rig, from_export

CHAINS = Path(__file__).resolve().parents[1] / "data" / "chains"
FILES = sorted(CHAINS.glob("*.jsonl"))


def summary(value: Any) -> Any:
    """A state as plain JSON: enums by value, times as text, contract models as a digest."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: summary(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):  # the package and plan, as a digest of their JSON
        return hashlib.sha256(json.dumps(value.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): summary(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [summary(v) for v in value]
    return value


def chain(path: Path) -> list[Entry]:
    return from_export(path.read_text(encoding="utf-8").splitlines())


def test_the_recorded_chains_cover_every_kind_of_event() -> None:
    kinds = {e.kind for path in FILES for e in chain(path)}
    assert kinds >= set(ev.BY_KIND), sorted(set(ev.BY_KIND) - kinds)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_a_recorded_chain_verifies_and_folds_to_the_state_it_folded_to(path: Path) -> None:
    entries = chain(path)
    result = verify_chain(entries, entries[0].execution_id)
    assert result.ok, result
    expected = json.loads((CHAINS / "states.json").read_text(encoding="utf-8"))[path.name]
    assert summary(project(entries[0].execution_id, entries)) == expected


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_recorded_body_reads_as_its_event_and_encodes_to_the_same_bytes(path: Path) -> None:
    for entry in chain(path):
        event = ev.event_of(entry)
        assert event is not None, entry.kind
        assert type(event).kind == entry.kind
        assert canonical_json(ev.encode(event)) == canonical_json(entry.body), (entry.seq, entry.kind)


def people_and_timers(rig: Rig) -> None:
    """A protected hold worked by people: refusals, stale clicks, its timers, a release that does
    not carry over, and an abandon."""
    rig.start()
    rig.run_to_stage("canary-5")
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "protected"
    first = state.hold.id
    rig.release(INITIATOR)  # the initiator under two-person control
    rig.engine.hold(rig.eid, "U09NOBODY", "stop")  # not an operator
    rig.engine.hold(rig.eid, "U06SRE", "stop")  # already held
    rig.engine.rollback(rig.eid, RELEASERS[0], "no")  # release authority only
    rig.engine.abandon(rig.eid, "U09NOBODY", "x")
    hold = rig.state.hold
    assert hold is not None and hold.evidence_expires_at is not None
    rig.clock.now = hold.evidence_expires_at
    rig.tick()  # evidence expired
    rig.release(RELEASERS[0], version=1)  # a stale button
    rig.clock.now = rig.state.holds[first].remind_at
    rig.tick()  # reminded
    rig.clock.now = rig.state.holds[first].expires_at
    rig.tick()  # escalated
    rig.fake.signals["legacy_healthy"] = False
    rig.release(RELEASERS[0])
    rig.release(RELEASERS[1], hold=first)  # already released
    rig.run()  # the release does not carry over: a new hold supersedes it
    rig.engine.abandon(rig.eid, INITIATOR, "the cutover is postponed")


def hold_requested_then_rollback(rig: Rig) -> None:
    """A manual hold asked for while the first action resolves, released, then a rollback."""
    rig.start()
    rig.run()
    rig.release(RELEASERS[0])
    rig.run()
    rig.engine.rollback(rig.eid, ROLLBACKER, "ordered by the responder")
    rig.run()


@pytest.mark.parametrize("scenario", [people_and_timers, hold_requested_then_rollback], ids=lambda f: f.__name__)
def test_the_engine_writes_the_same_bytes_as_the_release_that_recorded_them(
    scenario: Callable[[Rig], None], tmp_path: Path
) -> None:
    asked: list[str] = []

    def hold_while_sending(state: Any, effect: Any) -> None:
        if scenario is hold_requested_then_rollback and not asked:
            asked.append(state.execution_id)
            rig.engine.hold(state.execution_id, "U06SRE", "looks odd")

    rig = Rig(tmp_path / "l.db", before_send=hold_while_sending)
    try:
        scenario(rig)
        written = "".join(export_line(e) for e in rig.entries())
    finally:
        rig.close()
    recorded = (CHAINS / f"{scenario.__name__.replace('_', '-')}.jsonl").read_text(encoding="utf-8")
    assert written.splitlines() == recorded.splitlines()
