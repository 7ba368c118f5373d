"""Cards: Block Kit messages rendered from Jinja2 templates (``templates/*.json.j2``).

Rules:
* Python builds a small view model of ready-made strings; the template arranges blocks and puts
  every value through ``|tojson``. The output is parsed with ``json.loads`` and checked against
  Block Kit's limits (``handlers.blockkit``) before anything is sent, so a card either fits or
  fails loudly in tests — it is never cut mid-structure.
* Long content is summarised, not truncated: at most ``MAX_EVIDENCE_ROWS`` evidence rows (the
  ones that are not passing first) followed by "…and K more"; stage and hold lists likewise.
  Free text (reasons, details) is shortened at a character boundary that never splits a
  mention, link or entity, and ends with "…".
* Free text is masked (``ledger.masking.mask``) and escaped for mrkdwn (``&``, ``<``, ``>``), so a
  reason cannot ping ``<!channel>`` or forge a link. Mentions are built here from validated ids.
* Cards describe; they decide nothing. Buttons bind the hold and evidence version shown; whether
  a click counts is the engine's decision at click time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from execution import policy
from execution.hold_kinds import meaning
from execution.project import Hold, RollbackState, State
from execution.transitions import Phase
from handlers import blockkit, ids
from ledger.chain import format_ts, parse_ts
from ledger.masking import mask
from templates import HERE as TEMPLATES_DIR
from templates import evidence_value, format_value, gap_text, outcome_word

MAX_EVIDENCE_ROWS = 8
MAX_LIST_LINES = 20
SECTION_TEXT = 2900  # a little under Slack's 3,000 so a suffix always fits
FIELD_TEXT = 1900
HEADER_TEXT = 150
FALLBACK_TEXT = 3000

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{1,30}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{1,30}$")

OUTCOME_ICON = {
    "pass": ":white_check_mark:",
    "hold": ":large_yellow_circle:",
    "fail": ":red_circle:",
    "no_data": ":white_circle:",
    "stale": ":hourglass:",
    "error": ":warning:",
}
# Evidence rows say what they are: a preflight check, the way back, or a checkpoint check.
ROW_KIND = {"preflight": "preflight", "readiness": "rollback readiness", "check": "verification check"}
STATUS_ICON = {
    "running": ":arrow_forward:",
    "held": ":raised_hand:",
    "narrowed": ":raised_hand:",
    "completed": ":checkered_flag:",
    "rolled_back": ":rewind:",
    "needs_human": ":sos:",
    "abandoned": ":wastebasket:",
}
STAGE_ICON = {
    "pending": ":white_circle:",
    "applying": ":arrows_counterclockwise:",
    "live": ":large_blue_circle:",
    "passed": ":white_check_mark:",
    "rolling_back": ":rewind:",
    "rolled_back": ":leftwards_arrow_with_hook:",
}


@dataclass(frozen=True)
class Card:
    """A message ready for chat.postMessage / chat.update: fallback text and checked blocks."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def fingerprint(self) -> str:
        return json.dumps({"text": self.text, "blocks": self.blocks}, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- rendering


@cache
def environment() -> Environment:
    # Our own environment over the shared template folder: JSON only, strict about missing values.
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,  # noqa: S701 - JSON output; every value goes through |tojson
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_json(name: str, **context: Any) -> Any:
    text = environment().get_template(name).render(**context)
    return json.loads(text)


def _message(name: str, **context: Any) -> Card:
    data = render_json(name, **context)
    blockkit.check_message(data["blocks"], data["text"])
    return Card(text=data["text"], blocks=data["blocks"])


UNSIGNED = ":warning: *UNSIGNED* rehearsal: started without the signed approvals a live run needs"


def marked(state: State, card: Card) -> Card:
    """``card`` marked UNSIGNED when its execution started without its approvals (rehearsals only):
    a context line closes the card and the notification text ends with it."""
    if not state.unsigned or state.package is None or len(card.blocks) >= blockkit.MAX_BLOCKS_MESSAGE:
        return card
    note = {"type": "context", "elements": [{"type": "mrkdwn", "text": UNSIGNED}]}
    return Card(text=f"{card.text} · UNSIGNED", blocks=[*card.blocks, note])


# ---------------------------------------------------------------- text helpers


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters without splitting ``<…>`` or ``&…;``."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    lt = cut.rfind("<")
    if lt != -1 and cut.find(">", lt) == -1:
        cut = cut[:lt]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 6:
        cut = cut[:amp]
    return cut.rstrip() + "…"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md(text: object, limit: int = SECTION_TEXT) -> str:
    """Free text for mrkdwn: masked, escaped, shortened."""
    return clip(escape(str(mask(str(text)))), limit)


def plain(text: object, limit: int) -> str:
    """Free text for plain_text objects: masked and shortened (plain_text is shown literally)."""
    return clip(str(mask(str(text))), limit)


def code(value: object, limit: int = 200) -> str:
    """A value shown in backticks; backticks inside would end the code span, so they are replaced."""
    return "`" + md(value, limit).replace("`", "'") + "`"


def mention(who: str) -> str:
    if _SLACK_USER.match(who):
        return f"<@{who}>"
    if _SLACK_GROUP.match(who):
        return f"<!subteam^{who}>"
    return code(who, 80)  # roles such as role:verifier, or anything else we did not issue


def mentions(users: Iterable[str] = (), groups: Iterable[str] = ()) -> str:
    parts = [mention(u) for u in users] + [mention(g) for g in groups]
    return ", ".join(parts) if parts else "nobody"


def slack_date(when: datetime | str | None) -> str:
    """A timestamp each reader sees in their own time zone, with the UTC text as fallback."""
    if when is None:
        return "—"
    if isinstance(when, str):
        try:
            when = parse_ts(when)
        except ValueError:
            return md(when, 80)  # not a ledger timestamp (e.g. "earlier"): show it as text
    iso = format_ts(when)[:19] + "Z"
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time_secs}}|{iso}>"


