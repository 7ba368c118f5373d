"""The scheduled checkpoint-review digest: the review of recent executions, posted to a channel.

Rules:
* One APScheduler job (``digest``) on the bot's scheduler, with a cron trigger read from
  ``STAGEHOLD_REPORT_SCHEDULE`` (UTC; default Mondays 09:00) and posted to
  ``STAGEHOLD_REPORT_CHANNEL``; no channel, no job.
* Day-of-week numbers are refused: cron counts 0 as Sunday, APScheduler as Monday, so a number
  would silently post on the wrong day. Names (``mon``, ``mon-fri``) mean the same everywhere.
* The digest is derived from the ledger and is not history: a failed post is logged and the next
  run (or ``/stagehold report``) shows the same figures. It never touches an execution, so Slack
  being slow or down delays nothing but the digest itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from execution.model import Clock
from handlers.review import ReportSettings, period_card
from ledger.store import LedgerStore

log = logging.getLogger("stagehold.digest")

JOB_ID = "digest"
DEFAULT_SCHEDULE = "0 9 * * mon"


class ScheduleError(ValueError):
    """The schedule is not a five-field cron expression APScheduler reads the way cron does."""


def parse_schedule(text: str) -> CronTrigger:
    """``"0 9 * * mon"`` (minute hour day month day-of-week, UTC) -> a cron trigger."""
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"expected five fields (minute hour day month day-of-week), e.g. '{DEFAULT_SCHEDULE}', not {text[:60]!r}"
        )
    if any(ch.isdigit() for ch in fields[4].split("/")[0]):
        raise ScheduleError(
            f"name the day of week (mon, tue, ..., sun; ranges like mon-fri), not {fields[4]!r}: "
            "cron counts 0 as Sunday and APScheduler as Monday"
        )
    try:
        return CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as exc:
        raise ScheduleError(f"{text[:60]!r}: {exc}") from None


class Digest:
    """Builds the review card for the configured period and posts it to the digest channel."""

    def __init__(
        self,
        store: LedgerStore,
        client: WebClient,
        channel: str,
        settings: ReportSettings,
        clock: Clock,
        shown: Callable[[], Mapping[tuple[str, str], datetime]],
        claim: Callable[[datetime], bool] | None = None,
    ) -> None:
        self.store = store
        # Replicas all fire the same schedule; the one that claims the slot in the database posts.
        self.claim = claim
        self.client = client
        self.channel = channel
        self.settings = settings
        self.clock = clock
        self.shown = shown

    def post(self) -> str:
        """Post the digest now; returns the message ``ts``. Raises on a Slack error."""
        card = period_card(self.store, self.shown(), self.clock(), self.settings)
        response = self.client.chat_postMessage(
            channel=self.channel, text=card.text, blocks=card.blocks, unfurl_links=False, unfurl_media=False
        )
        return str(response["ts"])

    def run(self) -> None:
        """The scheduled job: post, and log (never raise) when Slack refuses or is unreachable."""
        if self.claim is not None and not self.claim(self.clock()):
            log.info("checkpoint review digest to %s is posted by another replica", self.channel)
            return
        try:
            ts = self.post()
        except (SlackApiError, OSError) as exc:
            log.warning("checkpoint review digest to %s was not posted: %s", self.channel, exc)
            return
        log.info("checkpoint review digest posted to %s (ts %s)", self.channel, ts)

    def schedule(self, scheduler: BaseScheduler, trigger: CronTrigger) -> Job:
        return scheduler.add_job(self.run, trigger, id=JOB_ID, replace_existing=True, coalesce=True)
