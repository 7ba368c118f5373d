"""Release and Rollback buttons on hold cards, and the rollback reason modal.

Rules:
* ``ack()`` first. A modal submission is validated before its ack (parsing is pure and instant),
  because the ack is the only way to show an error inside the modal.
* A click is bound to the execution, stage, hold and evidence version its button carried; the
  engine decides at click time — from the package and the ledger — whether it counts: authority
  (users and the user groups Slack says the person is in), two-person control, staleness, single
  use. Denied and ignored clicks are recorded by the engine and answered to the person only.
  Duplicate deliveries and double clicks reach the engine twice; the second is a recorded no-op.
  A person's further clicks on the same Release button shortly after are counted, not decided
  again, and recorded together in one entry (``handlers.repeats``), with no ephemeral each.
* A button value stagehold did not issue, or one naming an execution the ledger does not hold,
  is answered and goes no further: there is nothing to record it against.
* After any effect the execution is woken (``Driver.wake``); the thread and the hold card are
  updated by the notifier from the ledger, never from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from execution import events as ev
from execution.commands import button_binds
from execution.project import State
from handlers import cards, ids
from handlers.answers import describe, ephemeral
from handlers.cards import md, notice
from handlers.parse import Click, MalformedPayload, parse_click, parse_rollback_submission
from handlers.repeats import ClickKey
from handlers.services import Services

log = logging.getLogger("stagehold.slack.actions")


def register(app: App, services: Services) -> None:
    @app.action(ids.RELEASE_ACTION)
    def on_release(ack: Callable[..., Any], body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        handle_release(services, body, client, respond)

    @app.action(ids.ROLLBACK_ACTION)
    def on_rollback(ack: Callable[..., Any], body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        handle_rollback_click(services, body, client, respond)

    @app.view(ids.ROLLBACK_MODAL)
    def on_rollback_reason(ack: Callable[..., Any], body: dict[str, Any], client: WebClient) -> None:
        handle_rollback_submission(services, ack, body, client)


def _answer(client: WebClient, respond: Any, click: Click, text: str) -> None:
    ephemeral(client, respond, channel=click.channel, user=click.user, thread_ts=click.thread_ts, card=notice(text))


def _bound_state(services: Services, click: Click) -> State | None:
    """The execution the button names, if the ledger holds it and the button matches its hold."""
    assert click.ref is not None
    state = services.engine.load(click.ref.execution)
    return state if button_binds(state, click.ref.hold, click.ref.stage) else None


def _parse(body: Mapping[str, Any]) -> Click | None:
    try:
        return parse_click(body)
    except MalformedPayload as exc:
        log.warning("interaction without a user ignored: %s", exc)
        return None


def _clicked(
    services: Services, body: Mapping[str, Any], client: WebClient, respond: Any
) -> tuple[Click, State] | None:
    """The click and the execution its button is bound to; anything else is answered here."""
    click = _parse(body)
    if click is None:
        return None
    if click.ref is None:
        _not_ours(client, respond, click)
        return None
    state = _bound_state(services, click)
    if state is None:
        _unbound(client, respond, click)
        return None
    return click, state


def _not_ours(client: WebClient, respond: Any, click: Click) -> None:
    _answer(
        client,
        respond,
        click,
        f":warning: This is not a button stagehold issued ({md(click.problem or '', 200)}); nothing was done.",
    )


def _unbound(client: WebClient, respond: Any, click: Click) -> None:
    _answer(client, respond, click, ":warning: This button does not match any hold stagehold knows; nothing was done.")


def handle_release(services: Services, body: Mapping[str, Any], client: WebClient, respond: Any) -> None:
    click = _parse(body)
    if click is None:
        return
    ref = click.ref
    if ref is None:
        _not_ours(client, respond, click)
        return
    first = None
    if services.repeats is not None:
        first = services.repeats.arrive(ClickKey(click.user, ref.execution, ref.hold, ref.version))
        if first is None:
            return  # counted into the window its first click opened
    collapsible = False
    try:
        # One read of the ledger decides it all: the button's binding, the person's authority, the release.
        outcome = services.engine.release_click(
            ref.execution,
            ref.hold,
            ref.version,
            ref.stage,
            click.user,
            lambda package: services.groups_of(click.user, package),
        )
        if outcome is not None:
            collapsible = bool({ev.RELEASE_GRANTED, ev.RELEASE_IGNORED} & set(outcome.kinds))
    finally:
        if first is not None:
            first.decided(collapsible)
    if outcome is None:
        _unbound(client, respond, click)
        return
    if outcome.effective:
        services.wake(ref.execution)
    _answer(client, respond, click, describe(outcome))


def handle_rollback_click(services: Services, body: Mapping[str, Any], client: WebClient, respond: Any) -> None:
    clicked = _clicked(services, body, client, respond)
    if clicked is None:
        return
    click, state = clicked
    assert click.ref is not None
    if click.trigger_id is None:
        _answer(
            client,
            respond,
            click,
            ":warning: Slack sent no trigger to open the form; use `/stagehold rollback CHANGE_ID REASON`.",
        )
        return
    view = cards.rollback_modal(state, ids.ModalContext(click.ref, click.channel, click.thread_ts))
    try:
        client.views_open(trigger_id=click.trigger_id, view=view)
    except (SlackApiError, OSError) as exc:
        log.warning("views.open for %s failed: %s", click.user, exc)
        _answer(
            client,
            respond,
            click,
            ":warning: The rollback form could not be opened; use `/stagehold rollback CHANGE_ID REASON`.",
        )


def handle_rollback_submission(
    services: Services, ack: Callable[..., Any], body: Mapping[str, Any], client: WebClient
) -> None:
    try:
        request = parse_rollback_submission(body)
    except MalformedPayload as exc:
        log.warning("rollback form without a user ignored: %s", exc)
        ack()
        return
    if request.problem is not None or request.context is None:
        ack(
            response_action="errors",
            errors={ids.REASON_BLOCK: request.problem or "this form was not issued by stagehold"},
        )
        return
    ack()
    context = request.context
    state = services.engine.load(context.ref.execution)
    if state.plan is None or state.package is None:
        text = ":warning: This form names no execution stagehold knows; nothing was done."
    else:
        groups = services.groups_of(request.user, state.package)
        outcome = services.engine.rollback(context.ref.execution, request.user, request.reason, groups)
        if outcome.effective:
            services.wake(context.ref.execution)
        text = describe(outcome)
    ephemeral(client, None, channel=context.channel, user=request.user, thread_ts=context.thread_ts, card=notice(text))