def _number(value: Any) -> str:
    return format_value(value) if value is not None else "—"


def _summary_line(shown: int, total: int, what: str) -> str | None:
    more = total - shown
    return f"…and {more} more {what}" if more > 0 else None


# ---------------------------------------------------------------- evidence


def evidence_rows(results: Sequence[Mapping[str, Any]], limit: int = MAX_EVIDENCE_ROWS) -> tuple[list[Any], str | None]:
    """Field lists for at most ``limit`` rows, rows that do not pass first; plus a summary line."""
    ordered = [r for r in results if r.get("outcome") != "pass"] + [r for r in results if r.get("outcome") == "pass"]
    rows = []
    for r in ordered[:limit]:
        outcome = str(r.get("outcome", "no_data"))
        icon = OUTCOME_ICON.get(outcome, ":grey_question:")
        band = f" · hold band {code(r['hold_band'], 100)}" if r.get("hold_band") else ""
        age = f"{r['age_s']:.1f}s" if isinstance(r.get("age_s"), (int, float)) else "—"
        max_age = _number(r.get("max_age_s"))
        samples = _number(r.get("samples"))
        if r.get("min_samples") is not None:
            samples += f" (min {_number(r['min_samples'])})"
        fields = [
            f"*{md(r.get('signal', '?'), 100)}* · {md(ROW_KIND.get(str(r.get('kind')), r.get('kind', '')), 40)}\n"
            f"{icon} *{outcome_word(outcome).upper()}*",
            f"*Value*\n{code(evidence_value(r))}",
            f"*Threshold*\npass {code(r.get('condition', '?'), 200)}{band}",
            f"*Age · samples*\n{age} of {max_age}s max · {samples}",
        ]
        if outcome != "pass" and r.get("detail"):
            fields.append(f"*Detail*\n{md(r['detail'], 600)}")
        rows.append(fields)
    passing = sum(1 for r in ordered[limit:] if r.get("outcome") == "pass")
    more = _summary_line(min(limit, len(ordered)), len(ordered), "readings")
    if more and passing:
        more += f" ({passing} passing)"
    if more:
        more += "; the full evidence is in the ledger (`/stagehold ledger`)"
    return rows, more


