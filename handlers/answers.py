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
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from execution import events as ev
from execution.service import CommandOutcome
from handlers.cards import Card, md, notice, slack_date

log = logging.getLogger("stagehold.slack.answers")


def describe(outcome: CommandOutcome) -> str:
    """One mrkdwn paragraph saying what a human command did."""
    by_kind = {e.kind: e for e in outcome.entries}
    if ev.RELEASE_GRANTED in by_kind:
        b = by_kind[ev.RELEASE_GRANTED].body
        count, required = int(b.get("count", 1)), int(b.get("required", 1))
        if ev.HOLD_RELEASED in by_kind:
            return (
                f":white_check_mark: You released {md(b['hold'], 20)} ({count} of {required}). stagehold re-checks "
                "live evidence before it moves on; the thread follows."
            )
        return (
            f":white_check_mark: Your release of {md(b['hold'], 20)} is recorded ({count} of {required}); "
            f"{required - count} more distinct releaser(s) needed."
        )
    for kind in (ev.RELEASE_DENIED, ev.ROLLBACK_DENIED, ev.HOLD_DENIED):
        if kind in by_kind:
            return f":no_entry: Refused: {md(by_kind[kind].body.get('reason', ''), 1500)}. The attempt is recorded in the ledger."
    if ev.RELEASE_IGNORED in by_kind:
        b = by_kind[ev.RELEASE_IGNORED].body
        text = f":information_source: Nothing changed: {md(b.get('reason', ''), 1500)}."
        if b.get("released_at"):
            text += f" (released {slack_date(b['released_at'])})"
        return text
    if ev.HOLD_IGNORED in by_kind:
        return f":information_source: Nothing changed: {md(by_kind[ev.HOLD_IGNORED].body.get('reason', ''), 1500)}."
    if ev.HOLD_OPENED in by_kind:
        b = by_kind[ev.HOLD_OPENED].body
        return (
            f":raised_hand: Held at {md(b['hold'], 20)}"
            + (f" (stage `{md(b['stage'], 80)}`)" if b.get("stage") else "")
            + "."
        )
    if ev.HOLD_REQUESTED in by_kind:
        return ":raised_hand: Hold requested: the action in flight is resolved first, then the hold opens."
    if ev.ROLLBACK_STARTED in by_kind:
        b = by_kind[ev.ROLLBACK_STARTED].body
        undo = " → ".join(f"`{md(s, 80)}`" for s in b.get("undo", [])) or "nothing to undo"
        return f":rewind: Rollback ordered: {undo}. The thread follows each step."
    if ev.EXECUTION_NEEDS_HUMAN in by_kind:
        return f":sos: {md(by_kind[ev.EXECUTION_NEEDS_HUMAN].body.get('why', ''), 1500)}"
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


def text_card(text: str) -> Card:
    return notice(text)
