"""Adapters to live systems, against httpx.MockTransport and small Python child processes."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from execution.adapters.command import CommandRunner
from execution.adapters.http import HttpTargets, parse_sample_time, same_value, select_field
from execution.adapters.live import LiveTargets
from execution.adapters.prometheus import PrometheusReader
from execution.adapters.transport import TargetTransport
from execution.contract.models import Action, Confirm, Signal, Target
from execution.model import Credentials, Role, TargetAuth

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
EXEC_TOKEN = "exec-secret-7f3a9c"
BACK_TOKEN = "back-secret-5b8e0f"
PRE_TOKEN = "pre-secret-1122aa"
CREDS = Credentials({Role.EXECUTOR: EXEC_TOKEN, Role.ROLLBACK: BACK_TOKEN, Role.PREFLIGHT: PRE_TOKEN})
TARGETS = {
    "router": Target(kind="http", url="https://router.internal/"),
    "metrics": Target(kind="prometheus", url="https://prom.internal/prometheus"),
    "tool": Target(kind="command"),
}

Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A MockTransport handler that records every request and answers from a function."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def http_targets(answer: Handler, clock: Clock | None = None) -> tuple[HttpTargets, Recorder]:
    recorder = Recorder(answer)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    return HttpTargets(TARGETS, CREDS, client, clock or Clock(), sensitive_fields=["pan"]), recorder


def raising(exc_type: type[httpx.HTTPError]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        if issubclass(exc_type, httpx.RequestError):
            raise exc_type("boom", request=request)
        raise exc_type("boom")

    return answer


def http_signal(**fields: Any) -> Signal:
    return Signal.model_validate({"http": {"target": "router", "path": "/parity", **fields}, "max_age": "60s"})


ACTION = Action.model_validate(
    {"http": {"target": "router", "method": "PUT", "path": "/weights", "json": {"tokenizer": 5, "legacy": 95}}}
)
CONFIRM = Confirm.model_validate({"http": {"target": "router", "path": "/weights", "expect": {"tokenizer": 5}}})


# ---------------------------------------------------------------- field helpers


def test_select_field_follows_dotted_paths_and_list_indexes() -> None:
    doc = {"a": {"b": 3, "items": [{"x": 1}, {"x": 2}]}, "flat": False}
    assert select_field(doc, "a.b") == (True, 3)
    assert select_field(doc, "a.items.1.x") == (True, 2)
    assert select_field(doc, "flat") == (True, False)
    assert select_field(doc, "a.c") == (False, None)
    assert select_field(doc, "a.items.5") == (False, None)
    assert select_field([1], "a") == (False, None)


def test_same_value_compares_numbers_numerically_but_never_booleans_as_numbers() -> None:
    assert same_value(5, 5.0)
    assert same_value({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not same_value(True, 1)
    assert not same_value(0, False)
    assert not same_value("5", 5)
    assert not same_value({"a": 1}, {"a": 1, "b": 2})


def test_parse_sample_time_accepts_unix_seconds_and_iso_with_zone_only() -> None:
    assert parse_sample_time(T0.timestamp()) == T0
    assert parse_sample_time(str(T0.timestamp())) == T0
    assert parse_sample_time("2026-11-28T23:00:00+01:00") == T0
    assert parse_sample_time("2026-11-28T22:00:00Z") == T0
    for bad in ("2026-11-28T22:00:00", "yesterday", True, None, float("nan")):
        with pytest.raises(ValueError):
            parse_sample_time(bad)


# ---------------------------------------------------------------- HTTP reads


def test_http_read_selects_the_field_and_samples_and_stamps_the_response_time() -> None:
    clock = Clock()

    def answer(request: httpx.Request) -> httpx.Response:
        clock.now = T0 + timedelta(seconds=2)  # the response arrives two seconds after asking
        return httpx.Response(200, json={"stats": {"mismatch_ratio": 0.0005, "compared": 1000}})

    adapter, recorder = http_targets(answer, clock)
    evidence = adapter.read(
        "parity", http_signal(field="stats.mismatch_ratio", samples_field="stats.compared"), Role.VERIFIER
    )
    assert evidence.value == 0.0005
    assert evidence.samples == 1000
    assert evidence.sampled_at == T0 + timedelta(seconds=2)
    assert evidence.error is None
    assert "router" in evidence.source
    assert str(recorder.requests[0].url) == "https://router.internal/parity"


def test_http_read_sends_only_its_own_role_credential() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={"ok": True}))
    adapter.read("healthy", http_signal(field="ok"), Role.PREFLIGHT)
    adapter.read("healthy", http_signal(field="ok"), Role.VERIFIER)
    first, second = recorder.requests
    assert first.headers["authorization"] == f"Bearer {PRE_TOKEN}"
    assert first.headers["x-stagehold-role"] == "preflight"
    assert "authorization" not in second.headers  # the verifier has no credential here
    assert second.headers["x-stagehold-role"] == "verifier"


def test_no_cookie_a_target_sets_is_sent_again() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        cookie = {"set-cookie": "session=exec-only; Path=/"}
        return httpx.Response(200, json={"ok": True, "cookie": request.headers.get("cookie")}, headers=cookie)

    recorder = Recorder(answer)
    client = TargetTransport(transport=httpx.MockTransport(recorder))
    targets = HttpTargets(TARGETS, CREDS, client, Clock())
    signal = Signal.model_validate({"http": {"target": "router", "path": "/health", "field": "ok"}, "max_age": "60s"})
    targets.read("ok", signal, Role.EXECUTOR)
    targets.read("ok", signal, Role.ROLLBACK)
    assert len(recorder.requests) == 2
    assert [r.headers.get("cookie") for r in recorder.requests] == [None, None]
    assert not client.cookies


def test_http_read_time_field_drives_sampled_at() -> None:
    an_hour_ago = T0 - timedelta(hours=1)
    for raw in (an_hour_ago.timestamp(), "2026-11-28T21:00:00Z"):
        adapter, _ = http_targets(lambda r, raw=raw: httpx.Response(200, json={"v": 1, "at": raw}))
        evidence = adapter.read("v", http_signal(field="v", time_field="at"), Role.VERIFIER)
        assert evidence.sampled_at == an_hour_ago
        assert evidence.age_seconds(T0) == 3600


def test_http_read_missing_field_is_no_data_not_an_error() -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(200, json={"other": 1}))
    evidence = adapter.read("parity", http_signal(field="mismatch_ratio"), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is None


def test_http_read_missing_time_is_no_data_and_a_zoneless_time_is_an_error() -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(200, json={"v": 1}))
    missing = adapter.read("v", http_signal(field="v", time_field="at"), Role.VERIFIER)
    assert (missing.value, missing.error, missing.sampled_at) == (None, None, None)
    adapter, _ = http_targets(lambda r: httpx.Response(200, json={"v": 1, "at": "2026-11-28T21:00:00"}))
    naive = adapter.read("v", http_signal(field="v", time_field="at"), Role.VERIFIER)
    assert naive.value is None
    assert naive.error is not None and "time zone" in naive.error


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (lambda r: httpx.Response(503, text="upstream down"), "503"),
        (lambda r: httpx.Response(200, text="<html>oops</html>"), "JSON"),
        (lambda r: httpx.Response(200, content=b'{"mismatch_ratio": NaN}'), "JSON"),
        (lambda r: httpx.Response(200, json={"mismatch_ratio": 0, "compared": "many"}), "not an integer"),
        (raising(httpx.ConnectError), "ConnectError"),
        (raising(httpx.ReadTimeout), "ReadTimeout"),
    ],
)
def test_http_read_failure_is_an_error_with_no_value(answer: Handler, fragment: str) -> None:
    adapter, _ = http_targets(answer)
    evidence = adapter.read("parity", http_signal(field="mismatch_ratio", samples_field="compared"), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None and fragment in evidence.error


def test_http_read_of_an_unknown_target_is_an_error_and_sends_nothing() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={"ok": True}))
    signal = Signal.model_validate({"http": {"target": "elsewhere", "path": "/x", "field": "ok"}, "max_age": "1m"})
    evidence = adapter.read("x", signal, Role.VERIFIER)
    assert evidence.error is not None and "elsewhere" in evidence.error
    assert recorder.requests == []


# ---------------------------------------------------------------- HTTP actions


def test_apply_sends_key_role_credential_and_body_and_reports_ok() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={"tokenizer": 5, "legacy": 95}))
    result = adapter.apply(ACTION, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "ok"
    assert result.status == 200
    assert result.response == {"tokenizer": 5, "legacy": 95}
    (request,) = recorder.requests
    assert request.method == "PUT"
    assert str(request.url) == "https://router.internal/weights"
    assert request.headers["idempotency-key"] == "CHG-1:canary-5:apply:1"
    assert request.headers["x-stagehold-role"] == "executor"
    assert request.headers["authorization"] == f"Bearer {EXEC_TOKEN}"
    assert json.loads(request.content) == {"tokenizer": 5, "legacy": 95}


def test_rollback_role_sends_the_rollback_credential_never_the_executor_one() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={}))
    adapter.apply(ACTION, "CHG-1:canary-5:rollback:1", Role.ROLLBACK, 10)
    headers = recorder.requests[0].headers
    assert headers["authorization"] == f"Bearer {BACK_TOKEN}"
    assert headers["x-stagehold-role"] == "rollback"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(400, "rejected"), (403, "rejected"), (409, "rejected"), (429, "rejected"), (500, "rejected"),
     (501, "rejected"), (502, "ambiguous"), (503, "ambiguous"), (504, "ambiguous"), (201, "ok"), (204, "ok")],
)  # fmt: skip
def test_apply_classifies_http_statuses(status: int, outcome: str) -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(status, json={"error": "x"} if status >= 400 else None))
    result = adapter.apply(ACTION, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == outcome
    assert result.status == status


@pytest.mark.parametrize(
    "exc_type", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_apply_failure_after_sending_is_ambiguous(exc_type: type[httpx.HTTPError]) -> None:
    adapter, recorder = http_targets(raising(exc_type))
    result = adapter.apply(ACTION, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "ambiguous"
    assert result.status is None
    assert "unknown" in result.detail
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout])
def test_apply_that_never_reached_the_target_is_rejected_as_not_sent(exc_type: type[httpx.HTTPError]) -> None:
    adapter, _ = http_targets(raising(exc_type))
    result = adapter.apply(ACTION, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "rejected"
    assert "not sent" in result.detail


def test_apply_to_an_unknown_target_is_rejected_without_sending() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={}))
    action = Action.model_validate({"http": {"target": "nowhere", "path": "/weights", "json": {}}})
    result = adapter.apply(action, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "rejected"
    assert "not sent" in result.detail
    assert recorder.requests == []


def test_a_token_echoed_in_an_error_body_is_masked_everywhere() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["authorization"]
        return httpx.Response(
            401,
            json={
                "error": f"credential {EXEC_TOKEN} is not valid here",
                "received": echoed,
                "token": EXEC_TOKEN,
                "pan": "4111111111111111",
            },
        )

    adapter, _ = http_targets(answer)
    result = adapter.apply(ACTION, "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "rejected"
    rendered = result.detail + json.dumps(result.response)
    assert EXEC_TOKEN not in rendered
    assert "4111111111111111" not in rendered
    assert result.response["token"] == "***"
    assert "***" in result.detail


def test_a_token_echoed_by_a_failed_read_is_masked() -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(500, text=f"bad auth {r.headers['authorization']}"))
    evidence = adapter.read("ok", http_signal(field="ok"), Role.PREFLIGHT)
    assert evidence.error is not None
    assert PRE_TOKEN not in evidence.error


# ---------------------------------------------------------------- HTTP read-backs


def test_read_back_matches_numbers_numerically() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={"tokenizer": 5.0, "legacy": 95}))
    result = adapter.read_back(CONFIRM, Role.VERIFIER, 5)
    assert result.matches is True
    assert result.observed == {"tokenizer": 5.0, "legacy": 95}
    assert recorder.requests[0].method == "GET"


@pytest.mark.parametrize(
    ("observed", "fragment"),
    [({"tokenizer": 25}, "observed 25"), ({"legacy": 95}, "missing"), ({"tokenizer": True}, "observed True")],
)
def test_read_back_mismatch_says_which_field(observed: dict[str, Any], fragment: str) -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(200, json=observed))
    result = adapter.read_back(CONFIRM, Role.VERIFIER, 5)
    assert result.matches is False
    assert "tokenizer" in result.detail and fragment in result.detail


def test_read_back_compares_dotted_paths_and_masks_what_it_observed() -> None:
    confirm = Confirm.model_validate(
        {"http": {"target": "router", "path": "/state", "expect": {"spec.weights.v2": 5, "spec.api_key": "k-1"}}}
    )
    doc = {"spec": {"weights": {"v2": 5}, "api_key": "k-2-live-secret"}}
    adapter, _ = http_targets(lambda r: httpx.Response(200, json=doc))
    result = adapter.read_back(confirm, Role.VERIFIER, 5)
    assert result.matches is False
    assert result.observed == {"spec": {"weights": {"v2": 5}, "api_key": "***"}}
    assert "k-2-live-secret" not in result.detail


@pytest.mark.parametrize("answer", [lambda r: httpx.Response(500, json={"error": "x"}), raising(httpx.ConnectError)])
def test_read_back_that_cannot_read_is_unknown_not_a_mismatch(answer: Handler) -> None:
    adapter, _ = http_targets(answer)
    result = adapter.read_back(CONFIRM, Role.VERIFIER, 5)
    assert result.matches is None
    assert result.observed is None


# ---------------------------------------------------------------- Prometheus


def vector(*samples: tuple[float, str], labels: list[dict[str, str]] | None = None) -> dict[str, Any]:
    names = labels or [{"pod": str(i)} for i in range(len(samples))]
    result = [{"metric": names[i], "value": [ts, value]} for i, (ts, value) in enumerate(samples)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def prom(
    answers: dict[str, Any], targets: dict[str, Target] = TARGETS, creds: Credentials = CREDS
) -> tuple[PrometheusReader, Recorder]:
    def answer(request: httpx.Request) -> httpx.Response:
        body = answers[request.url.params["query"]]
        return body if isinstance(body, httpx.Response) else httpx.Response(200, json=body)

    recorder = Recorder(answer)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    return PrometheusReader(targets, creds, client, Clock()), recorder


def prom_signal(samples: str | None = None, **extra: Any) -> Signal:
    spec: dict[str, Any] = {"target": "metrics", "query": "ratio", **extra}
    if samples:
        spec["samples"] = samples
    return Signal.model_validate({"prometheus": spec, "max_age": "60s"})


def test_prometheus_age_comes_from_the_newest_raw_sample_not_the_evaluation() -> None:
    raw = T0 - timedelta(seconds=45)
    reader, recorder = prom(
        {
            "ratio": vector((T0.timestamp(), "0.004"), labels=[{}]),
            "timestamp(ratio{})": vector((T0.timestamp(), str(raw.timestamp())), labels=[{"pod": "a"}]),
            "count": vector((T0.timestamp(), "1234.6")),
        }
    )
    evidence = reader.read("error_rate", prom_signal(samples="count"), Role.VERIFIER)
    assert evidence.error is None
    assert evidence.value == 0.004
    # An instant answer is stamped with its evaluation time; the age is the raw sample's.
    assert evidence.evaluated_at == T0
    assert evidence.sampled_at == raw
    assert evidence.samples == 1234
    paths = [(r.url.path, r.url.params["query"], r.url.params.get("time")) for r in recorder.requests]
    at = f"{T0.timestamp():.3f}"
    assert paths == [
        ("/prometheus/api/v1/query", "ratio", None),
        ("/prometheus/api/v1/query", "timestamp(ratio{})", at),
        ("/prometheus/api/v1/query", "count", at),
    ]
    assert recorder.requests[0].headers["x-stagehold-role"] == "verifier"


def test_prometheus_keeps_every_series_with_its_own_age() -> None:
    fresh, old = T0.timestamp(), (T0 - timedelta(seconds=90)).timestamp()
    reader, _ = prom(
        {
            "ratio": vector((fresh, "1"), (fresh, "0"), (fresh, "NaN"), labels=[{"i": "a"}, {"i": "b"}, {"i": "c"}]),
            "timestamp(ratio{})": vector(
                (fresh, str(fresh)), (fresh, str(old)), labels=[{"i": "a", "job": "x"}, {"i": "b", "job": "x"}]
            ),
        }
    )
    evidence = reader.read("up", prom_signal(), Role.VERIFIER)
    assert evidence.reduce == "all"
    by_label = {s.labels["i"]: (s.value, s.sampled_at) for s in evidence.series}
    assert by_label == {"a": (1.0, T0), "b": (0.0, T0 - timedelta(seconds=90)), "c": (None, None)}
    assert evidence.sampled_at is None  # one series has no current raw sample: the whole is not fresh


@pytest.mark.parametrize(("reduce", "value"), [("max", 0.03), ("min", 0.001), ("sum", 0.031), ("avg", 0.0155)])
def test_prometheus_folds_series_only_when_the_plan_asks(reduce: str, value: float) -> None:
    fresh, old = T0.timestamp(), (T0 - timedelta(seconds=30)).timestamp()
    reader, _ = prom(
        {
            "ratio": vector((fresh, "0.001"), (fresh, "0.03"), (fresh, "NaN"), labels=[{"i": "a"}, {"i": "b"}, {}]),
            "timestamp(ratio{})": vector((fresh, str(fresh)), (fresh, str(old)), labels=[{"i": "a"}, {"i": "b"}]),
        }
    )
    evidence = reader.read("error_rate", prom_signal(reduce=reduce), Role.VERIFIER)
    assert evidence.value == pytest.approx(value)
    assert evidence.series == ()
    assert evidence.sampled_at == T0 - timedelta(seconds=30)  # a folded value is as old as its oldest series


def test_prometheus_scalar_result() -> None:
    reader, _ = prom(
        {
            "ratio": {"status": "success", "data": {"resultType": "scalar", "result": [T0.timestamp(), "7"]}},
            "timestamp(ratio{})": vector((T0.timestamp(), str(T0.timestamp()))),
        }
    )
    evidence = reader.read("x", prom_signal(), Role.VERIFIER)
    assert (evidence.value, evidence.sampled_at) == (7.0, T0)


def test_prometheus_range_query_reads_every_point_and_widens_the_window() -> None:
    matrix = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"i": "a"}, "values": [[T0.timestamp() - 60, "1"], [T0.timestamp(), "2"]]}],
        },
    }
    reader, recorder = prom({"ratio": matrix, "timestamp(ratio{})": vector((T0.timestamp(), str(T0.timestamp())))})
    evidence = reader.read("x", prom_signal(range={"window": "10m", "step": "1m"}), Role.VERIFIER)
    assert [s.value for s in evidence.series] == [1.0, 2.0]
    assert evidence.window_s == 600.0
    request = recorder.requests[0]
    assert request.url.path == "/prometheus/api/v1/query_range"
    assert float(request.url.params["end"]) - float(request.url.params["start"]) == 600.0
    assert request.url.params["step"] == "60"


@pytest.mark.parametrize("body", [vector(), vector((T0.timestamp(), "NaN"))])
def test_prometheus_empty_or_nan_result_is_no_data(body: dict[str, Any]) -> None:
    reader, _ = prom({"ratio": body})
    evidence = reader.read("error_rate", prom_signal(), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is None
    assert evidence.sampled_at is None


def test_prometheus_empty_samples_query_leaves_samples_unknown() -> None:
    reader, _ = prom(
        {
            "ratio": vector((T0.timestamp(), "0.001")),
            "timestamp(ratio{})": vector((T0.timestamp(), str(T0.timestamp()))),
            "count": vector(),
        }
    )
    evidence = reader.read("error_rate", prom_signal(samples="count"), Role.VERIFIER)
    assert evidence.series[0].value == 0.001
    assert evidence.samples is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}),
            "parse error",
        ),
        (httpx.Response(502, text="bad gateway"), "502"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        (vector((T0.timestamp(), "+Inf")), "infinite"),
        (vector((T0.timestamp(), "lots")), "not a number"),
        ({"status": "success"}, "data"),
    ],
)
def test_prometheus_failures_are_errors(body: Any, fragment: str) -> None:
    reader, _ = prom({"ratio": body})
    evidence = reader.read("error_rate", prom_signal(), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None and fragment in evidence.error


def test_prometheus_a_failed_age_query_is_an_error() -> None:
    refused = httpx.Response(503, text="overloaded")
    reader, _ = prom({"ratio": vector((T0.timestamp(), "1")), "timestamp(ratio{})": refused})
    evidence = reader.read("up", prom_signal(), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None and "503" in evidence.error


def test_prometheus_transport_failure_is_an_error() -> None:
    client = httpx.Client(transport=httpx.MockTransport(raising(httpx.ConnectError)))
    evidence = PrometheusReader(TARGETS, CREDS, client, Clock()).read("e", prom_signal(), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None and "ConnectError" in evidence.error


def test_prometheus_sends_the_targets_auth_headers_and_timeout_and_masks_them() -> None:
    targets = {
        **TARGETS,
        "metrics": Target(kind="prometheus", url="https://prom.internal", headers={"X-Scope-OrgID": "payments"}),
    }
    auth = TargetAuth(username="stagehold", password="pw-9f8e7d", headers={"X-Api-Key": "key-1a2b3c"})
    creds = Credentials(CREDS.tokens, {"metrics": auth})
    echo = httpx.Response(400, json={"status": "error", "error": "denied for key-1a2b3c and pw-9f8e7d"})
    reader, recorder = prom({"ratio": echo}, targets, creds)
    evidence = reader.read("e", prom_signal(timeout="2500ms"), Role.PREFLIGHT)
    headers = recorder.requests[0].headers
    assert headers["authorization"] == "Basic " + base64.b64encode(b"stagehold:pw-9f8e7d").decode()
    assert headers["x-scope-orgid"] == "payments" and headers["x-api-key"] == "key-1a2b3c"
    assert recorder.requests[0].extensions["timeout"]["read"] == 2.5
    # The target's own auth replaces the role credential; no secret reaches the evidence.
    assert PRE_TOKEN not in str(headers) and headers["x-stagehold-role"] == "preflight"
    assert evidence.error is not None
    assert "key-1a2b3c" not in evidence.error and "pw-9f8e7d" not in evidence.error


# ---------------------------------------------------------------- commands


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def runner() -> CommandRunner:
    return CommandRunner(TARGETS, CREDS, Clock(), base_env={"PATH": "/usr/bin:/bin"})


def command_signal(code: str, timeout: str = "10s") -> Signal:
    return Signal.model_validate(
        {"command": {"target": "tool", "argv": py(code), "field": "depth.value", "timeout": timeout}, "max_age": "1m"}
    )


def command_action(code: str) -> Action:
    return Action.model_validate({"command": {"target": "tool", "argv": py(code)}})


ECHO_ENV = (
    "import json, os, sys; "
    "print(json.dumps({'argv': sys.argv, 'env': {k: v for k, v in os.environ.items() if k.startswith(('STAGE', 'SLACK'))}}))"
)


def test_command_signal_reads_a_field_from_json_stdout() -> None:
    evidence = runner().read("depth", command_signal('print(\'{"depth": {"value": 12}}\')'), Role.VERIFIER)
    assert (evidence.value, evidence.sampled_at, evidence.error) == (12, T0, None)


def test_command_signal_missing_field_is_no_data() -> None:
    evidence = runner().read("depth", command_signal("print('{}')"), Role.VERIFIER)
    assert (evidence.value, evidence.error) == (None, None)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("import sys; sys.stderr.write('queue unreachable'); sys.exit(3)", "exited 3: queue unreachable"),
        ("print('not json')", "did not print JSON"),
    ],
)
def test_command_signal_failure_is_an_error(code: str, fragment: str) -> None:
    evidence = runner().read("depth", command_signal(code), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None and fragment in evidence.error


def test_command_signal_timeout_is_an_error_and_kills_the_child() -> None:
    started = time.monotonic()
    evidence = runner().read("depth", command_signal("import time; time.sleep(30)", timeout="500ms"), Role.VERIFIER)
    assert time.monotonic() - started < 5
    assert evidence.value is None
    assert evidence.error is not None and "timed out" in evidence.error


def test_command_action_gets_key_role_and_credential_in_env_never_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-bot-secret")
    monkeypatch.setenv("STAGEHOLD_CREDENTIAL", "inherited-must-not-leak")
    result = CommandRunner(TARGETS, CREDS, Clock()).apply(
        command_action(ECHO_ENV), "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10
    )
    assert result.outcome == "ok"
    # The child saw the credential, but it is masked in what comes back.
    assert result.response["env"]["STAGEHOLD_CREDENTIAL"] == "***"
    assert result.response["env"]["STAGEHOLD_IDEMPOTENCY_KEY"] == "CHG-1:canary-5:apply:1"
    assert result.response["env"]["STAGEHOLD_ROLE"] == "executor"
    assert result.response["env"]["STAGEHOLD_TARGET"] == "tool"
    assert "SLACK_BOT_TOKEN" not in result.response["env"]  # the bot's own secrets stay home
    assert not any(EXEC_TOKEN in arg for arg in result.response["argv"])
    assert EXEC_TOKEN not in json.dumps(result.response)


def test_command_child_really_receives_the_role_credential() -> None:
    check = f"import os, sys; sys.exit(0 if os.environ.get('STAGEHOLD_CREDENTIAL') == {BACK_TOKEN!r} else 9)"
    assert runner().apply(command_action(check), "CHG-1:s:rollback:1", Role.ROLLBACK, 10).outcome == "ok"
    assert runner().apply(command_action(check), "CHG-1:s:apply:1", Role.EXECUTOR, 10).outcome == "rejected"


def test_command_action_non_zero_exit_is_rejected_with_masked_stderr() -> None:
    code = f"import sys; sys.stderr.write('denied for token={EXEC_TOKEN}'); sys.exit(2)"
    result = runner().apply(command_action(code), "CHG-1:canary-5:apply:1", Role.EXECUTOR, 10)
    assert result.outcome == "rejected"
    assert "exited 2" in result.detail
    assert EXEC_TOKEN not in result.detail


def test_command_action_timeout_is_ambiguous() -> None:
    started = time.monotonic()
    result = runner().apply(command_action("import time; time.sleep(30)"), "CHG-1:s:apply:1", Role.EXECUTOR, 0.5)
    assert time.monotonic() - started < 5
    assert result.outcome == "ambiguous"


def test_command_action_that_cannot_start_is_rejected_as_not_run() -> None:
    action = Action.model_validate({"command": {"target": "tool", "argv": ["/nonexistent/stagehold-tool"]}})
    result = runner().apply(action, "CHG-1:s:apply:1", Role.EXECUTOR, 5)
    assert result.outcome == "rejected"
    assert "not run" in result.detail


def test_command_read_back_compares_stdout_with_expect() -> None:
    def confirm(code: str) -> Confirm:
        return Confirm.model_validate(
            {"command": {"target": "tool", "argv": py(code), "expect": {"profile": "v42", "zones": 1}}}
        )

    good = runner().read_back(confirm('print(\'{"profile": "v42", "zones": 1.0}\')'), Role.VERIFIER, 5)
    assert good.matches is True
    bad = runner().read_back(confirm('print(\'{"profile": "v41", "zones": 8}\')'), Role.VERIFIER, 5)
    assert bad.matches is False and "profile" in bad.detail
    failed = runner().read_back(confirm("import sys; sys.exit(1)"), Role.VERIFIER, 5)
    assert failed.matches is None


# ---------------------------------------------------------------- dispatch


def test_live_targets_dispatches_on_the_spec_kind() -> None:
    recorder = Recorder(
        lambda r: (
            httpx.Response(200, json=vector((T0.timestamp(), "0.5")))
            if r.url.path.endswith("/api/v1/query")
            else httpx.Response(200, json={"mismatch_ratio": 0.25, "tokenizer": 5})
        )
    )
    live = LiveTargets(TARGETS, CREDS, httpx.Client(transport=httpx.MockTransport(recorder)), Clock())
    assert live.read("p", prom_signal(), Role.VERIFIER).value == 0.5
    assert live.read("h", http_signal(field="mismatch_ratio"), Role.VERIFIER).value == 0.25
    assert live.read("c", command_signal('print(\'{"depth": {"value": 3}}\')'), Role.VERIFIER).value == 3
    assert live.apply(ACTION, "CHG-1:s:apply:1", Role.EXECUTOR, 5).outcome == "ok"
    assert live.apply(command_action("pass"), "CHG-1:s:apply:2", Role.EXECUTOR, 5).outcome == "ok"
    assert live.read_back(CONFIRM, Role.VERIFIER, 5).matches is True
    query = "/prometheus/api/v1/query"  # the value, then the age of its raw data
    assert [r.url.path for r in recorder.requests] == [query, query, "/parity", "/weights", "/weights"]


def test_nothing_an_adapter_returns_is_a_non_finite_number() -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(200, content=b'{"ok": Infinity}'))
    evidence = adapter.read("ok", http_signal(field="ok"), Role.VERIFIER)
    assert evidence.value is None
    assert evidence.error is not None