# ---------------------------------------------------------------- root and status


def next_step(state: State) -> str:
    """One line saying what happens next, for the root card and /stagehold status."""
    assert state.plan is not None
    stage = state.stage_def(state.current).id if state.current < len(state.stages) else None
    if state.phase == Phase.READY:
        return f"Next: preflight before entering `{stage}`" if stage else "Next: recording completion"
    if state.phase == Phase.APPLYING:
        return f"Applying `{stage}`; the result is read back before it counts"
    if state.phase == Phase.VERIFYING:
        return f"Verifying `{stage}` against its checks"
    if state.phase == Phase.HOLDING and state.hold is not None:
        h = state.hold
        rb = policy.rollback_authority(state)
        if not h.releasable:
            return (
                f"Held at {h.id} ({md(h.kind, 40)}); it cannot be released. "
                f"{mentions(rb['users'], rb['groups'])} may roll back"
            )
        return (
            f"Held at {h.id} ({md(h.kind, 40)}): {len(h.current_releases())} of {h.required} release(s) from "
            f"{mentions(h.releasers.get('users', ()), h.releasers.get('groups', ()))}, or a rollback by "
            f"{mentions(rb['users'], rb['groups'])}; expires {slack_date(h.expires_at)}"
        )
    if state.phase == Phase.ROLLING_BACK and state.rollback is not None:
        return f"Rolling back: undo {' → '.join(state.rollback.undo) or 'nothing'}"
    if state.phase == Phase.COMPLETED:
        return "Completed: every stage passed"
    if state.phase == Phase.ROLLED_BACK:
        why = state.rollback.reason if state.rollback else ""
        return "Rolled back" + (f": {md(why, 600)}" if why else "")
    if state.phase == Phase.NEEDS_HUMAN:
        return f"A human must take over: {md(state.outcome_reason, 1200)}"
    if state.phase == Phase.ABANDONED:
        return f"Abandoned: {md(state.outcome_reason, 1200)}"
    return md(state.phase.value, 100)


def _stage_lines(state: State) -> str:
    lines = []
    for s in state.stages[:MAX_LIST_LINES]:
        d = state.stage_def(s.index)
        marks = [f"blast {format_value(d.blast_radius)}"]
        if d.hold_before:
            marks.append("protected")
        if d.irreversible:
            marks.append("irreversible")
        focus = " ◀" if s.index == state.current and not state.terminal else ""
        lines.append(
            f"{STAGE_ICON.get(s.status, '')} `{s.id}` {s.status.replace('_', ' ')} ({', '.join(marks)}){focus}"
        )
    more = _summary_line(len(lines), len(state.stages), "stages")
    if more:
        lines.append(more)
    return clip("\n".join(lines), SECTION_TEXT)


