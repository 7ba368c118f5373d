"""Jinja2 templates: Block Kit cards (``*.json.j2``), Markdown packets (``*.md.j2``) and text cards
for the terminal (``*.txt.j2``). Values reach JSON templates only through ``|tojson``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execution.hold_kinds import meaning

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent


@cache
def environment() -> Environment:
    # Imported on first use: the formatting helpers below serve commands that render nothing.
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(HERE)),
        autoescape=False,  # noqa: S701 - outputs are JSON (values go through |tojson), Markdown or text, never HTML
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmtval"] = format_value
    env.filters["duration"] = format_duration
    env.filters["percent"] = format_percent
    env.filters["evalue"] = evidence_value
    env.filters["outcome"] = outcome_word
    env.filters["when"] = format_time
    env.filters["compactjson"] = compact_json
    env.filters["holdmeaning"] = meaning
    env.filters["gaptext"] = gap_text
    return env


def format_value(value: object) -> str:
    """Evidence values for humans: short floats, booleans as words, None as 'no data'."""
    if value is None:
        return "no data"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_duration(seconds: float | None) -> str:
    """Durations for humans: ``0.42 s``, ``3.3 s``, ``12 s``, ``4 min 10 s``, ``2 h 5 min``, ``3 d 4 h``; None as "—"."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s:.2g} s"
    if s < 9.95:
        return f"{s:.1f} s"
    if round(s) < 60:
        return f"{round(s)} s"
    for unit, size, small, small_size in (("min", 60, "s", 1), ("h", 3600, "min", 60), ("d", 86400, "h", 3600)):
        whole = round(s / small_size)  # in the smaller unit, so "1 h 60 min" cannot happen
        big, rest = divmod(whole, size // small_size)
        if unit == "d" or big < (60 if unit == "min" else 24):
            return f"{big} {unit} {rest} {small}" if rest else f"{big} {unit}"
    raise AssertionError("unreachable")


def format_percent(share: float | None) -> str:
    """A share from 0 to 1 as a whole percentage (one decimal below 100 when not whole); None as "—"."""
    if share is None:
        return "—"
    pct = 100.0 * share
    return f"{pct:.0f}%" if pct == round(pct) else f"{pct:.1f}%"


def evidence_value(result: Mapping[str, Any]) -> str:
    """The value column of one evidence row, agreeing with its outcome.

    A read that failed shows ``error`` (not "no data": something answered badly or not at all);
    no value shows ``no data``; otherwise the value as ``format_value`` writes it.
    """
    if result.get("outcome") == "error" and result.get("value") is None:
        return "error"
    return format_value(result.get("value"))


def outcome_word(outcome: object) -> str:
    """Outcomes as words (``no_data`` -> ``no data``), the same wherever a person reads them."""
    return str(outcome).replace("_", " ")


def format_time(value: datetime | str | None) -> str:
    """A ledger time for people: ``2026-11-29 21:56:01 UTC`` (to the second, always UTC)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            return value  # already words ("earlier") or another form: show as given
    else:
        when = value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_age(seconds: float) -> str:
    """A duration for people, two units at most: ``42s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def compact_json(value: object) -> str:
    """JSON on one line for logs and cards (never a Python repr): ``{"legacy": 95, "tokenizer": 5}``."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def gap_text(gap: Mapping[str, Any]) -> str:
    """A bake gap (``verification.sampled`` body ``gap``) in words."""
    return (
        f"streak restarted: {float(gap['since_previous_s']):.1f} s since the previous sample "
        f"(longer than {float(gap['limit_s']):g} s)"
    )


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
