"""What the sandbox derives from a plan it is taught: values for its signals, and the effect of
each of its actions on the read-back that confirms it. No I/O here.

Rules:
* A signal's *healthy* value satisfies every ``pass`` condition the plan sets on it (checks,
  preflight and rollback-readiness gates); *degraded* lies in a check's ``hold`` band but outside
  its ``pass`` band; *failing* satisfies no ``pass`` or ``hold`` band. A boolean signal is healthy
  at the value its gates ask for and failing at the other; it has no degraded value.
* Signal faults (``signal:NAME=MODE``): ``fail``, ``degraded`` (needs a ``hold`` band),
  ``no-data`` (the field, or the series, is absent), ``stale`` (needs a source time: a Prometheus
  signal, or an HTTP signal with ``time_field``; the sample is older than ten times ``max_age``),
  ``error`` (the read fails).
* An action the plan names, when applied, makes its read-back's ``expect`` true: what an action
  sets is what its read-back sees. Stage actions and rollback steps alike.
* Prometheus queries are recognised by their text (whitespace ignored): a signal's ``query`` or
  ``samples``, any expression containing one of them, a vector selector taken from one of them,
  and ``timestamp(...)`` of any of these, which answers the sample time.

Worked example: checks ``{signal: error_rate, pass: "< 0.01", hold: "< 0.02"}`` give
``healthy 0.002``, ``degraded 0.015`` and ``failing 0.03``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from execution.conditions import Condition, parse_condition, parse_duration
from execution.contract.models import Action, Confirm, Plan, Signal
from execution.sandbox_faults import MODES

DEFAULT_SAMPLES = 1000
_INF = math.inf

# ---------------------------------------------------------------- sets of numbers


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and (self.lo_open or self.hi_open))


Span = tuple[Interval, ...]
EVERYTHING: Span = (Interval(-_INF, _INF, True, True),)


def span_of(c: Condition) -> Span:
    v = float(c.value)
    if c.op == "between":
        assert c.upper is not None
        return (Interval(v, c.upper),)
    return {
        "<": (Interval(-_INF, v, True, True),),
        "<=": (Interval(-_INF, v, True, False),),
        ">": (Interval(v, _INF, True, True),),
        ">=": (Interval(v, _INF, False, True),),
        "==": (Interval(v, v),),
        "!=": (Interval(-_INF, v, True, True), Interval(v, _INF, True, True)),
    }[c.op]


def intersect(a: Span, b: Span) -> Span:
    out = []
    for x in a:
        for y in b:
            lo, lo_open = max((x.lo, x.lo_open), (y.lo, y.lo_open), key=lambda p: (p[0], p[1]))
            hi, hi_open = min((x.hi, not x.hi_open), (y.hi, not y.hi_open), key=lambda p: (p[0], p[1]))
            piece = Interval(lo, hi, lo_open, not hi_open)
            if not piece.empty():
                out.append(piece)
    return tuple(out)


def complement(a: Span) -> Span:
    out: Span = EVERYTHING
    for x in a:
        below = Interval(-_INF, x.lo, True, not x.lo_open)
        above = Interval(x.hi, _INF, not x.hi_open, True)
        out = intersect(out, tuple(p for p in (below, above) if not p.empty()))
    return out


def _nice(x: float) -> float | int:
    x = float(f"{x:.6g}")
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def pick(span: Span) -> float | int | None:
    """A representative number inside ``span``, preferring non-negative values (ratios, counts)."""
    pieces = sorted(span, key=lambda p: p.hi <= 0)  # intervals reaching above 0 first
    for p in pieces:
        if p.lo == p.hi:
            return _nice(p.lo)
        if math.isinf(p.lo) and math.isinf(p.hi):
            return 0
        if math.isinf(p.hi):
            # Ratios stay ratios (>= 0.99 gives 0.995); other floors get headroom.
            candidate = (p.lo + 1) / 2 if 0 < p.lo < 1 else p.lo * 1.5 if p.lo > 0 else p.lo + 1
        elif math.isinf(p.lo):
            candidate = p.hi / 5 if p.hi > 0 else p.hi - 1
            if p.hi > 0 and not p.hi_open and candidate == p.hi:  # pragma: no cover - defensive
                candidate = p.hi / 2
        else:
            candidate = (p.lo + p.hi) / 2
        value = _nice(candidate)
        if _inside(value, p):
            return value
        return candidate  # pragma: no cover - rounding pushed it out; the exact value is inside
    return None


def _inside(x: float, p: Interval) -> bool:
    above = x > p.lo if p.lo_open else x >= p.lo
    below = x < p.hi if p.hi_open else x <= p.hi
    return above and below


# ---------------------------------------------------------------- signals


@dataclass(frozen=True)
class SignalModel:
    """The values the sandbox serves for one signal of one taught plan."""

    plan: str
    name: str
    signal: Signal
    healthy: Any
    degraded: Any
    failing: Any
    samples: int
    passes: tuple[Condition, ...]

    def accepts(self, value: Any) -> bool:
        return all(c.holds(value) is True for c in self.passes)

    def value(self, mode: str | None) -> Any:
        if mode == "fail":
            return self.failing
        if mode == "degraded":
            return self.degraded
        return self.healthy

    def refuses(self, mode: str) -> str | None:
        """Why this signal cannot show ``mode``, or None when it can."""
        if mode not in MODES:
            return f"unknown mode {mode!r}; modes: {', '.join(MODES)}"
        if mode == "degraded" and self.degraded is None:
            return f"signal {self.name!r} has no hold band in any check, so degraded would be a fail; use fail"
        if mode == "stale":
            if self.signal.command is not None:
                return (
                    f"signal {self.name!r} is read by a command, which is stamped when it is read; it cannot be stale"
                )
            if self.signal.http is not None and self.signal.http.time_field is None:
                return (
                    f"signal {self.name!r} is read over HTTP without time_field, so its age is the moment "
                    "of reading; it cannot be stale"
                )
        return None

    def stale_age_s(self) -> float:
        return 10 * parse_duration(self.signal.max_age) + 3600


def derive(plan: Plan, name: str, signal: Signal) -> SignalModel:
    passes: list[Condition] = []
    holds: list[tuple[Condition, Condition]] = []  # (pass, hold) of checks with a hold band
    samples = DEFAULT_SAMPLES
    gates = [g for g in plan.rollback_readiness if g.signal == name]
    for stage in plan.stages:
        gates += [g for g in stage.preflight if g.signal == name]
        for check in stage.verify.checks:
            if check.signal != name:
                continue
            passes.append(parse_condition(check.pass_))
            if check.hold is not None:
                holds.append((parse_condition(check.pass_), parse_condition(check.hold)))
            if check.min_samples is not None:
                samples = max(samples, 10 * check.min_samples)
    passes += [parse_condition(g.pass_) for g in gates]
    bands = passes + [h for _, h in holds]
    booleans = [c for c in bands if isinstance(c.value, bool)]
    if booleans:
        first = booleans[0]
        wanted = first.value if first.op == "==" else not first.value
        return SignalModel(plan.name, name, signal, wanted, None, not wanted, samples, tuple(passes))
    healthy_span: Span = EVERYTHING
    for c in passes:
        healthy_span = intersect(healthy_span, span_of(c))
    healthy = pick(healthy_span)
    if healthy is None:  # the plan's own conditions contradict each other: serve the first band
        healthy = pick(span_of(passes[0])) if passes else 1
    degraded = None
    if holds:
        band: Span = EVERYTHING
        for p, h in holds:
            band = intersect(band, intersect(span_of(h), complement(span_of(p))))
        p0, h0 = holds[0]
        degraded = pick(band) if band else pick(intersect(span_of(h0), complement(span_of(p0))))
    outside: Span = EVERYTHING
    for c in bands:
        outside = intersect(outside, complement(span_of(c)))
    failing = pick(outside)
    if failing is None and bands:
        failing = pick(complement(span_of(bands[0])))
    return SignalModel(plan.name, name, signal, healthy, degraded, failing, samples, tuple(passes))


# ---------------------------------------------------------------- documents and actions


def set_field(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, creating objects on the way (the inverse of ``select_field``)."""
    parts = path.split(".")
    node = document
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def drop_field(document: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    node: Any = document
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bridged_doc_key(confirm: Confirm) -> str:
    """Where the sandbox keeps the document a non-HTTP read-back sees."""
    spec = confirm.spec
    if confirm.haproxy is not None:
        return f"haproxy/{spec.target}/{confirm.haproxy.backend}"
    assert confirm.command is not None
    return f"command/{spec.target}/{_digest([confirm.command.argv, confirm.command.stdin])}"


def doc_key(confirm: Confirm) -> str:
    return confirm.http.path if confirm.http is not None else "/_sim/docs/" + bridged_doc_key(confirm)


def action_signature(kind: str, spec: Mapping[str, Any]) -> str:
    """What identifies an action when it arrives: its kind and spec without its timeout."""
    shown = {k: v for k, v in spec.items() if k not in ("timeout",)}
    return f"{kind}:{_digest(shown)}"


def http_signature(method: str, path: str, body: Any) -> str:
    return f"http:{method}:{path}:{_digest(body)}"


def action_spec_json(action: Action) -> dict[str, Any]:
    dumped: dict[str, Any] = action.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


@dataclass(frozen=True)
class Effect:
    """What a learned action does when applied: its read-back's expectations come true."""

    doc: str
    expect: Mapping[str, Any]
    status: int
    location: str | None
    answer: dict[str, Any]


def _effect(action: Action, confirm: Confirm) -> tuple[str, Effect]:
    answer: dict[str, Any] = {}
    status, location = 200, None
    spec = action.spec
    expect_answer = getattr(spec, "expect_answer", None) or {}
    for key, value in expect_answer.items():
        set_field(answer, key, value)
    if action.http is not None:
        h = action.http
        if h.expect_status:
            status = next((s for s in h.expect_status if not 300 <= s < 400), h.expect_status[0])
        if 300 <= status < 400:
            location = _location_for(h.path, h.expect_location)
        body: Any = h.form if h.form is not None else h.json_body
        signature = http_signature(h.method, h.path, _normal_body(body, form=h.form is not None))
    else:
        signature = action_signature(action.kind, action_spec_json(action))
    return signature, Effect(doc_key(confirm), dict(confirm.expect), status, location, answer)


def _location_for(path: str, pattern: str | None) -> str:
    if pattern is None:
        return path
    for candidate in (pattern, pattern.replace("\\", ""), path + "?" + pattern.replace("\\", "")):
        if re.search(pattern, candidate):
            return candidate
    return path


def _normal_body(body: Any, *, form: bool) -> Any:
    """JSON bodies as they are; form bodies as sorted ``{field: [text, ...]}`` (as they arrive)."""
    if not form or not isinstance(body, Mapping):
        return body
    out: dict[str, list[str]] = {}
    for key, value in body.items():
        items = value if isinstance(value, list) else [value]
        out[str(key)] = [_form_text(v) for v in items]
    return dict(sorted(out.items()))


def _form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normal_form(fields: Mapping[str, list[str]]) -> Any:
    return dict(sorted((k, list(v)) for k, v in fields.items()))


# ---------------------------------------------------------------- Prometheus text


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


_SELECTOR = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\s*\{[^{}]*\}|[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def timestamp_arguments(query: str) -> list[str]:
    """The argument of every ``timestamp(...)`` call in ``query``, parentheses balanced."""
    found = []
    for m in re.finditer(r"\btimestamp\s*\(", query):
        depth, start = 1, m.end()
        for i in range(start, len(query)):
            if query[i] == "(":
                depth += 1
            elif query[i] == ")":
                depth -= 1
                if depth == 0:
                    found.append(query[start:i])
                    break
    return found


_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
)


def labels_of(query: str) -> dict[str, str]:
    """The labels a series answering ``query`` carries, as far as its text tells: the equality
    matchers of its first selector that has any (``{svc="tokenizer"}``), less what an
    aggregation drops (``sum(...)`` keeps none, ``sum by (svc) (...)`` keeps ``svc``)."""
    labels: dict[str, str] = {}
    for block in re.findall(r"\{([^{}]*)\}", query):
        labels = {k: v for k, v in _MATCHER.findall(block) if k != "__name__"}
        if labels:
            break
    # The first aggregation met from the left is the outermost one that drops labels.
    names = "|".join(sorted(_AGGREGATIONS))
    outer = re.search(rf"\b({names})\s*(?:\(|by\b|without\b)", query)
    if outer:
        by = re.match(r"\s*by\s*\(([^)]*)\)", query[outer.end(1) :])
        keep = {name.strip() for name in by.group(1).split(",")} if by else set()
        return {k: v for k, v in labels.items() if k in keep}
    return labels


# ---------------------------------------------------------------- the world


@dataclass
class World:
    """Everything the sandbox was taught, by plan name (teaching a plan again replaces it)."""

    signals: dict[str, dict[str, SignalModel]] = field(default_factory=dict)
    effects: dict[str, dict[str, Effect]] = field(default_factory=dict)

    def learn(self, plan: Plan) -> list[str]:
        self.signals[plan.name] = {name: derive(plan, name, signal) for name, signal in plan.signals.items()}
        effects: dict[str, Effect] = {}
        for stage in plan.stages:
            pairs = [(stage.action, stage.confirm)]
            if stage.rollback is not None:
                pairs.append((stage.rollback.action, stage.rollback.confirm))
            for action, confirm in pairs:
                signature, effect = _effect(action, confirm)
                effects[signature] = effect
        self.effects[plan.name] = effects
        return sorted(plan.signals)

    def plans(self) -> dict[str, list[str]]:
        return {name: sorted(models) for name, models in sorted(self.signals.items())}

    def models(self, name: str | None = None) -> Iterable[SignalModel]:
        for models in self.signals.values():
            for model in models.values():
                if name is None or model.name == name:
                    yield model

    def refuses(self, name: str, mode: str) -> str | None:
        """Why ``signal:NAME=MODE`` cannot be switched on, or None."""
        found = list(self.models(name))
        if not found:
            known = sorted({m.name for m in self.models()})
            return f"no plan taught to this sandbox has a signal {name!r} (known: {', '.join(known) or 'none'})"
        for model in found:
            why = model.refuses(mode)
            if why:
                return why
        return None

    def effect(self, signature: str) -> Effect | None:
        for effects in self.effects.values():
            if signature in effects:
                return effects[signature]
        return None

    def http_models(self, path: str) -> list[SignalModel]:
        return [m for m in self.models() if m.signal.http is not None and m.signal.http.path == path]

    def prometheus_model(self, query: str) -> tuple[SignalModel, str] | None:
        """The signal a query asks about, and whether for its ``value`` or its ``samples``."""
        asked = _squash(query)
        if not asked:
            return None
        best: tuple[int, SignalModel, str] | None = None
        for model in self.models():
            spec = model.signal.prometheus
            if spec is None:
                continue
            for role, text in (("value", spec.query), ("samples", spec.samples)):
                if text is None:
                    continue
                known = _squash(text)
                if asked == known:
                    return model, role
                if known in asked or asked in known or any(asked == _squash(s) for s in _SELECTOR.findall(text)):
                    score = len(known) if known in asked else len(asked)
                    if best is None or score > best[0]:
                        best = (score, model, role)
        return (best[1], best[2]) if best else None
