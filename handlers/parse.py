"""Slack payloads -> command objects (pure: no I/O, no clock, no engine).

Rules:
* ``/stagehold`` text has one grammar: ``start CHANGE_ID``, ``status [CHANGE_ID] [public]``,
  ``hold CHANGE_ID REASON...``, ``rollback CHANGE_ID REASON...``, ``ledger CHANGE_ID``,
  ``report [CHANGE_ID] [public]``, ``help``.
  Anything else becomes ``Help`` with a note saying what was wrong; nothing is guessed.
* A CHANGE_ID names a change package; the listener resolves it to that change's latest
  execution. Reasons are required where the ledger needs one, and bounded in length.
* Button clicks and modal submissions become ``Click`` and ``RollbackRequest``. A button value
  stagehold did not issue leaves ``ref`` empty and says why in ``problem``; the listener answers
  the person and calls nothing.

Worked example: ``parse_command("rollback CHG-2041 parity drift on settlement")`` returns
``RollbackCommand(change_id="CHG-2041", reason="parity drift on settlement")``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers import ids

MAX_REASON = 500
_CHANGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class StartCommand:
    change_id: str


@dataclass(frozen=True)
class StatusCommand:
    change_id: str | None
    public: bool = False


@dataclass(frozen=True)
class HoldCommand:
    change_id: str
    reason: str


@dataclass(frozen=True)
class RollbackCommand:
    change_id: str
    reason: str


@dataclass(frozen=True)
class LedgerCommand:
    change_id: str


@dataclass(frozen=True)
class ReportCommand:
    change_id: str | None
    public: bool = False


@dataclass(frozen=True)
class Help:
    note: str | None = None


Command = StartCommand | StatusCommand | HoldCommand | RollbackCommand | LedgerCommand | ReportCommand | Help

USAGE = (
    ("start CHANGE_ID", "start the approved change package CHANGE_ID (initiators only)"),
    ("status [CHANGE_ID] [public]", "where an execution stands; only you see it unless you add `public`"),
    ("hold CHANGE_ID REASON", "stop progression at the next safe point (listed operators)"),
    ("rollback CHANGE_ID REASON", "order the way back (rollback authorities only)"),
    ("ledger CHANGE_ID", "verify the hash chain and attach the ledger export to the execution's thread"),
    ("report [CHANGE_ID] [public]", "checkpoint review of recent executions: holds, releases, rollbacks, lineage"),
    ("help", "this list"),
)


def _change_id(word: str, verb: str) -> str | Help:
    if not _CHANGE_ID.match(word):
        return Help(f"`{verb}` needs a change id such as CHG-2041, not `{word[:40]}`")
    return word


def _reason(words: list[str], verb: str) -> str | Help:
    reason = " ".join(words).strip()
    if not reason:
        return Help(f"`{verb}` needs a reason: `/stagehold {verb} CHANGE_ID REASON`")
    if len(reason) > MAX_REASON:
        return Help(f"the reason is {len(reason)} characters; keep it under {MAX_REASON}")
    return reason


def parse_command(text: str) -> Command:
    words = text.split()
    if not words:
        return Help()
    verb, args = words[0].lower(), words[1:]
    if verb == "help":
        return Help()
    if verb == "start":
        if len(args) != 1:
            return Help("usage: `/stagehold start CHANGE_ID`")
        cid = _change_id(args[0], verb)
        return cid if isinstance(cid, Help) else StartCommand(cid)
    if verb in ("status", "report"):
        public = bool(args) and args[-1].lower() == "public"
        rest = args[:-1] if public else args
        if len(rest) > 1:
            return Help(f"usage: `/stagehold {verb} [CHANGE_ID] [public]`")
        kind = StatusCommand if verb == "status" else ReportCommand
        if not rest:
            return kind(None, public)
        cid = _change_id(rest[0], verb)
        return cid if isinstance(cid, Help) else kind(cid, public)
    if verb == "ledger":
        if len(args) != 1:
            return Help("usage: `/stagehold ledger CHANGE_ID`")
        cid = _change_id(args[0], verb)
        return cid if isinstance(cid, Help) else LedgerCommand(cid)
    if verb in ("hold", "rollback"):
        if not args:
            return Help(f"usage: `/stagehold {verb} CHANGE_ID REASON`")
        cid = _change_id(args[0], verb)
        if isinstance(cid, Help):
            return cid
        reason = _reason(args[1:], verb)
        if isinstance(reason, Help):
            return reason
        return HoldCommand(cid, reason) if verb == "hold" else RollbackCommand(cid, reason)
    return Help(f"unknown command `{verb[:40]}`")


# ---------------------------------------------------------------- interactions


@dataclass(frozen=True)
class Click:
    """A Release or Rollback click on a hold card, and where to answer the person."""

    action: str  # release | rollback
    user: str
    ref: ids.HoldRef | None
    problem: str | None
    channel: str | None
    thread_ts: str | None
    message_ts: str | None
    trigger_id: str | None
    response_url: str | None


@dataclass(frozen=True)
class RollbackRequest:
    """The rollback modal submitted: who, the reason typed, and the hold card it came from."""

    user: str
    reason: str
    context: ids.ModalContext | None
    problem: str | None


class MalformedPayload(ValueError):
    """The payload lacks what every Slack interaction has (a user); nobody can be answered."""


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_click(body: Mapping[str, Any]) -> Click:
    user = _str(_get(body, "user", "id"))
    if user is None:
        raise MalformedPayload("the interaction names no user")
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], Mapping) else {}
    action_id = action.get("action_id")
    kind = {ids.RELEASE_ACTION: "release", ids.ROLLBACK_ACTION: "rollback"}.get(str(action_id), "")
    ref: ids.HoldRef | None = None
    problem: str | None = None
    if not kind:
        problem = "this is not a stagehold button"
    else:
        try:
            ref = ids.decode(action.get("value"))
        except ids.InvalidButton as exc:
            problem = str(exc)
    message_ts = _str(_get(body, "container", "message_ts")) or _str(_get(body, "message", "ts"))
    thread_ts = _str(_get(body, "container", "thread_ts")) or _str(_get(body, "message", "thread_ts"))
    return Click(
        action=kind or "unknown",
        user=user,
        ref=ref,
        problem=problem,
        channel=_str(_get(body, "channel", "id")) or _str(_get(body, "container", "channel_id")),
        thread_ts=thread_ts,
        message_ts=message_ts,
        trigger_id=_str(body.get("trigger_id")),
        response_url=_str(body.get("response_url")),
    )


def parse_rollback_submission(body: Mapping[str, Any]) -> RollbackRequest:
    user = _str(_get(body, "user", "id"))
    if user is None:
        raise MalformedPayload("the submission names no user")
    value = _get(body, "view", "state", "values", ids.REASON_BLOCK, ids.REASON_INPUT, "value")
    reason = value.strip() if isinstance(value, str) else ""
    context: ids.ModalContext | None = None
    problem: str | None = None
    try:
        context = ids.decode_modal(_get(body, "view", "private_metadata"))
    except ids.InvalidButton as exc:
        problem = str(exc)
    if problem is None and not reason:
        problem = "a rollback needs a reason"
    elif problem is None and len(reason) > MAX_REASON:
        problem = f"the reason is {len(reason)} characters; keep it under {MAX_REASON}"
    return RollbackRequest(user=user, reason=reason, context=context, problem=problem)
