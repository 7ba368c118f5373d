"""The checkpoint review in Slack: ``/stagehold report`` through the real Bolt app, and the digest.

Commands arrive as signed requests; the bot's Web API client talks to the fake Slack, whose
message timestamps follow the wall clock here (as Slack's do), so the review can measure from
the moment Slack received each hold card. The digest job is driven through the bot's own
APScheduler: its trigger is asked for fire times directly, and the job is run by moving its next
run time to now — nothing waits for Monday.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.digest import JOB_ID, ScheduleError, parse_schedule
from execution.review import review
from handlers.blockkit import MAX_BLOCKS_MESSAGE, MAX_FIELDS, MAX_SECTION_TEXT, check_message
from handlers.parse import Help, ReportCommand, parse_command
from handlers.review import MAX_LINES, ReportSettings, review_card
from tests.slack.conftest import CHANGE, INITIATOR, OUTSIDER, RELEASERS, BotFactory, Harness
from tests.slack.fake_slack import FakeSlack, Message

REVIEW_CHANNEL = "C0REVIEW"


def command(h: Harness, text: str, user: str = OUTSIDER) -> dict[str, Any]:
    response, name = h.slash(text, user)
    assert response.status_code == 200 and response.text == ""
    answer = h.answer(name)
    check_message(answer["blocks"], answer["text"])
    answer["shown"] = json.dumps(answer["blocks"], ensure_ascii=False)
    return answer


def released_once(h: Harness) -> None:
    """Start the change, release its first protected hold from the card at once, wait for the next."""
    command(h, f"start {CHANGE}", INITIATOR)
    h.click(h.hold_card("H1"), RELEASERS[0])
    h.wait_state(lambda s: s.open_hold == "H2", what="canary-25 baked and the hold before 'full'")


def fields(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """The review's fields section as title -> value."""
    section = next(b for b in blocks if b["type"] == "section" and "fields" in b)
    return dict(f["text"].split("\n", 1) for f in (x for x in section["fields"]))


def test_report_command_measures_from_the_cards_slack_delivery(harness: Harness) -> None:
    h = harness
    h.fake.wall_clock_ts = True
    released_once(h)
    answer = command(h, "report")
    assert answer["response_type"] == "ephemeral"
    blocks = answer["blocks"]
    assert blocks[0]["text"]["text"] == "Checkpoint review · last 7 days"
    shown = fields(blocks)
    assert shown["*Executions*"] == "1 (0 live, 1 rehearsal)"
    assert shown["*Possibly unreviewed*"] == ":warning: 1 of 1 released within 1 min (100%)"
    assert shown["*Lineage*"].startswith(":white_check_mark: 2 of 2 transitions linked (100%)")
    assert "card shown = Slack delivery for 1 release(s), hold opening for 0" in answer["shown"]
    assert f"`{RELEASERS[0]}` 1 (100%)" in answer["shown"]
    assert f"<@{RELEASERS[0]}>" not in answer["shown"]  # named, never pinged

    public = command(h, f"report {CHANGE} public")
    assert public["response_type"] == "in_channel"
    assert public["blocks"][0]["text"]["text"] == f"Checkpoint review · {CHANGE} · last 7 days"
    other = command(h, "report CHG-9999")
    assert fields(other["blocks"])["*Executions*"] == "0 (0 live, 0 rehearsals)"


def test_report_usage_is_answered_in_the_acknowledgement(harness: Harness) -> None:
    response, _ = harness.slash("report CHG-1 CHG-2", OUTSIDER)
    assert "usage: `/stagehold report [CHANGE_ID] [public]`" in response.text
    response, _ = harness.slash("help", OUTSIDER)
    assert "/stagehold report [CHANGE_ID] [public]" in response.text


def digest_posts(fake: FakeSlack) -> list[Message]:
    return fake.roots(REVIEW_CHANNEL)  # type: ignore[no-any-return]


def test_the_digest_is_scheduled_weekly_and_posted_by_the_scheduler(make_bot: BotFactory) -> None:
    h = make_bot(
        digest_channel=REVIEW_CHANNEL,
        digest_trigger=parse_schedule("0 9 * * mon"),
        report=ReportSettings(period_s=7 * 86400, fast_release_s=30),
    )
    h.fake.wall_clock_ts = True
    job = h.bot.driver.scheduler.get_job(JOB_ID)
    assert job is not None
    sunday = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert job.trigger.get_next_fire_time(None, sunday) == monday
    assert job.trigger.get_next_fire_time(monday, monday) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    released_once(h)
    assert digest_posts(h.fake) == []

    job.modify(next_run_time=datetime.now(UTC))  # the scheduler runs it now, in its own pool
    (posted,) = h.fake.wait_for(lambda: digest_posts(h.fake), 15, "the digest in the review channel")
    check_message(posted.blocks, posted.text)
    assert posted.blocks[0]["text"]["text"] == "Checkpoint review · last 7 days"
    assert fields(posted.blocks)["*Possibly unreviewed*"] == ":warning: 1 of 1 released within 30 s (100%)"
    call = next(c for c in h.fake.calls_of("chat.postMessage") if c.params.get("channel") == REVIEW_CHANNEL)
    assert call.params.get("unfurl_links") is False and call.params.get("unfurl_media") is False
    # After running, the job waits for the next Monday 09:00 UTC.
    next_run = h.bot.driver.scheduler.get_job(JOB_ID).next_run_time
    assert next_run.weekday() == 0 and (next_run.hour, next_run.minute) == (9, 0)


