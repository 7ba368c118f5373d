"""Validation problems in stagehold's voice: what was expected, with an example.

Rules:
* Every message says what was expected and, where the field has one, shows an example from its
  ``Field(examples=[...])`` written as YAML (``blast_radius: 5``) — the example the reference shows.
* pydantic's own wording never reaches a person: messages are built from the error's type, the
  schema and the value given, never from pydantic's text ("Input should ...", "Field required").
  Only messages our own validators raise (``ValueError``) are passed on, as written.
* An unknown field gets "did you mean" when a known one is close; otherwise the known ones.

Worked example: ``blast_radius: five`` in a stage gives
``expected a number ≥ 0, e.g. `blast_radius: 5`; got the text 'five'``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic_core import ErrorDetails

from execution.conditions import CONDITION_PATTERN, DURATION_PATTERN
from execution.contract.schema import resolve, walk
from execution.contract.source import PathKey

# A short label (for the reference's type column) and words (for messages) for every pattern the
# models use; a test fails when a model adds a pattern not listed here.
PATTERNS: dict[str, tuple[str, str]] = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$": (
        "name",
        "a name of letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)",
    ),
    r"^[A-Z0-9][A-Z0-9]{1,30}$": ("Slack id", "a Slack id in capitals and digits, like U01DANA or S0CAB"),
    r"^/[^\s]*$": ("path", "a path that starts with '/' and has no spaces"),
    r"^[0-9a-f]{64}$": ("SHA-256", "a SHA-256 digest of 64 lowercase hex digits (`stagehold digest PLAN` prints it)"),
    r"^[CG][A-Z0-9]{2,30}$": ("channel id", "a Slack channel id, like C0CHANGES"),
    r"^https?://[^\s]+$": ("url", "an http:// or https:// url without spaces"),
    r"^[^\x00-\x1f]+$": ("file path", "a file path without control characters"),
    r"^[A-Za-z0-9_.:-]{1,100}$": (
        "HAProxy name",
        "an HAProxy backend or server name of letters, digits, '_', '.', ':' or '-'",
    ),
    r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$": ("header name", "an HTTP header name, like X-Scope-OrgID"),
    r"^[^\r\n\x00]{0,2000}$": ("header value", "a header value on one line (no line breaks or NUL)"),
    r"^(/[^\s]+|tcp://[^\s/]+:\d{1,5})$": (
        "socket",
        "a UNIX socket path like /run/haproxy/admin.sock, or tcp://HOST:PORT",
    ),
    CONDITION_PATTERN: ("condition", "a condition such as '< 0.01', '== true' or 'between 0.98 and 1.02'"),
    DURATION_PATTERN: ("duration", "a duration such as '30s', '5m' or '2h' (units ms, s, m, h, d)"),
}
PATTERN_WORDS = {pattern: words for pattern, (_, words) in PATTERNS.items()}
FORMAT_WORDS = {
    "condition": PATTERN_WORDS[CONDITION_PATTERN],
    "duration": PATTERN_WORDS[DURATION_PATTERN],
    "date-time": "a timestamp with a time zone, like 2026-11-28T22:00:00Z",
}
YAML11_BOOLEANS = frozenset(
    w for word in ("yes", "no", "on", "off", "y", "n") for w in (word, word.capitalize(), word.upper())
)
_PLAIN = re.compile(r"^[A-Za-z0-9_/][A-Za-z0-9 _./@+-]*$")
# What the YAML 1.2 core schema would read as something other than text.
_NOT_TEXT = re.compile(
    r"^(?:true|True|TRUE|false|False|FALSE|null|Null|NULL|~|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' when a choice is close to ``word``, else ''."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def flow(value: Any) -> str:
    """``value`` as one line of YAML (flow style), quoting text only where YAML would misread it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value) and not _NOT_TEXT.match(value) and value == value.strip()
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, default=str)


def expected(root: dict[str, Any], node: dict[str, Any]) -> str:
    """What a schema node accepts, in words."""
    node = resolve(root, node)
    if "const" in node:
        return f"exactly {flow(node['const'])}"
    if "enum" in node:
        return "one of " + ", ".join(flow(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "boolean":
        return "true or false"
    if kind in ("integer", "number"):
        words = "a whole number" if kind == "integer" else "a number"
        if "minimum" in node:
            words += f" ≥ {flow(node['minimum'])}"
        return words
    if kind == "string":
        if node.get("format") in FORMAT_WORDS:
            return FORMAT_WORDS[node["format"]]
        if "pattern" in node:
            return PATTERN_WORDS.get(node["pattern"], f"text matching {node['pattern']}")
        return "text"
    if kind == "array":
        return "a list, each item " + expected(root, node.get("items", {}))
    if kind == "object" or "properties" in node:
        if node.get("properties"):
            return "a mapping of fields (" + ", ".join(node["properties"]) + ")"
        if node.get("patternProperties"):
            value = next(iter(node["patternProperties"].values()))
            return "a mapping of names, each to " + expected(root, value)
        return "a mapping"
    return "a value"


def given(value: Any) -> str:
    """What was given, in words."""
    if isinstance(value, bool):
        return f"the boolean {flow(value)}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (int, float)):
        return f"the number {flow(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _example(name: str | None, field: dict[str, Any]) -> str:
    examples = field.get("examples") or []
    if name is None or not examples:
        return ""
    text = f"{name}: {flow(examples[0])}"
    return f", e.g. `{text}`" if len(text) <= 160 else ""


def explain(error: ErrorDetails, root: dict[str, Any]) -> tuple[PathKey, str]:
    """The path (pydantic's internal parts dropped) and the message for one validation error."""
    raw = tuple(p for p in error["loc"] if isinstance(p, (str, int)))
    is_key = "[key]" in raw
    # Drop pydantic's internal tags (e.g. "function-after[...]", "[key]") from paths.
    loc: PathKey = tuple(p for p in raw if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    name, field, node = walk(root, loc)
    example = _example(name, field)

    if kind == "extra_forbidden":
        parent = walk(root, loc[:-1])[2]
        known = list(parent.get("properties", {}))
        unknown = str(loc[-1]) if loc else "?"
        hint = did_you_mean(unknown, known) or (f"; the fields here are {', '.join(known)}" if known else "")
        return loc, f"unknown field '{unknown}'{hint}"
    if kind == "missing":
        return loc, f"required field is missing; expected {expected(root, node)}{example}"
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", "")) or "is not valid"
        return loc, text + ("" if "e.g." in text else example)
    if is_key:
        parent = walk(root, loc[:-1])[2] if loc else node
        pattern = next(iter(parent.get("patternProperties", {})), "")
        words = PATTERN_WORDS.get(pattern, "a name")
        return loc, f"{given(value)} cannot be used as a name here; expected {words}"
    if kind in ("bool_type", "bool_parsing"):
        note = ""
        if isinstance(value, str) and value in YAML11_BOOLEANS:
            note = f" (YAML 1.2 reads {value!r} as text, not as a boolean)"
        return loc, f"expected true or false, e.g. `{name or 'flag'}: true`; got {given(value)}{note}"
    if kind == "literal_error" and name in ("stagehold", "kind"):
        return loc, f"expected {expected(root, node)}{example}; got {given(value)}"

    words = expected(root, node)
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        unit = "item" if kind in ("too_short", "too_long") else "character"
        limit = ctx.get("min_length" if "short" in kind else "max_length")
        bound = "at least" if "short" in kind else "at most"
        plural = "" if limit == 1 else "s"
        return loc, f"expected {words} with {bound} {limit} {unit}{plural}{example}"
    return loc, f"expected {words}{example}; got {given(value)}"
