"""Slack failures never stop, corrupt or reorder an execution; a restarted bot continues its thread."""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any

import pytest

from bot.bootstrap import open_store
from bot.clock import utc_now
from execution.service import Engine
from ledger.sql import SqlLedgerStore
from tests.fakes import example
from tests.slack.conftest import CHANGE, CHANNEL, INITIATOR, RELEASERS, BotFactory, Harness, card_text
from tests.slack.fake_slack import Call


def posted(h: Harness) -> list[Call]:
    return h.fake.calls_of("chat.postMessage")


def payload(call: Call) -> dict[str, Any]:
    meta = call.params.get("metadata") or {}
    return dict(meta.get("event_payload") or {})


def assert_in_ledger_order(h: Harness) -> None:
    """Every message was delivered once, in the order of the ledger entries that caused it."""
    calls = posted(h)
    refs = [payload(c)["ref"] for c in calls]
    assert len(refs) == len(set(refs)), "a message was posted twice"
    seqs = [payload(c)["seq"] for c in calls if payload(c)["seq"]]
    assert seqs == sorted(seqs), seqs
    assert calls[0].params.get("thread_ts") is None  # the root card comes first
    root_ts = h.root().ts
    assert all(c.params.get("thread_ts") == root_ts for c in calls[1:])


def test_a_429_storm_delays_cards_but_not_the_execution(harness: Harness) -> None:
    h = harness
    storm_s = 4.0
    h.fake.storm("chat.postMessage", seconds=storm_s, retry_after=1)
    began = time.time()
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    # The engine reaches the first protected hold while Slack refuses every post.
    h.wait_state(lambda s: s.open_hold == "H1", 10, "the first hold")
    opened = next(e.ts.timestamp() for e in h.bot.engine.entries(h.execution().execution_id) if e.kind == "hold.opened")
    assert opened - began < storm_s
    # After the storm everything arrives, once each, in ledger order, in one thread.
    card = h.hold_card("H1", timeout=20)
    assert card.thread_ts == h.root().ts
    assert h.bot.notifier.wait_idle(20)
    assert_in_ledger_order(h)
    first_delivered = min(c.at for c in posted(h))
    assert first_delivered >= began + storm_s - 0.1 and opened < first_delivered
    rejected = h.fake.calls_of("chat.postMessage", ok=False)
    assert len(rejected) >= 2 and all(c.status == 429 for c in rejected)
    # Retry-After was honoured: after each 429 the next try came a second later, not sooner.
    times = [c.at for c in h.fake.calls_of("chat.postMessage", ok=None)]
    assert all(b - a >= 0.9 for a, b in pairwise(times) if a < began + storm_s)
    assert h.bot.notifier.stats()["retried"] >= 2


def test_server_errors_are_retried_with_backoff(harness: Harness) -> None:
    h = harness
    h.bot.notifier.outbox.backoff_base = 0.05
    h.fake.fail("chat.postMessage", 500, times=2)
    h.fake.fail("chat.update", 503, times=2)
    _, name = h.slash(f"start {CHANGE}", INITIATOR)
    h.answer(name)
    h.hold_card("H1")
    assert h.bot.notifier.wait_idle(20)
    assert [c.status for c in h.fake.calls_of("chat.postMessage", ok=None)][:3] == [500, 500, 200]
    assert len(h.fake.calls_of("chat.update", ok=False)) == 2
    assert_in_ledger_order(h)
    assert "HELD" in card_text(h.fake.message(CHANNEL, h.root().ts))


def test_a_restarted_bot_continues_the_same_thread(make_bot: BotFactory) -> None:
    first = make_bot()
    _, name = first.slash(f"start {CHANGE}", INITIATOR)
    first.answer(name)
    first.click(first.hold_card("H1"), RELEASERS[0])
    h2_card = first.hold_card("H2")
    root = first.root()
    assert first.bot.notifier.wait_idle(10)

    # Slack goes away; a release still lands in the ledger, then the process stops.
    first.fake.storm("chat.postMessage", seconds=60)
    first.fake.storm("chat.update", seconds=60)
    first.click(h2_card, RELEASERS[0])
    first.wait_state(lambda s: s.holds["H2"].status == "released", what="H2 released")
    make_bot.stop(first)
    first.fake.calm()

    # A new process on the same database: the same thread, the same root card, nothing repeated.
    second = make_bot()
    second.wait_state(lambda s: s.open_hold == "H3", 30, "the irreversible stage's hold")
    card = second.hold_card("H3", timeout=20)
    assert card.thread_ts == root.ts
    assert len(second.fake.roots(CHANNEL)) == 1
    h2_after = second.fake.wait_for(
        lambda: (lambda m: m if "Released by <@U01DANA>" in card_text(m) else None)(
            second.fake.message(CHANNEL, h2_card.ts)
        ),
        what="the H2 card edited in place",
    )
    assert h2_after.ts == h2_card.ts
    updates = [c for c in second.fake.calls_of("chat.update") if c.params["ts"] == root.ts]
    assert updates, "the restarted bot edits the original root card"
    assert second.bot.notifier.wait_idle(20)
    assert_in_ledger_order(second)


def test_a_bot_starting_on_finished_command_line_executions_reads_none_of_them(
    make_bot: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rehearsals run from the command line earlier, all finished: no Slack thread, nothing to drive.
    store = open_store(make_bot.db_url)
    engine = Engine(store, lambda state: None, utc_now, "stagehold-cli")  # type: ignore[arg-type, return-value]
    finished = []
    for _ in range(3):
        state = engine.start(example(), INITIATOR, (), mode="rehearsal", speed=60.0, exclusive=False)
        engine.abandon(state.execution_id, INITIATOR, "rehearsed from the command line")
        finished.append(state.execution_id)
    store.close()
    read: list[str] = []
    original = SqlLedgerStore.read

    def counted(self: SqlLedgerStore, execution_id: str, after_seq: int = 0) -> Any:
        read.append(execution_id)
        return original(self, execution_id, after_seq)

    monkeypatch.setattr(SqlLedgerStore, "read", counted)
    h = make_bot()
    time.sleep(1.5)  # the Slack sweep (every 0.5 s here), the driver's resume and first sweep
    assert h.bot.notifier.wait_idle(10)
    assert not set(finished) & set(read)
    # A change started from Slack meanwhile is read and posted as ever.
    _, name = h.slash(f"start {CHANGE}", INITIATOR)
    h.answer(name)
    h.hold_card("H1")
    assert any(eid not in finished for eid in read)
