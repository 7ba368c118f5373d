"""Answers to the person who clicked or typed: what the engine recorded, in one message.

Rules:
* The answer is read from the entries the engine appended for this request — granted, denied,
  ignored, opened, started — never from a guess made here.
* Answers are ephemeral (only the person sees them) and are never the only record: the ledger has
  the entry and the thread shows what matters to everyone. ``chat.postEphemeral`` is tried
  first; if Slack refuses it, the interaction's ``response_url`` is used instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from execution import events as ev
from execution.service import CommandOutcome
from handlers.cards import Card, md, slack_date

log = logging.getLogger("stagehold.slack.answers")
_E = TypeVar("_E", bound=ev.Event)


def describe(outcome: CommandOutcome) -> str:
    """One mrkdwn paragraph saying what a human command did."""
    events = [e for e in map(ev.event_of, outcome.entries) if e is not None]

    def first(cls: type[_E]) -> _E | None:
        return next((e for e in events if isinstance(e, cls)), None)

    if (granted := first(ev.ReleaseGranted)) is not None:
        hold, count, required = md(granted.hold, 20), granted.count, granted.required
        if first(ev.HoldReleased) is not None:
            return (
                f":white_check_mark: You released {hold} ({count} of {required}). stagehold re-checks "
                "live evidence before it moves on; the thread follows."
            )
        return (
            f":white_check_mark: Your release of {hold} is recorded ({count} of {required}); "
            f"{required - count} more distinct releaser(s) needed."
        )
    refused = first(ev.ReleaseDenied) or first(ev.RollbackDenied) or first(ev.HoldDenied)
    if refused is not None:
        return f":no_entry: Refused: {md(refused.reason, 1500)}. The attempt is recorded in the ledger."
    if (ignored := first(ev.ReleaseIgnored)) is not None:
        text = f":information_source: Nothing changed: {md(ignored.reason, 1500)}."
        if ignored.released_at:
            text += f" (released {slack_date(ignored.released_at)})"
        return text
    if (not_placed := first(ev.HoldIgnored)) is not None:
        return f":information_source: Nothing changed: {md(not_placed.reason, 1500)}."
    if (opened := first(ev.HoldOpened)) is not None:
        return f":raised_hand: Held at {md(opened.hold, 20)}" + (
            f" (stage `{md(opened.stage, 80)}`)." if opened.stage else "."
        )
    if first(ev.HoldRequested) is not None:
        return ":raised_hand: Hold requested: the action in flight is resolved first, then the hold opens."
    if (rollback := first(ev.RollbackStarted)) is not None:
        undo = " → ".join(f"`{md(s, 80)}`" for s in rollback.undo) or "nothing to undo"
        return f":rewind: Rollback ordered: {undo}. The thread follows each step."
    if (stuck := first(ev.ExecutionNeedsHuman)) is not None:
        return f":sos: {md(stuck.why, 1500)}"
    return "Recorded: " + ", ".join(outcome.kinds)


def ephemeral(
    client: WebClient,
    respond: Callable[..., Any] | None,
    *,
    channel: str | None,
    user: str,
    card: Card,
    thread_ts: str | None = None,
) -> None:
    """Show ``card`` to ``user`` only; fall back to the response_url if Slack refuses."""
    if channel:
        try:
            kwargs: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
            client.chat_postEphemeral(channel=channel, user=user, text=card.text, blocks=card.blocks, **kwargs)
            return
        except (SlackApiError, OSError) as exc:
            log.warning("chat.postEphemeral to %s in %s failed (%s); using the response_url", user, channel, exc)
    if respond is not None:
        try:
            respond(text=card.text, blocks=card.blocks, response_type="ephemeral", replace_original=False)
        except Exception as exc:  # the ledger holds the record; an answer lost is only an answer lost
            log.warning("response_url answer to %s failed: %s", user, exc)
