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


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
