"""Release and Rollback clicks on hold cards, delivered to the real HTTP endpoint as Slack sends them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from handlers.ids import HoldRef
from tests.slack.conftest import (
    CAB_MEMBER,
    CHANGE,
    CHANNEL,
    INITIATOR,
    OUTSIDER,
    RELEASERS,
    RESPONDER,
    BotFactory,
    Harness,
    button_value,
    card_text,
    write_package,
)


def start(h: Harness, user: str = INITIATOR) -> str:
    response, name = h.slash(f"start {CHANGE}", user)
    assert response.status_code == 200
    answer = h.answer(name)
    assert "Started" in answer["text"], answer
    return h.execution().execution_id


def entries_of(h: Harness, kind: str, hold: str | None = None) -> list[dict[str, object]]:
    return [
        {"actor": e.actor, **e.body}
        for e in h.bot.engine.entries(h.execution().execution_id)
        if e.kind == kind and (hold is None or e.body.get("hold") == hold)
    ]


def ephemeral_text(h: Harness, user: str, count: int = 1) -> str:
    calls = h.fake.wait_for(
        lambda: (lambda c: c if len(c) >= count else None)(h.fake.ephemerals(user)), 15, f"an answer to {user}"
    )
    return str(calls[count - 1].params["text"])


def test_an_authorised_release_advances_the_execution(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    t0 = time.monotonic()
    response = h.click(card, RELEASERS[0])
    assert response.status_code == 200 and time.monotonic() - t0 < 3.0
    assert "You released H1 (1 of 1)" in ephemeral_text(h, RELEASERS[0])
    state = h.wait_state(lambda s: s.stages[1].status in ("live", "passed"), what="canary-25 entered")
    assert state.holds["H1"].released_by == (RELEASERS[0],)
    assert [e["actor"] for e in entries_of(h, "release.granted", "H1")] == [RELEASERS[0]]
    # The card's buttons are replaced by the outcome, edited in place.
    decided = h.fake.wait_for(
        lambda: (lambda m: m if button_value(m) is None else None)(h.fake.message(CHANNEL, card.ts)), 15, "H1 decided"
    )
    assert "Released by <@U01DANA>" in card_text(decided)
    # A member of the release group S0CAB (resolved through usergroups.users.list) may release too.
    h2 = h.hold_card("H2")
    h.click(h2, CAB_MEMBER)
    assert "You released H2" in ephemeral_text(h, CAB_MEMBER)
    assert h.fake.calls_of("usergroups.users.list")


def test_an_unauthorised_click_is_answered_privately_and_recorded(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    assert h.click(card, OUTSIDER).status_code == 200
    assert "Refused: U09NOBODY is not a release authority for CHG-2041" in ephemeral_text(h, OUTSIDER)
    denied = entries_of(h, "release.denied", "H1")
    assert [d["actor"] for d in denied] == [OUTSIDER]
    assert h.execution().open_hold == "H1"
    # The refusal is in the thread for everyone, too: ephemeral answers are never the only record.
    root = h.root()
    h.fake.wait_for(
        lambda: any("refused" in m.text and "U09NOBODY" in m.text for m in h.fake.thread(CHANNEL, root.ts)),
        what="the refusal in the thread",
    )


def test_answers_fall_back_to_the_response_url_when_ephemerals_fail(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    h.fake.fail("chat.postEphemeral", 500, times=3)  # the listeners' client tries three times
    h.click(card, OUTSIDER)
    answers = h.fake.wait_for(lambda: [b for _, b in h.fake.responses if "Refused" in b.get("text", "")], what="answer")
    assert answers[0]["response_type"] == "ephemeral" and answers[0]["replace_original"] is False
    assert len(h.fake.calls_of("chat.postEphemeral", ok=False)) == 3


def test_a_failed_group_lookup_counts_as_no_membership(harness: Harness) -> None:
    h = harness
    h.fake.broken_groups.add("S0CAB")
    start(h)
    h.click(h.hold_card("H1"), CAB_MEMBER)
    assert "is not a release authority" in ephemeral_text(h, CAB_MEMBER)
    assert [d["actor"] for d in entries_of(h, "release.denied", "H1")] == [CAB_MEMBER]


def test_the_initiator_cannot_release_under_two_person_control(make_bot: BotFactory, packages: Path) -> None:
    write_package(packages, initiators=(RELEASERS[0],))
    h = make_bot()
    start(h, RELEASERS[0])
    h.click(h.hold_card("H1"), RELEASERS[0])
    text = ephemeral_text(h, RELEASERS[0])
    assert "started this execution; under two-person control the initiator cannot release" in text
    assert len(entries_of(h, "release.denied", "H1")) == 1 and h.execution().open_hold == "H1"
    h.click(h.hold_card("H1"), RELEASERS[1])
    assert "You released H1" in ephemeral_text(h, RELEASERS[1])


def test_two_person_release_of_the_irreversible_stage(harness: Harness) -> None:
    h = harness
    start(h)
    for hold in ("H1", "H2"):
        h.click(h.hold_card(hold), RELEASERS[0])
    card = h.hold_card("H3")
    assert "retire-legacy" in card_text(card) and "0 of 2" in card_text(card)
    h.click(card, RELEASERS[0])
    assert "is recorded (1 of 2); 1 more distinct releaser(s) needed" in ephemeral_text(h, RELEASERS[0], 3)
    one_of_two = h.fake.wait_for(
        lambda: (lambda m: m if "1 of 2 — given by <@U01DANA>" in card_text(m) else None)(
            h.fake.message(CHANNEL, card.ts)
        ),
        what="the hold card showing 1 of 2",
    )
    assert button_value(one_of_two) is not None  # still open for the second releaser
    # The same person again does not count twice (moments later, the repeat is counted, not decided).
    h.click(card, RELEASERS[0])
    h.click(card, RELEASERS[1])
    assert "You released H3 (2 of 2)" in ephemeral_text(h, RELEASERS[1])
    h.wait_state(lambda s: s.status() == "completed", 30, "completion")
    h.settle()
    assert [e["count"] for e in entries_of(h, "release.granted", "H3")] == [1, 2]
    assert [(e["actor"], e["repeats"]) for e in entries_of(h, "release.ignored", "H3")] == [(RELEASERS[0], 1)]
    root = h.root()
    h.fake.wait_for(
        lambda: any("Completed · CHG-2041" in card_text(m) for m in h.fake.thread(CHANNEL, root.ts)), what="the record"
    )
    h.fake.wait_for(lambda: "COMPLETED" in card_text(h.fake.message(CHANNEL, root.ts)), what="root card completed")


def test_a_person_reading_a_compressed_rehearsals_hold_card_can_release_it(
    make_bot: BotFactory, packages: Path
) -> None:
    # The example's own max_ages (30 s and more) at x60: compressed, legacy_healthy's 30 s would be
    # 0.5 s and every card would be STALE before anyone saw its v1 button.
    write_package(packages, max_age=None)
    h = make_bot(speed=60.0)
    start(h)
    card = h.hold_card("H1", version=1)
    assert "STALE" not in card_text(card)
    seen = button_value(card)  # the button as the person saw it (the fake edits messages in place)
    time.sleep(3.0)  # a person reads the card before clicking (well inside 30 s, far past 0.5 s)
    h.click(card, RELEASERS[0], value=seen)
    assert "You released H1 (1 of 1)" in ephemeral_text(h, RELEASERS[0])
    h.wait_state(lambda s: s.stages[1].status in ("live", "passed"), what="canary-25 entered")
    assert entries_of(h, "hold.evidence_expired", "H1") == []


def test_stale_and_already_released_buttons_are_recorded_no_ops(make_bot: BotFactory, packages: Path) -> None:
    # In real time (a rehearsal never compresses a hold card's evidence window below what a person
    # needs to read it), with evidence that goes stale two seconds after the hold opens.
    write_package(packages, bake="1s", every="1s", max_age="2s")
    h = make_bot(speed=1.0)
    start(h)
    first = h.hold_card("H1")
    stale = h.hold_card("H1", version=2)  # the same message (edited if it showed v1): STALE, re-bound
    assert stale.ts == first.ts and "STALE" in card_text(stale)
    eid = h.execution().execution_id
    v1, v2 = (HoldRef(eid, "canary-25", "H1", v).encode() for v in (1, 2))
    assert button_value(stale) == v2
    h.click(first, RELEASERS[0], value=v1)
    text = ephemeral_text(h, RELEASERS[0])
    assert "Nothing changed: the evidence of H1 went stale since this button was shown (v1 -&gt; v2)" in text
    assert h.execution().open_hold == "H1"
    h.click(stale, RELEASERS[0], value=v2)
    assert "You released H1" in ephemeral_text(h, RELEASERS[0], 2)
    h.click(stale, RELEASERS[1], value=v2)
    late = ephemeral_text(h, RELEASERS[1])
    assert "H1 was already released by U01DANA at" in late
    kinds = [e["reason"] for e in entries_of(h, "release.ignored", "H1")]
    assert len(kinds) == 2 and "went stale" in str(kinds[0]) and "already released" in str(kinds[1])


def test_a_duplicate_delivery_of_one_click_has_one_effect(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    body = h.click_body("stagehold_release", button_value(card) or "", RELEASERS[0], card)
    now = int(time.time())
    assert h.post(body, ts=now).status_code == 200
    assert h.post(body, ts=now + 1).status_code == 200  # delivered again, signed again
    h.settle()
    assert len(h.fake.ephemerals(RELEASERS[0])) == 1  # the repeat is counted, not answered again
    assert len(entries_of(h, "release.granted", "H1")) == 1
    assert len(entries_of(h, "hold.released", "H1")) == 1
    assert [e["repeats"] for e in entries_of(h, "release.ignored", "H1")] == [1]


def test_two_authorities_clicking_at_once_release_once(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    bodies = [h.click_body("stagehold_release", button_value(card) or "", user, card) for user in RELEASERS]
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def send(body: str) -> None:
        barrier.wait()
        results.append(h.post(body))

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    h.fake.wait_for(lambda: all(h.fake.ephemerals(u) for u in RELEASERS), what="both answered")
    assert len(entries_of(h, "release.granted", "H1")) == 1
    assert len(entries_of(h, "hold.released", "H1")) == 1
    ignored = entries_of(h, "release.ignored", "H1")
    assert len(ignored) == 1 and "already released" in str(ignored[0]["reason"])


def test_forged_button_values_are_answered_and_change_nothing(harness: Harness) -> None:
    h = harness
    eid = start(h)
    card = h.hold_card("H1")
    before = len(h.bot.engine.entries(eid))
    h.click(card, RELEASERS[0], value='{"e":"x"}')
    assert "This is not a button stagehold issued" in ephemeral_text(h, RELEASERS[0])
    h.click(card, RELEASERS[0], value=HoldRef("CHG-9999-20260101T000000Z", "canary-25", "H1", 1).encode())
    assert "does not match any hold" in ephemeral_text(h, RELEASERS[0], 2)
    h.click(card, RELEASERS[0], value=HoldRef(eid, "full", "H1", 1).encode())
    assert "does not match any hold" in ephemeral_text(h, RELEASERS[0], 3)
    assert len(h.bot.engine.entries(eid)) == before
    assert h.bot.engine.executions() == [eid]


def test_rollback_button_opens_a_modal_and_the_reason_rolls_back(harness: Harness) -> None:
    h = harness
    eid = start(h)
    card = h.hold_card("H1")
    assert h.click(card, RESPONDER, action="rollback").status_code == 200
    opened = h.fake.wait_for(lambda: h.fake.calls_of("views.open"), what="views.open")
    view = opened[0].params["view"]
    assert view["callback_id"] == "stagehold_rollback_reason"
    assert json.loads(view["private_metadata"])["b"]["h"] == "H1"
    before = len(h.bot.engine.entries(eid))

    # A blank reason is refused inside the modal and records nothing.
    refused = h.post(h.submit_body(view, RESPONDER, "   "))
    assert refused.status_code == 200 and refused.json()["response_action"] == "errors"
    assert len(h.bot.engine.entries(eid)) == before

    # Someone without rollback authority is refused and recorded.
    h.post(h.submit_body(view, RELEASERS[0], "looks bad"))
    assert "is not a rollback authority" in ephemeral_text(h, RELEASERS[0])

    assert h.post(h.submit_body(view, RESPONDER, "settlement parity drifting")).status_code == 200
    assert "Rollback ordered" in ephemeral_text(h, RESPONDER)
    started = entries_of(h, "rollback.started")
    assert [(s["actor"], s["reason"]) for s in started] == [(RESPONDER, "settlement parity drifting")]
    h.wait_state(lambda s: s.status() == "rolled_back", 20, "rolled back")
    closed = h.fake.wait_for(
        lambda: (lambda m: m if "Closed by rollback" in card_text(m) else None)(h.fake.message(CHANNEL, card.ts)),
        what="H1 closed by rollback",
    )
    assert button_value(closed) is None and "<@U03RESP>" in card_text(closed)


def test_clicks_are_acknowledged_before_slow_slack_work(harness: Harness) -> None:
    h = harness
    start(h)
    card = h.hold_card("H1")
    h.fake.delay("usergroups.users.list", 3.2)
    h.bot.services.directory._cache.clear()
    t0 = time.monotonic()
    assert h.click(card, RELEASERS[0]).status_code == 200
    assert time.monotonic() - t0 < 2.0  # acknowledged long before the group lookup answers
    h.fake.delay("usergroups.users.list", 0.0)
    assert "You released H1" in ephemeral_text(h, RELEASERS[0])
