"""Prometheus adapter: one instant query per signal (plus its optional sample-count query).

Rules:
* The value is the sample's value as a float; when a vector holds several series the largest
  counts (the worst case for the ``< threshold`` checks plans use); NaN samples are no data.
* ``sampled_at`` is the sample's own timestamp (the oldest one when there are several), so
  freshness follows the source, not the moment of asking.
* An empty result is *no data* (value None, no error); ``status: error``, an HTTP failure or an
  unexpected shape is an *error*. Nothing raises into the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx

from execution.adapters.http import TargetClient, loads
from execution.contract.models import Signal
from execution.model import JSON, Evidence, Role


class QueryError(Exception):
    """The query failed or answered a shape this adapter does not read; the text says which."""


def _sample(pair: JSON) -> tuple[float, datetime]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise QueryError(f"a sample is [timestamp, value], got {pair!r}")
    ts, raw = pair
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise QueryError(f"sample timestamp {ts!r} is not a number")
    if not isinstance(raw, str):
        raise QueryError(f"sample value {raw!r} is not a string")
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"sample value {raw!r} is not a number") from None
    return value, datetime.fromtimestamp(ts, UTC)


def parse_instant(document: JSON) -> tuple[float, datetime] | None:
    """The value and sample time of an instant-query answer; None when it holds no data."""
    if not isinstance(document, Mapping):
        raise QueryError("the answer is not a JSON object")
    if document.get("status") != "success":
        error = document.get("error") or "no error text"
        raise QueryError(f"Prometheus answered status {document.get('status')!r}: {error}")
    data = document.get("data")
    if not isinstance(data, Mapping):
        raise QueryError("the answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        samples = [_sample(result)]
    elif kind == "vector":
        if not isinstance(result, list):
            raise QueryError("a vector result must be a list")
        samples = []
        for series in result:
            if not isinstance(series, Mapping):
                raise QueryError("each series must be an object")
            samples.append(_sample(series.get("value")))
    else:
        raise QueryError(f"result type {kind!r} is not read; write an instant query returning a vector or scalar")
    usable = [(v, t) for v, t in samples if not math.isnan(v)]
    if not usable:
        return None
    if not all(math.isfinite(v) for v, _ in usable):
        # x/0 in a ratio query: no canonical value to record, and never a pass.
        raise QueryError("the query answered an infinite value")
    return max(v for v, _ in usable), min(t for _, t in usable)


class PrometheusReader(TargetClient):
    """Reads ``signal.prometheus`` signals from the Prometheus HTTP API (``/api/v1/query``).

    The sample timestamps Prometheus returns, not the clock, drive freshness."""

    def _query(self, target: str, query: str, role: Role) -> tuple[float, datetime] | None:
        try:
            url = self._url(target, "/api/v1/query")
        except LookupError as exc:
            raise QueryError(str(exc)) from None
        try:
            response = self._client.get(
                url,
                params={"query": query},
                headers=self._headers(role),
                timeout=self._read_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise QueryError(f"query to {target} failed: {type(exc).__name__}: {exc}") from None
        try:
            document = loads(response.content)
        except ValueError:
            document = None
        # Prometheus answers 400/422 with a JSON error body; prefer its text to a bare status.
        if isinstance(document, Mapping) and document.get("status") == "error":
            return parse_instant(document)
        if not response.is_success:
            raise QueryError(f"query to {target} answered HTTP {response.status_code}: {response.text[:300]}")
        if document is None:
            raise QueryError(f"query to {target} did not answer JSON")
        return parse_instant(document)

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        spec = signal.prometheus
        if spec is None:
            return Evidence(name, None, None, "prometheus", error="not a prometheus signal")
        source = self._mask.text(f"prometheus {spec.target}: {spec.query}", limit=4000)
        try:
            sample = self._query(spec.target, spec.query, role)
            if sample is None:
                return Evidence(name, None, None, source)
            value, sampled_at = sample
            samples: int | None = None
            if spec.samples is not None:
                counted = self._query(spec.target, spec.samples, role)
                if counted is not None and math.isfinite(counted[0]):
                    samples = int(counted[0])
            return Evidence(name, value, sampled_at, source, samples=samples)
        except QueryError as exc:
            return Evidence(name, None, None, source, error=self._mask.text(str(exc)))
        except Exception as exc:
            error = self._mask.text(f"query failed: {type(exc).__name__}: {exc}")
            return Evidence(name, None, None, source, error=error)
