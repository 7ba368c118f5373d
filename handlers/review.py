"""The checkpoint review, read from the ledger and summarised for Slack.

Rules:
* The figures are computed by ``execution.review`` (pure). This module reads what they need:
  every execution's entries, each checked against its hash chain; the caller adds when Slack
  received each hold card (``handlers.storage.hold_card_times``). The command line and the bot
  read alike.
* An execution whose chain does not verify is left out of every figure and named in the review;
  a review must never rest on tampered entries.
* People are shown by user id in code, not as mentions: a weekly digest must not ping everyone
  it names.
* The Slack card summarises and never cuts mid-structure: counts and medians in one fields
  section, then at most ``MAX_LINES`` lines per list followed by "…and K more"; the whole review
  (every hold, release and rollback) is in ``stagehold report --json``. The card is checked
  against Block Kit's limits like every other card.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from execution.review import DEFAULT_FAST_RELEASE_S, STATUSES, Options, review
from handlers import blockkit
from handlers.cards import STATUS_ICON, Card, code, md, plain, render_json, slack_date
from ledger.chain import verify_chain
from ledger.entry import Entry
from ledger.store import CorruptEntry, LedgerStore
from templates import format_duration, format_percent

MAX_LINES = 8
LIST_TEXT = 2900


@dataclass(frozen=True)
class ReportSettings:
    """The review shown in Slack: how far back it looks and what counts as a too-fast release."""

    period_s: float = 7 * 86400.0
    fast_release_s: float = DEFAULT_FAST_RELEASE_S


@dataclass(frozen=True)
class Ledgers:
    """Every execution's verified entries, and the executions left out (with why)."""

    entries: list[tuple[str, list[Entry]]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return bool(self.excluded)


def read_ledgers(store: LedgerStore) -> Ledgers:
    ledgers = Ledgers()
    for execution_id in store.executions():
        try:
            entries = store.read(execution_id)
        except CorruptEntry as exc:
            ledgers.excluded.append({"execution": execution_id, "reason": f"entry {exc.seq} is corrupt: {exc.reason}"})
            continue
        result = verify_chain(entries, execution_id)
        if not result.ok:
            ledgers.excluded.append(
                {
                    "execution": execution_id,
                    "reason": f"chain does not verify at seq {result.first_bad_seq}: {result.reason}",
                }
            )
            continue
        ledgers.entries.append((execution_id, entries))
    return ledgers


def build_review(
    store: LedgerStore, now: datetime, options: Options, shown: Mapping[tuple[str, str], datetime]
) -> tuple[dict[str, Any], bool]:
    """The review over the whole ledger, and whether any execution was left out as tampered.

    ``shown``: when Slack received each hold card (``handlers.storage.hold_card_times``).
    """
    ledgers = read_ledgers(store)
    return review(ledgers.entries, now, options, shown, ledgers.excluded), ledgers.tampered


def period_words(seconds: float) -> str:
    """``604800`` -> "7 days", ``86400`` -> "1 day", ``43200`` -> "12 hours"."""
    for size, unit in ((86400, "day"), (3600, "hour")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return format_duration(seconds)


def period_card(
    store: LedgerStore,
    shown: Mapping[tuple[str, str], datetime],
    now: datetime,
    settings: ReportSettings,
    change: str | None = None,
) -> Card:
    """The review of executions started within the last ``settings.period_s``: the digest and /stagehold report."""
    options = Options(
        since=now - timedelta(seconds=settings.period_s), change=change, fast_release_s=settings.fast_release_s
    )
    result, _ = build_review(store, now, options, shown)
    title = f"Checkpoint review{' · ' + change if change else ''} · last {period_words(settings.period_s)}"
    return review_card(result, title)


# ---------------------------------------------------------------- the Slack card


def _lines(lines: Sequence[str], total: int, what: str) -> str:
    shown = list(lines[:MAX_LINES])
    if total > len(shown):
        shown.append(f"…and {total - len(shown)} more {what}; all of them: `stagehold report --json`")
    text = "\n".join(shown)
    return text if len(text) <= LIST_TEXT else text[: LIST_TEXT - 1].rsplit("\n", 1)[0] + "\n…"


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _period(r: Mapping[str, Any]) -> str:
    since = r["filters"]["since"]
    scope = f"executions started since {slack_date(since)}" if since else "every execution"
    change = r["filters"]["change"]
    return scope + (f" · change `{md(change, 80)}`" if change else "")


def review_model(r: Mapping[str, Any], title: str) -> dict[str, Any]:
    """Ready-made strings for ``report.json.j2``: the template only arranges them."""
    ex, o, h, rel, rb, e = (r[k] for k in ("executions", "outcomes", "holds", "releases", "rollbacks", "evidence"))
    t = o["totals"]
    outcomes = " · ".join(
        f"{STATUS_ICON.get(k, '')} {t[k]} {k.replace('_', ' ')}" for k in t if t[k] or k in ("completed", "held")
    )
    fast_icon = ":warning: " if rel["fast"] else ""
    lineage = e["lineage_pct"]
    lineage_icon = ":white_check_mark:" if lineage == 100.0 else ":x:" if lineage is not None else ""
    fields = [
        f"*Executions*\n{ex['total']} ({ex['live']} live, {_n(ex['rehearsal'], 'rehearsal')})",
        f"*Outcomes*\n{outcomes}",
        f"*Holds*\n{h['total']} · time in hold median {format_duration(h['time_in_hold_s']['median'])}, "
        f"p90 {format_duration(h['time_in_hold_s']['p90'])} · {h['expired']} expired, {h['escalated']} escalated",
        f"*Card → release*\n{_n(rel['total'], 'release')} · median {format_duration(rel['latency_s']['median'])}, "
        f"p90 {format_duration(rel['latency_s']['p90'])}",
        f"*Possibly unreviewed*\n{fast_icon}{rel['fast']} of {rel['total']} released within "
        f"{format_duration(rel['fast_release_s'])} ({format_percent(rel['fast_share'])})",
        f"*Released on weak evidence*\n{rel['degraded']} degraded · {rel['expired_evidence']} after it expired",
        f"*Rollbacks*\n{rb['total']} ({rb['by_trigger']} by trigger, {rb['by_person']} by a person) · "
        f"{rb['verified']} verified by read-back · {rb['failed']} failed",
        f"*Breach → rollback sent*\nmedian {format_duration(rb['breach_to_sent_s']['median'])}, "
        f"p90 {format_duration(rb['breach_to_sent_s']['p90'])}",
        f"*Lineage*\n{lineage_icon} {e['linked']} of {e['transitions']} transitions linked"
        + (f" ({lineage:g}%)" if lineage is not None else ""),
        f"*Readings*\n{e['readings']} · {e['stale']} stale · {e['no_data']} missing · {e['error']} errors",
    ]
    lists: list[tuple[str, Sequence[Mapping[str, Any]], Callable[[Mapping[str, Any]], str], str]] = [
        ("*Releases by person*", rel["by_person"], _person_line, "people"),
        ("*Per change*", o["by_change"], _change_line, "changes"),
        (":warning: *Possibly unreviewed releases*", rel["flagged"], _release_line, "releases"),
        (
            ":rewind: *Rollbacks not verified*",
            [x for x in rb["items"] if not x["verified"]],
            _rollback_line,
            "rollbacks",
        ),
        (":x: *Transitions with missing links*", e["unlinked"], _unlinked_line, "transitions"),
        (":x: *Left out: the ledger does not verify*", ex["excluded"], _excluded_line, "executions"),
    ]
    sections = [
        f"{heading}\n" + _lines([line(x) for x in items], len(items), what)
        for heading, items, line, what in lists
        if items
    ]
    basis = rel["shown_basis"]
    context = (
        f"{_period(r)} · generated {slack_date(r['generated_at'])} · card shown = Slack delivery for "
        f"{basis['slack']} release(s), hold opening for {basis['opened']} · charts: `stagehold report --out DIR`"
    )
    return {
        "text": plain(
            f"{title}: {ex['total']} executions, {rel['fast']} of {rel['total']} releases possibly unreviewed, "
            f"lineage {lineage if lineage is not None else '—'}%",
            3000,
        ),
        "title": plain(title, 150),
        "fields": fields,
        "sections": sections,
        "context": context,
    }


def _person_line(p: Mapping[str, Any]) -> str:
    return (
        f"{code(p['user'], 40)} {p['releases']} ({format_percent(p['share'])}) · median "
        f"{format_duration(p['latency_s']['median'])} · {p['fast']} within the threshold"
    )


def _change_line(c: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{c[k]} {k.replace('_', ' ')}" for k in STATUSES if c.get(k))
    return f"*{md(c['change'], 80)}* · {c['executions']} run(s): {counts}"


def _release_line(x: Mapping[str, Any]) -> str:
    basis = "from Slack delivery" if x["basis"] == "slack" else "from hold opening"
    return (
        f"`{md(x['execution'], 80)}` {md(x['hold'], 20)} at `{md(x['stage'] or '—', 60)}` ({md(x['kind'], 30)}) · "
        f"{code(x['user'], 40)} after {format_duration(x['latency_s'])} ({basis})"
    )


def _rollback_line(x: Mapping[str, Any]) -> str:
    return (
        f"`{md(x['execution'], 80)}` · {md(x['outcome'].replace('_', ' '), 30)} · "
        f"{x['steps_confirmed']} of {len(x['undo'])} steps read back"
    )


def _unlinked_line(x: Mapping[str, Any]) -> str:
    missing = ", ".join(m.replace("_", " ") for m in x["missing"])
    return (
        f"`{md(x['execution'], 80)}` seq {x['seq']} `{md(x['stage'] or '—', 60)}` ({x['direction']}): missing {missing}"
    )


def _excluded_line(x: Mapping[str, Any]) -> str:
    return f"`{md(x['execution'], 80)}`: {md(x['reason'], 300)}"


def review_card(r: Mapping[str, Any], title: str) -> Card:
    data = render_json("report.json.j2", c=review_model(r, title))
    blockkit.check_message(data["blocks"], data["text"])
    return Card(text=data["text"], blocks=data["blocks"])