def _root_model(state: State) -> dict[str, Any]:
    assert state.package is not None and state.plan is not None
    status = state.status()
    icon = STATUS_ICON.get(status, "")
    pkg = state.package
    if state.current < len(state.stages):
        s = state.stages[state.current]
        current = f"`{s.id}` ({s.index + 1} of {len(state.stages)}) · {s.status.replace('_', ' ')}"
    else:
        current = f"all {len(state.stages)} stages done"
    mode = "live" if state.mode == "live" else f"{md(state.mode, 20)} ×{format_value(state.speed)}"
    return {
        "text": plain(f"{pkg.id} {pkg.title}: {status.replace('_', ' ')}", FALLBACK_TEXT),
        "title": plain(f"{icon} {pkg.id} · {pkg.title}", HEADER_TEXT),
        "fields": [
            f"*State*\n{icon} *{status.replace('_', ' ').upper()}*",
            f"*Current stage*\n{current}",
            f"*Blast radius*\n{format_value(state.blast_radius_reached())} reached · limit "
            f"{format_value(pkg.scope.max_blast_radius)}",
            f"*Execution*\n`{md(state.execution_id, 200)}` · {mode}",
            f"*Started*\n{slack_date(state.started_at)} by {mention(state.initiator)}",
            f"*Window closes*\n{slack_date(state.window_closes)}",
        ],
        "next": f"*Next step* · {next_step(state)}",
        "stages": _stage_lines(state),
        "context": f"plan `{md(state.plan.name, 80)}` v{state.plan.version} · sha256 `{state.plan_sha256[:12]}…` · "
        f"this thread follows every step",
    }


def root_card(state: State) -> Card:
    """The execution's root message: edited in place as it moves; its thread carries the rest."""
    return marked(state, _message("root.json.j2", c=_root_model(state)))


def status_card(state: State, head_hash: str | None) -> Card:
    """What ``/stagehold status CHANGE_ID`` shows: the root card's facts plus the open hold."""
    c = _root_model(state)
    hold = state.hold
    c["hold"] = (
        f":raised_hand: *Open hold {hold.id}* ({md(hold.kind, 40)}) · {len(hold.current_releases())} of "
        f"{hold.required} release(s){' · *STALE evidence*' if hold.evidence_stale else ''}\n{md(hold.reason, 1500)}"
        if hold is not None
        else None
    )
    c["context"] = (
        f"ledger: {state.seq} entries · head `{(head_hash or '')[:12]}…` · denied or ignored attempts: {state.denied}"
    )
    return marked(state, _message("status.json.j2", c=c))


def status_list_card(states: Sequence[State]) -> Card:
    """``/stagehold status`` without a change id: every execution still in progress."""
    lines = []
    for st in states[:MAX_LIST_LINES]:
        assert st.package is not None
        status = st.status()
        stage = st.stage_def(st.current).id if st.current < len(st.stages) else "—"
        lines.append(
            f"{STATUS_ICON.get(status, '')} *{md(st.package.id, 80)}* `{md(st.execution_id, 200)}` · "
            f"{status.replace('_', ' ')} · stage `{stage}`"
        )
    more = _summary_line(len(lines), len(states), "executions")
    if more:
        lines.append(more)
    text = "\n".join(lines) if lines else "No execution is in progress."
    return notice(text, fallback=f"{len(states)} execution(s) in progress")


# ---------------------------------------------------------------- evidence cards


def preflight_card(stage: str, purpose: str, outcome: str, results: Sequence[Mapping[str, Any]]) -> Card:
    icon = OUTCOME_ICON.get(outcome, "")
    if purpose == "release":
        head = f"{icon} Re-check at `{md(stage, 80)}` before accepting the released checkpoint: *{outcome_word(outcome).upper()}*"
    else:
        head = f"{icon} Preflight and rollback readiness before entering `{md(stage, 80)}`: *{outcome_word(outcome).upper()}*"
    rows, more = evidence_rows(results)
    return _message(
        "evidence.json.j2",
        c={"text": plain(f"preflight {stage}: {outcome}", FALLBACK_TEXT), "head": head, "rows": rows, "more": more},
    )


