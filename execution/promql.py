"""What a PromQL query reads, found by parsing it (the ``promql-parser`` library), never by regex.

Rules:
* A query that does not parse is refused with the parser's message; so is one whose top level is
  a range vector or a string (an instant query answers a vector or a scalar).
* A *live selector* is a vector selector without ``offset`` or ``@``: it reads the newest data.
  Selectors with ``offset``/``@`` read history on purpose (a baseline), so they neither make a
  signal fresh nor count as data about the change.
* A query must read at least one live selector: its age is found from that data, and a query
  reading none (``vector(1)``, only baselines) could never show that the source stopped.
* The *window* is the longest look-back behind any live selector: its range (``rate(x[5m])``:
  5 min) plus every enclosing subquery's range and offset. A sample evaluated at ``t`` may hold
  data from ``t - window`` on; a plain selector (window 0) is judged by its raw sample's time.

Worked example: ``sum(rate(a{svc="x"}[1m])) / sum(rate(b[5m] offset 1d))`` -> live selectors
``['a{svc="x"}']``, window 60 s (``b`` is a baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser


class PromQLError(ValueError):
    """The query does not parse or cannot be read as evidence; the text says why."""


@dataclass(frozen=True)
class QueryShape:
    live_selectors: tuple[str, ...]  # each as PromQL text, without duplicates, in query order
    window_s: float  # the longest look-back behind a live selector, in seconds


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else 0.0


def _has_offset_or_at(selector: Any) -> bool:
    offset = getattr(selector, "offset", None)
    return getattr(selector, "at", None) is not None or (offset is not None and _seconds(offset) != 0.0)


def _walk(node: Any, outer_s: float, found: dict[str, float]) -> None:
    """Collect live selectors with the look-back each is read over (``outer_s`` from subqueries)."""
    if isinstance(node, promql_parser.VectorSelector):
        if not _has_offset_or_at(node):
            text = str(node)
            found[text] = max(found.get(text, 0.0), outer_s)
    elif isinstance(node, promql_parser.MatrixSelector):
        selector = node.vector_selector
        if not _has_offset_or_at(selector):
            text = str(selector)
            found[text] = max(found.get(text, 0.0), outer_s + _seconds(node.range))
    elif isinstance(node, promql_parser.SubqueryExpr):
        if node.at is None and _seconds(node.offset) == 0.0:
            _walk(node.expr, outer_s + _seconds(node.range), found)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            _walk(arg, outer_s, found)
    elif isinstance(node, promql_parser.BinaryExpr):
        _walk(node.lhs, outer_s, found)
        _walk(node.rhs, outer_s, found)
    elif isinstance(node, promql_parser.AggregateExpr):
        if node.param is not None:
            _walk(node.param, outer_s, found)
        _walk(node.expr, outer_s, found)
    elif isinstance(node, (promql_parser.UnaryExpr, promql_parser.ParenExpr)):
        _walk(node.expr, outer_s, found)
    # Number and string literals read no data.


def parse_query(text: str) -> Any:
    """The parsed expression; ``PromQLError`` with the parser's message when it does not parse."""
    try:
        return promql_parser.parse(text)
    except (ValueError, TypeError) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise PromQLError(f"PromQL does not parse: {message}") from None


def analyse(text: str) -> QueryShape:
    """The live selectors and window of an instant query (see the module rules)."""
    expr = parse_query(text)
    if isinstance(expr, (promql_parser.MatrixSelector, promql_parser.SubqueryExpr)):
        raise PromQLError("the query answers a range vector; wrap it in a function such as rate() or last_over_time()")
    if isinstance(expr, promql_parser.StringLiteral):
        raise PromQLError("the query answers a string, not a number")
    found: dict[str, float] = {}
    _walk(expr, 0.0, found)
    if not found:
        raise PromQLError(
            "the query reads no series without offset/@: its age cannot be found from the data, so a "
            "stopped source would go unnoticed; read at least one current series"
        )
    return QueryShape(tuple(found), max(found.values()))


def timestamp_query(selector: str) -> str:
    """The query answering the time of the newest raw sample of each series ``selector`` matches."""
    return f"timestamp({selector})"
