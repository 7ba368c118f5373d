"""Reading a channel back: was a message whose outcome is unknown posted after all?

Every message stagehold posts carries ``metadata`` (``event_type: stagehold_entry`` with the
execution id and the message's reference), so a post recorded only as an intent — the process
died between Slack's answer and the database write, or the answer was lost on the way — is found
by reading the channel from just before the intent: ``conversations.history`` for the root card,
``conversations.replies`` for a message in a thread, both with ``include_all_metadata`` (scopes
``channels:history`` / ``groups:history``).

A read that fails for a reason a retry can fix is raised (``Transient``): nothing is posted until
the answer is known. A read Slack refuses outright (e.g. the history scope was not granted) is
logged and answered "not found", so the message is posted: a possible duplicate, never a loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient

from handlers.outbox import Permanent
from handlers.storage import Intent

log = logging.getLogger("stagehold.slack.readback")

EVENT_TYPE = "stagehold_entry"
MAX_PAGES = 20
# How far before the intent to read: Slack's clock and ours may disagree a little.
SKEW_S = 300.0


def carries(message: dict[str, Any], execution_id: str, ref: str) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return bool(
        metadata.get("event_type") == EVENT_TYPE
        and payload.get("execution") == execution_id
        and payload.get("ref") == ref
    )


def find_posted(client: WebClient, intent: Intent, call: Callable[..., Any]) -> str | None:
    """The ``ts`` of the message ``intent`` describes, if Slack has it; ``call`` sorts Slack's errors."""
    oldest = f"{max(0.0, intent.posted_after - SKEW_S):.6f}"
    if intent.thread_ts is None:
        method: Callable[..., Any] = client.conversations_history
        params: dict[str, Any] = {"channel": intent.channel, "oldest": oldest, "limit": 200}
    else:
        method = client.conversations_replies
        params = {"channel": intent.channel, "ts": intent.thread_ts, "oldest": oldest, "limit": 200}
    cursor: str | None = None
    try:
        for _ in range(MAX_PAGES):
            page = call(method, include_all_metadata=True, **params, **({"cursor": cursor} if cursor else {}))
            for message in page.get("messages") or []:
                if carries(message, intent.execution_id, intent.ref):
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None
    except Permanent as exc:
        log.warning(
            "slack: cannot read %s back to check %s %s (%s); posting it, possibly twice",
            intent.channel,
            intent.execution_id,
            intent.ref,
            exc,
        )
    return None