def checkpoint_card(
    stage: str,
    results: Sequence[Mapping[str, Any]],
    *,
    passed: bool,
    outcome: str,
    basis: str | None = None,
    hold: str | None = None,
    consecutive: int | None = None,
    required: int | None = None,
    reaction: str | None = None,
    gap: Mapping[str, Any] | None = None,
) -> Card:
    """Checkpoint evidence: at a stage's pass, or for a verification sample that did not pass or
    that restarted the bake after a gap."""
    if passed:
        how = (
            f"accepted on the release of {md(hold or '?', 20)}"
            if basis == "released"
            else f"{consecutive} consecutive passing samples"
        )
        head = f":white_check_mark: Checkpoint `{md(stage, 80)}` passed ({how})"
        text = f"checkpoint {stage} passed"
    else:
        icon = OUTCOME_ICON.get(outcome, "")
        head = (
            f"{icon} Verification of `{md(stage, 80)}`: *{outcome_word(outcome).upper()}* → {md(reaction or '?', 20)} "
            f"({consecutive}/{required} consecutive passes)"
        )
        text = f"verification {stage}: {outcome}"
    if gap:
        head += f"\n:hourglass: {gap_text(gap)}"
        text += f"; {gap_text(gap)}"
    rows, more = evidence_rows(results)
    return _message(
        "evidence.json.j2", c={"text": plain(text, FALLBACK_TEXT), "head": head, "rows": rows, "more": more}
    )


# ---------------------------------------------------------------- holds


def _successor(state: State, hold: Hold) -> str | None:
    for other in state.holds.values():
        if other.supersedes == hold.id:
            return other.id
    later = [h for h in state.holds.values() if h.opened_at >= hold.opened_at and h.id != hold.id]
    return later[0].id if later else None


def hold_outcome(state: State, hold: Hold) -> str | None:
    """What became of a decided hold, in one line; None while it is open."""
    if hold.status == "open":
        return None
    if hold.status == "released":
        return (
            f":white_check_mark: Released by {mentions(hold.released_by)} at {slack_date(hold.released_at)} "
            f"({len(hold.released_by)} of {hold.required})"
        )
    if hold.status == "superseded":
        nxt = _successor(state, hold)
        return (
            f":arrow_heading_down: Superseded by {nxt}: see the newer card below"
            if nxt
            else ":arrow_heading_down: Superseded"
        )
    if state.phase == Phase.ABANDONED:
        return f":wastebasket: Closed: {md(state.outcome_reason, 600)}"
    if state.rollback is not None or state.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        by = state.rollback.requested_by if state.rollback else None
        return f":rewind: Closed by rollback{f' ordered by {mention(by)}' if by else ''}"
    if state.phase == Phase.NEEDS_HUMAN:
        return f":sos: Closed: a human must take over — {md(state.outcome_reason, 600)}"
    return ":heavy_minus_sign: Closed"


