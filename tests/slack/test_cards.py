"""Every card, rendered from real execution states, fits Block Kit's limits.

Each test rehearses a change against the sandbox (no Slack), then replays its ledger through the
notifier's planner: every thread reply is rendered as the entry arrives, and every tracked card
(root, holds, rollback) is rendered at every step — as the notifier would at delivery time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.bootstrap import build_engine, http_client, live_connector, open_store
from bot.clock import utc_now
from bot.commands.execute import FaultSchedule
from bot.driver import drive
from execution.contract import load_change
from execution.model import Credentials
from execution.outputs import intervention_packet, state_record
from execution.project import State
from execution.sandbox import Sandbox
from execution.service import Engine
from handlers import blockkit, cards, ids
from handlers.notifier import ROOT, Refresh, Reply, Timeline
from ledger.entry import Entry
from tests.slack.conftest import INITIATOR, RELEASERS, SPEED, write_package


@pytest.fixture
def engine(tmp_path: Path, sandbox: Sandbox) -> Iterator[Engine]:
    store = open_store(f"sqlite:///{tmp_path / 'cards.db'}")
    client = http_client(5.0)
    try:
        yield build_engine(store, live_connector(Credentials({}), client, utc_now, sandbox.url))
    finally:
        client.close()
        store.close()


def rehearse(
    engine: Engine,
    sandbox: Sandbox,
    tmp_path: Path,
    *,
    faults: dict[str, set[str]] | None = None,
    auto_release: bool = True,
    **package: Any,
) -> str:
    change = load_change(write_package(tmp_path / "pk", **package))
    stages = [s.id for s in change.plan.stages]
    engine.listeners.append(FaultSchedule(sandbox.add_fault, faults or {}, stages))
    state = engine.start(change, INITIATOR, (), mode="rehearsal", speed=SPEED)
    drive(engine, state.execution_id, auto_release=auto_release, sleep=lambda s: time.sleep(min(s, 0.05)))
    return state.execution_id


def replay(engine: Engine, execution_id: str) -> tuple[Timeline, list[cards.Card]]:
    """Plan every entry and render every card the notifier would send; return them all."""
    entries = engine.entries(execution_id)
    timeline = Timeline(execution_id, lambda upto: [e for e in entries if e.seq <= upto])
    rendered: list[cards.Card] = []
    refs: set[str] = set()
    for i, entry in enumerate(entries):
        for step in timeline.advance(entry, entries[i + 1] if i + 1 < len(entries) else None):
            if isinstance(step, Reply):
                rendered.append(step.card)
            else:
                assert isinstance(step, Refresh)
                refs.add(step.ref)
        for ref in refs:  # the delivery-time rendering of every tracked card, at every step
            card = timeline.render(ref)
            if card is not None:
                rendered.append(card)
    state = timeline.state
    rendered.append(cards.status_card(state, entries[-1].hash))
    packet = intervention_packet(state, entries)
    if packet is not None:
        rendered.append(cards.packet_card(packet))
    rendered.append(cards.record_card(state_record(state, entries)))
    for card in rendered:
        assert blockkit.message_problems(card.blocks, card.text) == []
        json.dumps(card.blocks)  # plain JSON all the way down
    return timeline, rendered


def texts(rendered: Sequence[cards.Card]) -> str:
    return json.dumps([c.blocks for c in rendered], ensure_ascii=False)


def test_a_completed_execution(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, stages=2)
    timeline, rendered = replay(engine, eid)
    assert timeline.state.status() == "completed"
    all_text = texts(rendered)
    assert "Preflight and rollback readiness before entering `canary-5`" in all_text
    assert "Checkpoint `canary-25` passed" in all_text
    assert "Released by <@U01DANA>" in all_text
    assert "Completed · CHG-2041" in all_text


def test_a_degraded_hold_with_a_long_evidence_list_is_summarised(
    engine: Engine, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.add_fault("error-rate-degraded")
    eid = rehearse(engine, sandbox, tmp_path, stages=1, extra_checks=40)
    timeline, _ = replay(engine, eid)
    state = timeline.state
    assert state.hold is not None and state.hold.kind == "degraded" and len(state.hold.results) == 44
    card = cards.hold_card(state, state.hold.id)
    rows = [b for b in card.blocks if b["type"] == "section" and "fields" in b and "*Value*" in json.dumps(b)]
    assert len(rows) == cards.MAX_EVIDENCE_ROWS
    assert "…and 36 more readings (2 passing)" in json.dumps(card.blocks, ensure_ascii=False)
    assert len(card.blocks) <= blockkit.MAX_BLOCKS_MESSAGE
    actions = next(b for b in card.blocks if b["type"] == "actions")
    release, rollback = actions["elements"]
    assert (release["style"], rollback["style"]) == ("primary", "danger")
    assert "confirm" in release and len(release["confirm"]["text"]["text"]) <= 300
    assert ids.decode(release["value"]) == ids.HoldRef(eid, "canary-5", state.hold.id, state.hold.evidence_version)


def test_a_rollback_and_its_packet(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, stages=2, faults={"canary-25": {"error-rate-high"}})
    timeline, rendered = replay(engine, eid)
    assert timeline.state.status() == "rolled_back"
    all_text = texts(rendered)
    assert "Rollback in progress" in all_text and "*Rolled back*" in all_text
    assert "Intervention packet · CHG-2041" in all_text
    assert "` undone and confirmed" in all_text


def test_a_failed_rollback_needs_a_human(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, stages=2, faults={"canary-25": {"error-rate-high", "rollback-fail"}})
    timeline, rendered = replay(engine, eid)
    assert timeline.state.status() == "needs_human"
    all_text = texts(rendered)
    assert "*Rollback stopped*" in all_text and "Intervention packet" in all_text
    assert "Read-back of `canary-5` does not match" in all_text
    assert "Closed by rollback" in json.dumps(cards.hold_card(timeline.state, "H1").blocks)


def test_two_person_hold_stale_evidence_and_decided_outcomes(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, auto_release=False, max_age="10m")
    # Release each protected hold by hand until the irreversible stage, then give one of two.
    for _ in range(10):
        state = engine.load(eid)
        hold = state.hold
        assert hold is not None
        if hold.required == 2:
            break
        engine.release(eid, hold.id, hold.evidence_version, RELEASERS[0])
        drive(engine, eid, sleep=lambda s: time.sleep(min(s, 0.05)))
    state = engine.load(eid)
    hold = state.hold
    assert hold is not None and hold.stage == "retire-legacy"
    engine.release(eid, hold.id, hold.evidence_version, RELEASERS[0])
    timeline, _ = replay(engine, eid)
    partial = json.dumps(cards.hold_card(timeline.state, hold.id).blocks, ensure_ascii=False)
    assert "1 of 2 — given by <@U01DANA>" in partial

    # The same hold with its evidence gone stale: marked, and the buttons re-bound to v2.
    stale_state = replace(
        timeline.state,
        holds={
            **timeline.state.holds,
            hold.id: replace(timeline.state.holds[hold.id], evidence_stale=True, evidence_version=2),
        },
    )
    stale = cards.hold_card(stale_state, hold.id)
    assert "STALE" in stale.blocks[0]["text"]["text"]
    assert "given on older evidence and no longer count" in json.dumps(stale.blocks)
    value = next(b for b in stale.blocks if b["type"] == "actions")["elements"][0]["value"]
    assert ids.decode(value).version == 2

    # Decided holds: the buttons are replaced by the outcome.
    superseded = replace(
        stale_state, holds={**stale_state.holds, "H1": replace(stale_state.holds["H1"], status="superseded")}
    )
    for st, hold_id, expect in (
        (timeline.state, "H1", "Released by <@U01DANA>"),
        (superseded, "H1", "Superseded"),
    ):
        card = cards.hold_card(st, hold_id)
        assert not any(b["type"] == "actions" for b in card.blocks)
        assert expect in json.dumps(card.blocks)


def test_rollback_modal_and_help_fit(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, stages=2, auto_release=False)
    state: State = engine.load(eid)
    assert state.hold is not None
    ctx = ids.ModalContext(ids.HoldRef(eid, state.hold.stage, state.hold.id, 1), "C0CHANGES", "1700000000.000100")
    view = cards.rollback_modal(state, ctx)
    assert blockkit.view_problems(view) == []
    assert ids.decode_modal(view["private_metadata"]) == ctx
    assert view["blocks"][1]["element"]["max_length"] == 500
    help_card = cards.help_card("unknown command `x`", [("start CHANGE_ID", "start it")])
    assert blockkit.message_problems(help_card.blocks, help_card.text) == []


def _entries(engine: Engine, eid: str) -> list[Entry]:
    return engine.entries(eid)


def test_root_card_names_the_next_step(engine: Engine, sandbox: Sandbox, tmp_path: Path) -> None:
    eid = rehearse(engine, sandbox, tmp_path, stages=2, auto_release=False)
    card = cards.root_card(engine.load(eid))
    text = json.dumps(card.blocks, ensure_ascii=False)
    assert card.blocks[0]["type"] == "header" and "CHG-2041" in card.blocks[0]["text"]["text"]
    assert "Held at H1 (protected): 0 of 1 release(s) from <@U01DANA>, <@U02LEE>, <!subteam^S0CAB>" in text
    assert "`canary-25`" in text and ROOT == "root"
    assert len(_entries(engine, eid)) > 3