def test_a_digest_slack_refuses_is_logged_not_raised(make_bot: BotFactory, caplog: pytest.LogCaptureFixture) -> None:
    h = make_bot(digest_channel=REVIEW_CHANNEL, digest_trigger=parse_schedule("0 9 * * mon"))
    assert h.bot.digest is not None
    h.fake.fail("chat.postMessage", 500, times=3)
    with caplog.at_level(logging.WARNING, logger="stagehold.digest"):
        h.bot.digest.run()
    assert "checkpoint review digest to C0REVIEW was not posted" in caplog.text
    assert digest_posts(h.fake) == []
    h.bot.digest.run()
    assert len(digest_posts(h.fake)) == 1


def test_replicas_post_each_scheduled_digest_once(make_bot: BotFactory) -> None:
    a, b = (
        make_bot(owner=name, digest_channel=REVIEW_CHANNEL, digest_trigger=parse_schedule("0 9 * * mon"))
        for name in ("replica-a", "replica-b")
    )
    assert a.bot.digest is not None and b.bot.digest is not None
    a.bot.digest.run()
    b.bot.digest.run()  # the same schedule firing on the other replica
    assert len(digest_posts(a.fake)) == 1


def test_no_channel_no_digest(harness: Harness) -> None:
    assert harness.bot.digest is None
    assert harness.bot.driver.scheduler.get_job(JOB_ID) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 9 * * 1", "name the day of week (mon, tue, ..., sun"),
        ("0 9 * *", "expected five fields"),
        ("61 9 * * mon", "'61 9 * * mon'"),
        ("0 9 * * funday", "'0 9 * * funday'"),
    ],
)
def test_schedules_are_checked(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    assert message in str(caught.value)


def test_schedules_read_as_cron_does() -> None:
    friday = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    every_weekday = parse_schedule("30 7 * * mon-fri")
    assert every_weekday.get_next_fire_time(None, friday) == datetime(2026, 11, 30, 7, 30, tzinfo=UTC)
    assert parse_schedule("0 */6 * * *").get_next_fire_time(None, friday) == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_a_large_review_stays_within_block_kit_limits() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    r = review([], now)
    long = "CHG-" + "9" * 60
    r["releases"]["total"] = 400
    r["releases"]["fast"] = 400
    r["releases"]["flagged"] = [
        {
            "execution": f"{long}-{i}",
            "hold": f"H{i}",
            "stage": "s" * 60,
            "kind": "protected",
            "user": f"U{i:08d}",
            "latency_s": 1.5,
            "basis": "slack",
        }
        for i in range(400)
    ]
    r["releases"]["by_person"] = [
        {"user": f"U{i:08d}", "releases": 5, "share": 0.0125, "latency_s": {"median": 2.0}, "fast": 5}
        for i in range(80)
    ]
    r["outcomes"]["by_change"] = [
        {"change": f"{long}{i}", "executions": 3, **dict.fromkeys(r["outcomes"]["totals"], 1)} for i in range(90)
    ]
    r["executions"]["excluded"] = [{"execution": f"{long}{i}", "reason": "x" * 500} for i in range(40)]
    r["evidence"]["unlinked"] = [
        {"execution": f"{long}{i}", "seq": i, "stage": "s", "direction": "apply", "missing": ["release", "actor"]}
        for i in range(70)
    ]
    card = review_card(r, "Checkpoint review · last 7 days")
    check_message(card.blocks, card.text)
    assert len(card.blocks) <= MAX_BLOCKS_MESSAGE
    section = next(b for b in card.blocks if "fields" in b)
    assert len(section["fields"]) <= MAX_FIELDS
    texts = [b["text"]["text"] for b in card.blocks if b["type"] == "section" and "text" in b]
    assert all(len(t) <= MAX_SECTION_TEXT for t in texts)
    flagged = next(t for t in texts if "Possibly unreviewed releases" in t)
    assert flagged.count("\n") == MAX_LINES + 1 and "…and 392 more releases" in flagged


def test_report_commands_parse() -> None:
    assert parse_command("report") == ReportCommand(None, False)
    assert parse_command("report public") == ReportCommand(None, True)
    assert parse_command("REPORT CHG-2041 public") == ReportCommand("CHG-2041", True)
    assert parse_command("report <!here>") == Help("`report` needs a change id such as CHG-2041, not `<!here>`")