def hold_card(state: State, hold_id: str) -> Card:
    """A hold: why, evidence, the way back, who may release; buttons while open, outcome after."""
    hold = state.holds[hold_id]
    rb = policy.rollback_authority(state)
    outcome = hold_outcome(state, hold)
    stale = hold.evidence_stale and outcome is None
    title = f"Hold {hold.id}" + (f" · {hold.stage}" if hold.stage else "") + f" · {hold.kind}"
    if stale:
        title += " · STALE"
    current = hold.current_releases()
    releases = f"{len(current)} of {hold.required}"
    if current and len(current) < hold.required:
        releases += " — given by " + mentions([r.user for r in current])
    lapsed = [r for r in hold.releases if r.evidence_version != hold.evidence_version]
    notes = []
    if lapsed and outcome is None:
        notes.append(
            "Earlier release(s) by "
            + mentions([r.user for r in lapsed])
            + " were given on older evidence and no longer count."
        )
    if not hold.releasable and outcome is None:
        notes.append("This hold cannot be released: roll back, or let it stand while you investigate.")
    rows, more = evidence_rows(hold.results)
    ref = ids.HoldRef(state.execution_id, hold.stage, hold.id, hold.evidence_version)
    c = {
        "text": plain(f"Hold {hold.id} at {hold.stage or 'the execution'}: {hold.reason}", FALLBACK_TEXT),
        "title": plain(title, HEADER_TEXT - 4),
        "why": f"*Why* · _{md(meaning(hold.kind), 200)}_\n{md(hold.reason, SECTION_TEXT - 220)}",
        "stale": (
            f":hourglass: *STALE* · the evidence below is older than its max age (now v{hold.evidence_version}). "
            "A release re-checks live evidence before anything moves."
            if stale
            else None
        ),
        "fields": [
            f"*Releases*\n{releases}",
            f"*Who may release*\n{mentions(hold.releasers.get('users', ()), hold.releasers.get('groups', ()))}",
            f"*Expires*\n{slack_date(hold.expires_at)} (then it escalates; it never releases itself)",
            f"*Evidence version*\nv{hold.evidence_version}",
            f"*Rollback path still open*\n{md(hold.rollback_path or policy.rollback_path(state), FIELD_TEXT - 40)}",
            f"*Who may roll back*\n{mentions(rb['users'], rb['groups'])}",
        ],
        "rows": rows,
        "more": more,
        "notes": notes,
        "open": outcome is None,
        "releasable": hold.releasable,
        "outcome": outcome,
        "value": ref.encode(),
        "release_action": ids.RELEASE_ACTION,
        "rollback_action": ids.ROLLBACK_ACTION,
        "confirm_title": plain(f"Release {hold.id}?", 100),
        "confirm_text": plain(
            f"Release hold {hold.id}"
            + (f" at {hold.stage}" if hold.stage else "")
            + f" on evidence v{hold.evidence_version}. stagehold re-checks live evidence before it moves; "
            "your name is recorded in the ledger.",
            300,
        ),
        "context": f"opened {slack_date(hold.opened_at)} by {mention(hold.opened_by)}"
        + (f" · supersedes {hold.supersedes}" if hold.supersedes else ""),
    }
    return marked(state, _message("hold.json.j2", c=c))


def rollback_modal(state: State, context: ids.ModalContext) -> dict[str, Any]:
    """The form the Rollback button opens: a required reason, and who may roll back."""
    assert state.package is not None
    rb = policy.rollback_authority(state)
    explain = (
        f"Roll back *{md(state.package.id, 80)}* (`{md(state.execution_id, 200)}`) from hold {context.ref.hold}.\n"
        f"*Way back:* {md(policy.rollback_path(state), 1000)}\n"
        f"*Who may roll back:* {mentions(rb['users'], rb['groups'])}. Your name and reason go into the ledger."
    )
    view = render_json(
        "rollback_modal.json.j2",
        c={
            "callback_id": ids.ROLLBACK_MODAL,
            "metadata": context.encode(),
            "explain": explain,
            "block_id": ids.REASON_BLOCK,
            "action_id": ids.REASON_INPUT,
        },
    )
    blockkit.check_view(view)
    return dict(view)


# ---------------------------------------------------------------- rollback, packet, record


def rollback_card(state: State, rb: RollbackState) -> Card:
    if state.phase == Phase.ROLLING_BACK:
        head = f":rewind: *Rollback in progress* · {md(rb.scope, 20)}"
    elif state.phase == Phase.ROLLED_BACK:
        head = ":leftwards_arrow_with_hook: *Rolled back* · the previous tier is restored and confirmed"
    elif state.phase == Phase.NEEDS_HUMAN:
        head = f":sos: *Rollback stopped* · a human must take over: {md(state.outcome_reason, 1500)}"
    elif rb.scope == "narrow":
        head = ":leftwards_arrow_with_hook: *Narrowed* · one tier was undone; the execution is held"
    else:
        head = f":rewind: *Rollback* · {md(state.status(), 40)}"
    remaining = [s for s in rb.undo if s not in rb.done]
    c = {
        "text": plain(f"rollback ({rb.scope}): {rb.reason}", FALLBACK_TEXT),
        "head": head,
        "fields": [
            f"*Ordered by*\n{mention(rb.requested_by)} ({md(rb.trigger, 40)})",
            f"*Reason*\n{md(rb.reason or '—', FIELD_TEXT - 20)}",
            f"*Undo plan*\n{' → '.join(f'`{s}`' for s in rb.undo) or 'nothing to undo'}",
            f"*Undone and confirmed*\n{', '.join(f'`{s}`' for s in rb.done) or 'none yet'}"
            + (f"\n*Remaining* {', '.join(f'`{s}`' for s in remaining)}" if remaining else ""),
        ],
        "context": f"started {slack_date(rb.started_at)}",
    }
    return marked(state, _message("rollback.json.j2", c=c))


