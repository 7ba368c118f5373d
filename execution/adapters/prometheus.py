"""Prometheus adapter: instant and range queries, judged by the data, not by when they were read.

Rules (DESIGN rule 11):
* Every series (and, for a range query, every point) is kept with its labels. With ``reduce: all``
  (the default) or ``any`` the engine judges each series; ``max``, ``min``, ``avg`` and ``sum``
  fold them into one value here, only because the plan asks.
* Age comes from the data: for each *live selector* of the query (``execution.promql``) the
  adapter asks for ``timestamp(selector)`` at the same evaluation time, which answers the time of
  the newest raw sample of each series. A result series is as fresh as the newest raw sample whose
  labels agree with it on the label names both carry; none agreeing means none is current (the
  scrape stopped or its series went stale), so that series has no sample time and is ``stale``.
  A folded value is as old as its oldest series.
* NaN and empty answers are *no data*; an infinite value, a query error, an answer of an
  unexpected shape and an unreachable Prometheus are *errors*. Nothing raises into the engine.
* The evidence carries its evaluation time, the query's window and the oldest raw sample read, so
  the engine can tell a sample whose data could predate the change (``Evidence.data_from``).
* ``samples`` (for ``min_samples``) is the smallest count its query answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import httpx

from execution.adapters.http import TargetClient, loads
from execution.conditions import parse_duration
from execution.contract.models import PrometheusSignal, Signal
from execution.model import JSON, Evidence, Role, SeriesValue
from execution.promql import PromQLError, QueryShape, analyse, timestamp_query

Labels = dict[str, str]
Series = tuple[Labels, list[tuple[datetime, float]]]


class QueryError(Exception):
    """The query failed or answered a shape this adapter does not read; the text says which."""


@lru_cache(maxsize=1024)
def _shape(query: str) -> QueryShape:
    return analyse(query)


def _number(raw: JSON, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise QueryError(f"{what} {raw!r} is not a number")
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"{what} {raw!r} is not a number") from None
    return value


def _point(pair: JSON) -> tuple[datetime, float]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise QueryError(f"a sample is [timestamp, value], got {pair!r}")
    ts = _number(pair[0], "sample timestamp")
    if isinstance(pair[0], str) or not math.isfinite(ts):
        raise QueryError(f"sample timestamp {pair[0]!r} is not a number")
    if not isinstance(pair[1], str):
        raise QueryError(f"sample value {pair[1]!r} is not a string")
    return datetime.fromtimestamp(ts, UTC), _number(pair[1], "sample value")


def _labels(series: Mapping[str, JSON]) -> Labels:
    metric = series.get("metric", {})
    if not isinstance(metric, Mapping) or not all(isinstance(v, str) for v in metric.values()):
        raise QueryError("a series' metric must be an object of label names and values")
    return {str(k): str(v) for k, v in metric.items()}


def parse_answer(document: JSON, kinds: tuple[str, ...] = ("vector", "scalar")) -> list[Series]:
    """Every series of a query answer with its points; a scalar is one series without labels.
    ``kinds`` are the result types read (an instant query: vector or scalar; a range: matrix)."""
    if not isinstance(document, Mapping):
        raise QueryError("the answer is not a JSON object")
    if document.get("status") != "success":
        error = document.get("error") or "no error text"
        raise QueryError(f"Prometheus answered status {document.get('status')!r}: {error}")
    data = document.get("data")
    if not isinstance(data, Mapping):
        raise QueryError("the answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind not in kinds:
        raise QueryError(f"result type {kind!r} is not read here; expected {' or '.join(kinds)}")
    if kind == "scalar":
        return [({}, [_point(result)])]
    if not isinstance(result, list):
        raise QueryError(f"a {kind} result must be a list")
    out: list[Series] = []
    for series in result:
        if not isinstance(series, Mapping):
            raise QueryError("each series must be an object")
        if kind == "vector":
            out.append((_labels(series), [_point(series.get("value"))]))
        else:
            values = series.get("values")
            if not isinstance(values, list):
                raise QueryError("a matrix series must have a list of values")
            out.append((_labels(series), [_point(p) for p in values]))
    return out


def _agrees(result: Mapping[str, str], raw: Mapping[str, str]) -> bool:
    return all(result[k] == v for k, v in raw.items() if k in result and k != "__name__")


def newest_raw(result: Mapping[str, str], raw: Iterable[tuple[Labels, datetime]]) -> datetime | None:
    """The newest raw sample time among series agreeing with ``result`` on their shared labels."""
    times = [t for labels, t in raw if _agrees(result, labels)]
    return max(times) if times else None


def _avg(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


_FOLD: dict[str, Callable[[Sequence[float]], float]] = {"max": max, "min": min, "sum": math.fsum, "avg": _avg}


def fold(spec: PrometheusSignal, series: Sequence[SeriesValue]) -> tuple[float | None, datetime | None]:
    """One value for ``max``/``min``/``avg``/``sum``: NaN points are left out; the time is the oldest."""
    values = [s.value for s in series if s.value is not None]
    if not values:
        return None, None
    times = [s.sampled_at for s in series]
    oldest = None if any(t is None for t in times) else min(t for t in times if t is not None)
    return float(_FOLD[spec.reduce](values)), oldest


class PrometheusReader(TargetClient):
    """Reads ``signal.prometheus`` signals from the Prometheus HTTP API."""

    def _api(self, target: str, path: str, params: Mapping[str, str], role: Role, timeout_s: float) -> list[Series]:
        kinds = ("matrix",) if path.endswith("query_range") else ("vector", "scalar")
        try:
            url = self._url(target, path)
            client = self._client_for(target)
        except (LookupError, ValueError) as exc:
            raise QueryError(str(exc)) from None
        try:
            response = client.get(url, params=params, headers=self._headers(role, target=target), timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise QueryError(f"query to {target} failed: {type(exc).__name__}: {exc}") from None
        try:
            document = loads(response.content)
        except ValueError:
            document = None
        # Prometheus answers 400/422 with a JSON error body; prefer its text to a bare status.
        if isinstance(document, Mapping) and document.get("status") == "error":
            return parse_answer(document, kinds)
        if not response.is_success:
            raise QueryError(f"query to {target} answered HTTP {response.status_code}: {response.text[:300]}")
        if document is None:
            raise QueryError(f"query to {target} did not answer JSON")
        return parse_answer(document, kinds)

    def _main(self, spec: PrometheusSignal, role: Role, timeout_s: float) -> tuple[list[Series], datetime]:
        if spec.range is None:
            found = self._api(spec.target, "/api/v1/query", {"query": spec.query}, role, timeout_s)
            # An instant answer is stamped with its evaluation time; ask the rest at that same time.
            stamps = [points[-1][0] for _, points in found if points]
            return found, max(stamps) if stamps else self._clock()
        end = self._clock()
        start = end - timedelta(seconds=parse_duration(spec.range.window))
        params = {
            "query": spec.query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{parse_duration(spec.range.step):g}",
        }
        return self._api(spec.target, "/api/v1/query_range", params, role, timeout_s), end

    def _instant(self, spec: PrometheusSignal, query: str, at: datetime, role: Role, timeout_s: float) -> list[Series]:
        params = {"query": query, "time": f"{at.timestamp():.3f}"}
        return self._api(spec.target, "/api/v1/query", params, role, timeout_s)

    def _raw_times(
        self, spec: PrometheusSignal, shape: QueryShape, at: datetime, role: Role, timeout_s: float
    ) -> list[tuple[Labels, datetime]]:
        raw: list[tuple[Labels, datetime]] = []
        for selector in shape.live_selectors:
            for labels, points in self._instant(spec, timestamp_query(selector), at, role, timeout_s):
                for _, value in points:
                    if not math.isfinite(value):
                        raise QueryError(f"timestamp({selector}) answered {value!r}")
                    raw.append((labels, datetime.fromtimestamp(value, UTC)))
        return raw

    def _samples(self, spec: PrometheusSignal, at: datetime, role: Role, timeout_s: float) -> int | None:
        if spec.samples is None:
            return None
        counts = [v for _, points in self._instant(spec, spec.samples, at, role, timeout_s) for _, v in points]
        finite = [v for v in counts if math.isfinite(v)]
        return int(min(finite)) if finite else None

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        spec = signal.prometheus
        if spec is None:
            return Evidence(name, None, None, "prometheus", error="not a prometheus signal")
        source = self._mask.text(f"prometheus {spec.target}: {spec.query}", limit=4000)
        try:
            return self._read(name, spec, role, source)
        except (QueryError, PromQLError) as exc:
            return Evidence(name, None, None, source, error=self._mask.text(str(exc)))
        except Exception as exc:
            error = self._mask.text(f"query failed: {type(exc).__name__}: {exc}")
            return Evidence(name, None, None, source, error=error)

    def _read(self, name: str, spec: PrometheusSignal, role: Role, source: str) -> Evidence:
        timeout_s = self._timeout(spec.timeout)
        shape = _shape(spec.query)
        found, evaluated_at = self._main(spec, role, timeout_s)
        points = [(labels, v) for labels, pts in found for _, v in pts]
        if not points or all(math.isnan(v) for _, v in points):
            return Evidence(name, None, None, source, evaluated_at=evaluated_at)
        if any(math.isinf(v) for _, v in points):
            # x/0 in a ratio query: no canonical value to record, and never a pass.
            raise QueryError("the query answered an infinite value")
        raw = self._raw_times(spec, shape, evaluated_at, role, timeout_s)
        series = tuple(
            SeriesValue(
                self._mask.body(labels),
                None if math.isnan(value) else value,
                newest_raw(labels, raw),
            )
            for labels, value in points
        )
        samples = self._samples(spec, evaluated_at, role, timeout_s)
        window_s = shape.window_s + (parse_duration(spec.range.window) if spec.range is not None else 0.0)
        times = [s.sampled_at for s in series]
        oldest = None if any(t is None for t in times) else min(t for t in times if t is not None)
        value: float | None
        if spec.reduce in ("all", "any"):
            value, reduce = next(s.value for s in series if s.value is not None), spec.reduce
            sampled_at = oldest
            if spec.reduce == "any":
                sampled_at = max((t for t in times if t is not None), default=None)
        else:
            (value, sampled_at), reduce, series = fold(spec, series), None, ()
        return Evidence(
            name,
            value,
            sampled_at,
            source,
            samples=samples,
            series=series,
            reduce=reduce,
            evaluated_at=evaluated_at,
            window_s=window_s,
            earliest_at=min((t for _, t in raw), default=None),
        )
