"""``/stagehold`` — the slash command listener.

Rules:
* ``ack()`` comes first, always within Slack's 3 seconds: help (and a malformed command, which
  gets help with a note) is answered in the acknowledgement itself, since parsing is pure and
  instant; every other command is acknowledged empty and answered through the response_url
  once the engine has recorded what happened.
* A CHANGE_ID resolves to that change's latest execution. The listener checks nothing itself:
  initiator, operator and rollback authority are the engine's decisions, taken from the package
  and the ledger, and a refusal is answered with the engine's reason.
* ``status`` and ``report`` are ephemeral unless ``public`` is given. ``ledger`` verifies the hash chain and
  attaches the export (JSON Lines) to the execution's thread, where the audit trail belongs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from execution.approvals import refusal
from execution.commands import StartRefused
from execution.contract import InvalidChange
from handlers import cards, ids
from handlers.answers import describe
from handlers.cards import Card, md, notice
from handlers.packages import PackageNotFound, find_package
from handlers.parse import (
    USAGE,
    Command,
    Help,
    HoldCommand,
    LedgerCommand,
    ReportCommand,
    RollbackCommand,
    StartCommand,
    StatusCommand,
    parse_command,
)
from handlers.review import period_card
from handlers.services import Services
from ledger.chain import export_line, verify_chain
from ledger.masking import mask_text

log = logging.getLogger("stagehold.slack.commands")

MAX_PROBLEMS_SHOWN = 10


def register(app: App, services: Services) -> None:
    @app.command(ids.SLASH_COMMAND)
    def on_stagehold(ack: Callable[..., Any], body: dict[str, Any], respond: Any, client: WebClient) -> None:
        handle(services, ack, body, respond, client)


def help_card(note: str | None = None) -> Card:
    return cards.help_card(note, USAGE)


def handle(
    services: Services, ack: Callable[..., Any], body: Mapping[str, Any], respond: Any, client: WebClient
) -> None:
    command = parse_command(str(body.get("text") or ""))
    if isinstance(command, Help):
        card = help_card(command.note)
        ack(text=card.text, blocks=card.blocks)
        return
    ack()
    user = str(body.get("user_id") or "")
    try:
        card, public = run(services, command, user, client)
    except Exception:
        log.exception("/stagehold %s failed", type(command).__name__)
        card, public = notice(":warning: stagehold could not complete that command; the error is logged."), False
    respond(
        text=card.text,
        blocks=card.blocks,
        response_type="in_channel" if public else "ephemeral",
        replace_original=False,
    )


def _not_found(change_id: str) -> Card:
    return notice(
        f":grey_question: No execution of `{md(change_id, 80)}` is known. Start one with `/stagehold start {md(change_id, 80)}`."
    )


def run(services: Services, command: Command, user: str, client: WebClient) -> tuple[Card, bool]:
    """Carry out one parsed command; return the answer and whether it is public."""
    engine = services.engine
    if isinstance(command, StartCommand):
        return _start(services, command, user), False
    if isinstance(command, StatusCommand):
        if command.change_id is None:
            states = [engine.load(eid) for eid in engine.active()]
            return cards.status_list_card(states), command.public
        state = services.latest(command.change_id)
        if state is None:
            return _not_found(command.change_id), False
        entries = engine.entries(state.execution_id)
        return cards.status_card(state, entries[-1].hash if entries else None), command.public
    if isinstance(command, (HoldCommand, RollbackCommand)):
        state = services.latest(command.change_id)
        if state is None or state.package is None:
            return _not_found(command.change_id), False
        groups = services.groups_of(user, state.package)
        if isinstance(command, HoldCommand):
            outcome = engine.hold(state.execution_id, user, command.reason, groups)
        else:
            outcome = engine.rollback(state.execution_id, user, command.reason, groups)
        services.wake(state.execution_id)
        return notice(describe(outcome), context=f"execution `{md(state.execution_id, 200)}`"), False
    if isinstance(command, LedgerCommand):
        return _ledger(services, command, client), False
    if isinstance(command, ReportCommand):
        shown = services.threads.hold_card_times() if services.threads is not None else {}
        card = period_card(engine.store, shown, engine.clock(), services.report, command.change_id)
        return card, command.public
    return help_card(), False


def _start(services: Services, command: StartCommand, user: str) -> Card:
    try:
        change = find_package(services.packages_dir, command.change_id)
        report = services.approvals(change)
    except PackageNotFound as exc:
        return notice(f":grey_question: {md(str(exc), 1000)}")
    except InvalidChange as exc:
        # Paths relative to the packages directory: the server's layout is not the reader's business.
        prefix = str(services.packages_dir.resolve()) + "/"
        shown = [f"• {md(str(p).replace(prefix, ''), 400)}" for p in exc.problems[:MAX_PROBLEMS_SHOWN]]
        more = len(exc.problems) - len(shown)
        if more > 0:
            shown.append(f"…and {more} more; run `stagehold validate` on the package for all of them")
        return notice(f":x: `{md(command.change_id, 80)}` does not validate:\n" + "\n".join(shown))
    why = refusal(report)
    if services.start_mode == "live" and why is not None:
        return notice(f":no_entry: Not started: {md(change.package.id, 80)} {md(why, 1000)}")
    groups = services.groups_of(user, change.package)
    try:
        state = services.engine.start(
            change,
            user,
            groups,
            mode=services.start_mode,
            speed=services.start_speed,
            approvals=report.record() if report is not None else None,
        )
    except StartRefused as exc:
        return notice(f":no_entry: Not started: {md(str(exc), 1000)}")
    services.wake(state.execution_id)
    return notice(
        f":rocket: Started `{md(state.execution_id, 200)}`: {md(change.package.title, 200)}. "
        f"Follow it in <#{change.package.channel}>.",
        context=f"plan `{md(change.plan.name, 80)}` v{change.plan.version} · sha256 `{change.plan_sha256[:12]}…`",
    )


def _ledger(services: Services, command: LedgerCommand, client: WebClient) -> Card:
    state = services.latest(command.change_id)
    if state is None or state.package is None:
        return _not_found(command.change_id)
    entries = services.engine.entries(state.execution_id)
    result = verify_chain(entries, state.execution_id)
    verdict = (
        f":white_check_mark: Hash chain verified: {result.checked} entries, head `{result.head_hash[:16]}…`"
        if result.ok
        else f":x: Hash chain broken at seq {result.first_bad_seq}: {md(result.reason, 500)}"
    )
    # Entries were masked before they were written; the export must hash exactly as stored.
    export = "".join(export_line(e) for e in entries)
    thread = services.threads.thread(state.execution_id) if services.threads is not None else None
    channel = thread.channel if thread is not None else state.package.channel
    try:
        client.files_upload_v2(
            channel=channel,
            thread_ts=thread.root_ts if thread is not None and thread.root_ts else None,
            content=export,
            filename=f"{state.execution_id}.ledger.jsonl",
            title=f"Ledger export of {state.execution_id}",
            initial_comment=f"Ledger export of `{state.execution_id}` ({result.checked} entries, "
            f"{'verified' if result.ok else 'BROKEN at seq ' + str(result.first_bad_seq)}). "
            f"Check it offline with `stagehold ledger verify-file`.",
        )
        where = f"The export is attached in <#{channel}>."
    except Exception as exc:
        # The attachment is a convenience; the chain check is the answer. An upload fails in more
        # ways than SlackApiError and OSError (slack_sdk raises SlackRequestError for an upload
        # URL's non-200 answer, and a reply without upload_url or files breaks inside it), and
        # none of them may cost the person the verdict.
        log.warning(
            "ledger export upload for %s failed: %s: %s", state.execution_id, type(exc).__name__, mask_text(str(exc))
        )
        where = "The export could not be attached; use `stagehold ledger export` on the server."
    return notice(f"{verdict}\n{where}", context=f"execution `{md(state.execution_id, 200)}`")