def packet_card(packet: Mapping[str, Any]) -> Card:
    """The intervention packet: why progression stopped and what a human must confirm next."""
    live = packet["live_now"]
    hold = packet.get("hold")
    last = live.get("last_confirmed")
    doubt = live.get("action_in_doubt")
    fields = [
        f"*Status*\n{STATUS_ICON.get(packet['status'], '')} *{str(packet['status']).replace('_', ' ').upper()}*",
        f"*Stage*\n`{md(packet.get('stage') or '—', 80)}`",
        f"*Stages live*\n{', '.join(f'`{s}`' for s in live['stages_live']) or 'none'}",
        f"*Blast radius now*\n{format_value(live['blast_radius'])}",
        "*Last confirmed*\n"
        + (
            f"`{md(last['stage'], 80)}` ({md(last['direction'], 20)}) {code(last.get('observed'), 300)}"
            if last
            else "—"
        ),
        f"*Fallback retired*\n{'yes' if live['fallback_retired'] else 'no'}",
    ]
    if doubt:
        fields.append(f"*Outcome unknown*\n`{md(doubt['stage'], 80)}` ({md(doubt['direction'], 20)})")
    not_applied = live.get("action_not_applied")
    if not_applied:
        fields.append(
            f"*Did not take effect*\n`{md(not_applied['stage'], 80)}` ({md(not_applied['direction'], 20)}), "
            f"read back {code(not_applied.get('observed'), 300)}"
        )
    bake = packet.get("bake")
    if bake:
        gaps = bake.get("gaps") or []
        fields.append(
            f"*Bake of* `{md(bake['stage'], 80)}`\n{bake['consecutive']} of {bake['required']} consecutive passes"
            + (f"\n:hourglass: {gap_text(gaps[-1])}" if gaps else "")
            + (f" (and {len(gaps) - 1} earlier)" if len(gaps) > 1 else "")
        )
    if hold:
        who = hold.get("who_may_release") or {}
        fields.append(
            f"*Hold*\n{md(hold['id'], 20)} ({md(hold['kind'], 40)}) · {md(hold['releases'], 20)} · expires "
            f"{slack_date(hold['expires_at'])}\nrelease: {mentions(who.get('users', ()), who.get('groups', ()))}"
        )
    rb = packet.get("who_may_roll_back") or {}
    rows, more = evidence_rows(packet.get("evidence") or [])
    c = {
        "text": plain(f"Intervention packet {packet['change']}: {packet['why']}", FALLBACK_TEXT),
        "title": plain(f"Intervention packet · {packet['change']}", HEADER_TEXT - 4),
        "why": f"*Why progression stopped* · {md(packet['why'], SECTION_TEXT - 30)}",
        "fields": fields[:10],
        "rollback": f"*Rollback path* · {md(packet['rollback_path'], 1500)}\n*Who may roll back* · "
        f"{mentions(rb.get('users', ()), rb.get('groups', ()))}",
        "rows": rows,
        "more": more,
        "confirm": f"*What a human must confirm next* · {md(packet['confirm_next'], 2000)}",
        "context": f"execution `{md(packet['execution'], 200)}` · ledger {packet['ledger']['entries']} entries, head "
        f"`{str(packet['ledger']['head'] or '')[:12]}…`",
    }
    return _message("packet.json.j2", c=c)


