"""``stagehold report``: the checkpoint review across executions, built from the ledger alone.

Prints the review as Markdown (or JSON with ``--json``) on standard output. With ``--out DIR`` it
also writes ``DIR/report.md`` (linking the charts), ``DIR/report.json`` and three PNG charts under
``DIR/charts/``; matplotlib is loaded only then.

Rules: read-only (the ledger and the bot's Slack tables are only read); every execution's chain is
verified first, and one that does not verify is left out of the figures and named.

Exit codes: 0 the review is written; 1 (``TAMPERED``) some execution's chain does not verify (the
rest is still reported); 2 (``INVALID``) a bad option, database or output directory.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot import exits
from bot.clock import utc_now
from ledger.masking import mask

MAX_ROWS = 25
_DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|m|h|d)$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="checkpoint review: outcomes, holds, release review, rollbacks, lineage")
    p.add_argument(
        "--since",
        metavar="DATE",
        help="only executions started at or after DATE: YYYY-MM-DD (UTC), an ISO 8601 time, or a duration ago (7d, 12h)",
    )
    p.add_argument("--change", metavar="PATTERN", help="only change ids matching this shell pattern (CHG-20*)")
    p.add_argument("--json", action="store_true", help="print JSON for other tools instead of Markdown")
    p.add_argument("--out", metavar="DIR", help="also write report.md, report.json and charts/*.png into DIR")
    p.add_argument(
        "--fast-release",
        metavar="SECONDS",
        help="flag releases faster than this after the card was shown (default: STAGEHOLD_REPORT_FAST_RELEASE or 60)",
    )
    p.add_argument("--db", metavar="URL", help="database URL (default: the STAGEHOLD_DATABASE_URL setting)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from bot.commands.ledger import _Usage as Usage

    try:
        return _report(args)
    except Usage as exc:
        print(f"stagehold report: {exc}", file=sys.stderr)
        return exits.INVALID


def _report(args: argparse.Namespace) -> int:
    from bot.commands.ledger import _open_store as open_ledger
    from execution.review import Options
    from handlers.review import build_review
    from handlers.storage import hold_card_times

    now = utc_now()
    options = Options(
        since=parse_since(args.since, now) if args.since is not None else None,
        change=_pattern(args.change),
        fast_release_s=_fast_release(args.fast_release),
    )
    with open_ledger(args.db) as store:
        review, tampered = build_review(store, now, options, hold_card_times(store.engine))
    review = mask(review)
    if args.out:
        written = write_report(review, Path(args.out))
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if args.json:
        print(json.dumps(review, indent=2, ensure_ascii=False))
    else:
        print(markdown(review), end="")
    for x in review["executions"]["excluded"]:
        print(f"stagehold report: left out {x['execution']}: {x['reason']}", file=sys.stderr)
    return exits.TAMPERED if tampered else exits.OK


def markdown(review: dict[str, Any], charts: dict[str, str] | None = None) -> str:
    from templates import render

    return render("report.md.j2", r=review, charts=charts or {}, rows=MAX_ROWS)


def write_report(review: dict[str, Any], out: Path) -> list[Path]:
    """report.md (with the charts linked), report.json and the charts; the paths written."""
    from bot.charts import write_charts
    from bot.commands.ledger import _Usage as Usage

    try:
        out.mkdir(parents=True, exist_ok=True)
        charts = write_charts(review, out / "charts")
        links = {name: path.relative_to(out).as_posix() for name, path in charts.items()}
        md_path, json_path = out / "report.md", out / "report.json"
        md_path.write_text(markdown(review, links), encoding="utf-8")
        json_path.write_text(json.dumps(review, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise Usage(f"{out}: cannot write: {exc.strerror or exc}") from None
    return [md_path, json_path, *charts.values()]


# ---------------------------------------------------------------- options


def parse_since(text: str, now: datetime) -> datetime:
    """``2026-11-23`` (midnight UTC), ``2026-11-23T09:00:00Z`` (naive means UTC), or ``7d`` ago."""
    from bot.commands.ledger import _Usage as Usage
    from execution.conditions import parse_duration

    value = text.strip()
    if _DURATION.match(value):
        return now - timedelta(seconds=parse_duration(value))
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        when = datetime.fromisoformat(value)
    except ValueError:
        raise Usage(
            f"--since: expected YYYY-MM-DD, an ISO 8601 time or a duration such as 7d, not {text[:40]!r}"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _pattern(text: str | None) -> str | None:
    from bot.commands.ledger import _Usage as Usage

    if text is None:
        return None
    if not text.strip() or len(text) > 200:
        raise Usage("--change: give a change id or a shell pattern such as CHG-20*")
    return text.strip()


def _fast_release(text: str | None) -> float:
    from bot.commands.ledger import _Usage as Usage

    if text is None:
        from bot.settings import SettingsError, load_settings

        try:
            return load_settings().report_fast_release_s
        except SettingsError as exc:
            raise Usage(str(exc)) from None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise Usage(f"--fast-release: expected a number of seconds (0 or more), not {text[:40]!r}")
    return value
