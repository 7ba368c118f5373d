"""Jinja2 templates: Block Kit cards (``*.json.j2``), Markdown packets (``*.md.j2``) and text cards
for the terminal (``*.txt.j2``). Values reach JSON templates only through ``|tojson``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).parent


@cache
def environment() -> Environment:
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


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