def record_card(record: Mapping[str, Any]) -> Card:
    """The final execution state record, posted when an execution completes."""
    stage_lines = []
    for s in record["stages"][:MAX_LIST_LINES]:
        line = f"{STAGE_ICON.get(s['status'], '')} `{md(s['id'], 80)}` {s['status'].replace('_', ' ')} (blast {format_value(s['blast_radius'])})"
        entered = s.get("entered_on_release")
        if entered:
            line += f" · entered on release of {md(entered['hold'], 20)} by {mentions(entered['released_by'])}"
        accepted = s.get("accepted_on_release")
        if accepted:
            line += f" · accepted on release of {md(accepted['hold'], 20)} by {mentions(accepted['released_by'])}"
        stage_lines.append(line)
    more = _summary_line(len(stage_lines), len(record["stages"]), "stages")
    if more:
        stage_lines.append(more)
    hold_lines = []
    for h in record["holds"][:MAX_LIST_LINES]:
        by = f" by {mentions(h['released_by'])}" if h["released_by"] else ""
        hold_lines.append(f"{md(h['id'], 20)} ({md(h['kind'], 40)}) {md(h['status'], 20)}{by}")
    more = _summary_line(len(hold_lines), len(record["holds"]), "holds")
    if more:
        hold_lines.append(more)
    status = str(record["status"])
    c = {
        "text": plain(f"{record['change']['id']}: {status.replace('_', ' ')}", FALLBACK_TEXT),
        "title": plain(f"{status.replace('_', ' ').capitalize()} · {record['change']['id']}", HEADER_TEXT - 4),
        "fields": [
            f"*Status*\n{STATUS_ICON.get(status, '')} *{status.replace('_', ' ').upper()}*",
            f"*Blast radius reached*\n{format_value(record['blast_radius_reached'])}",
            f"*Fallback retired*\n{'yes' if record['fallback_retired'] else 'no'}",
            f"*Started*\n{slack_date(record['started_at'])} by {mention(record['initiator'])}",
            f"*Plan*\n`{md(record['plan']['name'], 80)}` v{record['plan']['version']}",
            f"*Denied or ignored attempts*\n{len(record['denied_or_ignored_attempts'])}",
        ],
        "stages": clip("\n".join(stage_lines), SECTION_TEXT),
        "holds": clip("\n".join(hold_lines), SECTION_TEXT) if hold_lines else None,
        "context": f"execution `{md(record['execution'], 200)}` · ledger {record['ledger']['entries']} entries, head "
        f"`{str(record['ledger']['head'] or '')[:12]}…`",
    }
    return _message("record.json.j2", c=c)


# ---------------------------------------------------------------- short messages


def notice(text: str, *, context: str | None = None, fallback: str | None = None) -> Card:
    """A one-section message. ``text`` is mrkdwn built by the caller (free text already via ``md``)."""
    c = {
        "text": plain(fallback if fallback is not None else _strip_markup(text), FALLBACK_TEXT),
        "body": clip(text, SECTION_TEXT),
        "context": clip(context, SECTION_TEXT) if context else None,
    }
    return _message("notice.json.j2", c=c)


def _strip_markup(text: str) -> str:
    # Fallback text for notifications keeps mentions (so people are notified) but drops emphasis.
    return text.replace("*", "").replace("`", "")


def help_card(note: str | None, usage: Sequence[tuple[str, str]]) -> Card:
    lines = [f"`{ids.SLASH_COMMAND} {md(cmd, 100)}` — {md(what, 300)}" for cmd, what in usage]
    c = {
        "text": "stagehold help" if note is None else plain(f"stagehold: {note}", 500),
        "note": f":warning: {md(note, 500)}" if note else None,
        "body": "*stagehold* carries an approved change through staged execution with rollback holds.\n"
        + "\n".join(lines),
    }
    return _message("help.json.j2", c=c)
