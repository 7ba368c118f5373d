"""The rehearsal sandbox over real HTTP on loopback: idempotency, credentials, faults, metrics."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from execution.sandbox import Sandbox
from execution.sandbox_faults import FAULTS

from .conftest import TOKENS, FakeClock


def put(client: httpx.Client, path: str, body: Any, key: str, **headers: str) -> httpx.Response:
    return client.put(path, json=body, headers={"Idempotency-Key": key, **headers})


def query(client: httpx.Client, promql: str) -> dict[str, Any]:
    response = client.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def query_value(client: httpx.Client, promql: str) -> float | None:
    result = query(client, promql)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


# ---------------------------------------------------------------- documents and idempotency


def test_seeded_documents_are_served_and_unknown_paths_are_404(client: httpx.Client) -> None:
    assert client.get("/weights").json() == {"tokenizer": 0, "legacy": 100}
    assert client.get("/forecast/engines").json() == {"primary": "legacy", "shadow": "none"}
    assert client.get("/forecast/authority").json() == {"authoritative": "legacy"}
    assert client.get("/sorter/profile").json() == {"profile": "v41", "zones": 8}
    assert client.get("/backends/legacy/state").json() == {"retired": False}
    assert client.get("/backends/legacy-forecast/state").json() == {"retired": False}
    missing = client.get("/no/such/document")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}


def test_put_replaces_patch_merges_and_post_replaces(client: httpx.Client, sandbox: Sandbox) -> None:
    r = put(client, "/weights", {"tokenizer": 5, "legacy": 95}, "CHG-1:canary-5:apply:1")
    assert (r.status_code, r.json()) == (200, {"tokenizer": 5, "legacy": 95})
    r = client.patch("/weights", json={"tokenizer": 25}, headers={"Idempotency-Key": "CHG-1:canary-25:apply:1"})
    assert r.json() == {"tokenizer": 25, "legacy": 95}
    r = client.post("/weights", json={"tokenizer": 100}, headers={"Idempotency-Key": "CHG-1:full:apply:1"})
    assert r.json() == {"tokenizer": 100}
    assert client.get("/weights").json() == {"tokenizer": 100}
    assert sandbox.state("/weights") == {"tokenizer": 100}
    assert sandbox.state("/nowhere") is None


def test_delete_removes_a_document(client: httpx.Client, sandbox: Sandbox) -> None:
    r = client.delete("/sorter/profile", headers={"Idempotency-Key": "OPS-1:zone-1:apply:1"})
    assert r.status_code == 200
    assert sandbox.state("/sorter/profile") is None
    assert client.get("/sorter/profile").status_code == 404


def test_same_key_twice_is_applied_once_and_answers_the_first_response(
    client: httpx.Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    key = "CHG-1:canary-5:apply:1"
    first = put(client, "/weights", {"tokenizer": 5, "legacy": 95}, key, **{"X-Stagehold-Role": "executor"})
    put(client, "/weights", {"tokenizer": 25, "legacy": 75}, "CHG-1:canary-25:apply:1")
    clock.advance(30)
    again = put(client, "/weights", {"tokenizer": 5, "legacy": 95}, key)
    assert again.status_code == first.status_code == 200
    assert again.json() == first.json() == {"tokenizer": 5, "legacy": 95}
    # The replay did not move the live state back.
    assert client.get("/weights").json() == {"tokenizer": 25, "legacy": 75}
    log = sandbox.applied()
    assert [e["key"] for e in log] == [key, "CHG-1:canary-25:apply:1"]
    assert log[0] == {
        "key": key,
        "method": "PUT",
        "path": "/weights",
        "body": {"tokenizer": 5, "legacy": 95},
        "role": "executor",
        "at": "2026-11-28T22:00:00.000000Z",
    }
    assert log[1]["role"] is None
    assert client.get("/applied").json() == {"applied": log}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Idempotency-Key": ""}, id="blank"),
        pytest.param({"Idempotency-Key": "just-a-key"}, id="no-structure"),
        pytest.param({"Idempotency-Key": "CHG-1:canary-5:forward:1"}, id="unknown-direction"),
        pytest.param({"Idempotency-Key": "canary-5:apply:1"}, id="no-execution"),
    ],
)
def test_a_write_without_a_well_formed_key_is_refused(
    client: httpx.Client, sandbox: Sandbox, headers: dict[str, str]
) -> None:
    r = client.put("/weights", json={"tokenizer": 5}, headers=headers)
    assert r.status_code == 400
    assert "Idempotency-Key" in r.json()["error"]
    assert sandbox.applied() == []
    assert sandbox.state("/weights") == {"tokenizer": 0, "legacy": 100}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_a_malformed_body_is_refused_without_a_traceback(
    client: httpx.Client, sandbox: Sandbox, content: bytes
) -> None:
    r = client.put(
        "/weights",
        content=content,
        headers={"Idempotency-Key": "CHG-1:canary-5:apply:1", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "Traceback" not in r.text
    assert r.json()["error"].startswith("body must be")
    assert sandbox.applied() == []


def test_reserved_endpoints_are_read_only(client: httpx.Client, sandbox: Sandbox) -> None:
    for path in ("/healthz", "/parity", "/snapshots/latest", "/backends/legacy/health", "/feeds/bank"):
        r = client.put(path, json={"ok": False}, headers={"Idempotency-Key": "CHG-1:s:apply:1"})
        assert r.status_code == 405, path
    assert sandbox.applied() == []
    assert client.get("/backends/legacy/health").json() == {"ok": True}


# ---------------------------------------------------------------- credentials


def test_rollback_credential_cannot_drive_forward_progression(
    secured_client: httpx.Client, secured_sandbox: Sandbox
) -> None:
    body = {"tokenizer": 5, "legacy": 95}
    key = "CHG-1:canary-5:apply:1"
    refused = put(secured_client, "/weights", body, key, Authorization=f"Bearer {TOKENS['rollback']}")
    assert refused.status_code == 403
    assert TOKENS["rollback"] not in refused.text
    assert secured_sandbox.applied() == []
    assert secured_sandbox.state("/weights") == {"tokenizer": 0, "legacy": 100}
    # A refusal is not remembered by key: the right credential may send the same key.
    accepted = put(secured_client, "/weights", body, key, Authorization=f"Bearer {TOKENS['executor']}")
    assert accepted.status_code == 200
    assert [e["key"] for e in secured_sandbox.applied()] == [key]


def test_executor_credential_cannot_roll_back(secured_client: httpx.Client, secured_sandbox: Sandbox) -> None:
    body = {"tokenizer": 0, "legacy": 100}
    key = "CHG-1:canary-5:rollback:1"
    assert put(secured_client, "/weights", body, key, Authorization=f"Bearer {TOKENS['executor']}").status_code == 403
    assert put(secured_client, "/weights", body, key, Authorization=f"Bearer {TOKENS['rollback']}").status_code == 200
    assert [e["key"] for e in secured_sandbox.applied()] == [key]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKENS['executor']}", f"Bearer {TOKENS['preflight']}"],
)
def test_writes_without_the_executor_token_are_forbidden(
    secured_client: httpx.Client, secured_sandbox: Sandbox, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = put(secured_client, "/weights", {"tokenizer": 5}, "CHG-1:canary-5:apply:1", **headers)
    assert r.status_code == 403
    assert secured_sandbox.applied() == []


def test_reads_need_no_credential(secured_client: httpx.Client) -> None:
    assert secured_client.get("/weights").status_code == 200
    assert secured_client.get("/healthz").json() == {"ok": True}


def test_unknown_role_in_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="approver"):
        Sandbox(tokens={"approver": "x"})


# ---------------------------------------------------------------- faults


def test_fault_control_endpoint_sets_adds_clears_and_names_unknown_faults(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    assert client.get("/faults").json() == {"active": []}
    assert client.post("/faults", json={"set": ["no-data", "snapshot-stale"]}).json() == {
        "active": ["snapshot-stale", "no-data"]
    }
    assert client.post("/faults", json={"add": ["rollback-fail"]}).json()["active"] == [
        "snapshot-stale",
        "no-data",
        "rollback-fail",
    ]
    assert client.post("/faults", json={"clear": ["no-data"]}).json()["active"] == ["snapshot-stale", "rollback-fail"]
    bad = client.post("/faults", json={"add": ["disk-full", "no-data"]})
    assert bad.status_code == 400
    assert "disk-full" in bad.json()["error"]
    assert sandbox.faults() == ["snapshot-stale", "rollback-fail"]
    assert client.post("/faults", json={"set": "no-data"}).status_code == 400
    assert client.post("/faults", json={"set": [], "add": []}).status_code == 400


def test_python_fault_api_refuses_unknown_names(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="disk-full"):
        sandbox.set_faults(["no-data", "disk-full"])
    with pytest.raises(ValueError):
        sandbox.add_fault("disk-full")
    assert sandbox.faults() == []


ERROR_RATIO = (
    'sum(rate(authz_errors_total{svc="tokenizer"}[1m])) / sum(rate(authz_requests_total{svc="tokenizer"}[1m]))'
)
VARIANCE = 'max(abs(forecast_variance_ratio{engine="v2"}))'
MISROUTE = 'sum(rate(sorter_misroutes_total{profile="v42"}[5m])) / sum(rate(sorter_parcels_total{profile="v42"}[5m]))'
THROUGHPUT = 'sum(sorter_throughput_per_hour{profile="v42"})'


def _read(client: httpx.Client, what: str) -> Any:
    kind, _, arg = what.partition(" ")
    if kind == "query":
        return query_value(client, arg)
    r = client.get(arg)
    return (r.status_code, r.json())


# (fault, what to read, normal answer, answer under the fault)
FAULT_TABLE = [
    ("error-rate-high", f"query {ERROR_RATIO}", 0.002, 0.05),
    ("error-rate-high", f"query {VARIANCE}", 0.01, 0.12),
    ("error-rate-high", f"query {MISROUTE}", 0.001, 0.02),
    ("error-rate-high", f"query {THROUGHPUT}", 5200, 3000),
    ("error-rate-high", "get /parity", (200, {"mismatch_ratio": 0.0, "compared": 1000}), (200, {"mismatch_ratio": 0.004, "compared": 1000})),
    ("error-rate-degraded", f"query {ERROR_RATIO}", 0.002, 0.015),
    ("error-rate-degraded", f"query {VARIANCE}", 0.01, 0.04),
    ("error-rate-degraded", f"query {MISROUTE}", 0.001, 0.007),
    ("error-rate-degraded", f"query {THROUGHPUT}", 5200, 4300),
    ("error-rate-degraded", "get /parity", (200, {"mismatch_ratio": 0.0, "compared": 1000}), (200, {"mismatch_ratio": 0.0005, "compared": 1000})),
    ("dependency-down", "get /dependencies/vault/health", (200, {"ok": True}), (200, {"ok": False})),
    ("dependency-down", "get /feeds/bank-statements", (200, {"ratio": 0.998, "latency_seconds": 120, "count": 500}), (200, {"ratio": 0.6, "latency_seconds": 3600, "count": 500})),
    ("snapshot-stale", "get /snapshots/latest", (200, {"id": "snap-20261128T215800Z", "age_seconds": 120}), (200, {"id": "snap-20261127T210000Z", "age_seconds": 90000})),
    ("snapshot-missing", "get /snapshots/latest", (200, {"id": "snap-20261128T215800Z", "age_seconds": 120}), (404, {"error": "no snapshot"})),
    ("no-data", f"query {ERROR_RATIO}", 0.002, None),
    ("no-data", 'query sum(authz_requests_total{svc="tokenizer"})', 1200, None),
    ("readback-fail", "get /weights", (200, {"tokenizer": 0, "legacy": 100}), (500, {"error": "injected fault: readback-fail"})),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "what", "normal", "faulted"), FAULT_TABLE)
def test_each_fault_changes_its_answer_and_clearing_restores_it(
    client: httpx.Client, sandbox: Sandbox, fault: str, what: str, normal: Any, faulted: Any
) -> None:
    assert _read(client, what) == normal
    sandbox.add_fault(fault)
    assert _read(client, what) == faulted
    sandbox.clear_fault(fault)
    assert _read(client, what) == normal


def test_every_fault_is_covered_by_a_test() -> None:
    covered = {row[0] for row in FAULT_TABLE} | {"apply-timeout", "rollback-fail"}
    assert covered == set(FAULTS)


def test_readback_fail_leaves_health_and_control_endpoints_alone(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.add_fault("readback-fail")
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/backends/legacy/health").json() == {"ok": True}
    assert client.get("/applied").status_code == 200


def test_rollback_fail_refuses_rollback_writes_only_and_keeps_the_key_usable(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.add_fault("rollback-fail")
    assert put(client, "/weights", {"tokenizer": 5, "legacy": 95}, "CHG-1:canary-5:apply:1").status_code == 200
    back = {"tokenizer": 0, "legacy": 100}
    failed = put(client, "/weights", back, "CHG-1:canary-5:rollback:1")
    assert failed.status_code == 500
    assert sandbox.state("/weights") == {"tokenizer": 5, "legacy": 95}
    assert [e["key"] for e in sandbox.applied()] == ["CHG-1:canary-5:apply:1"]
    sandbox.clear_fault("rollback-fail")
    assert put(client, "/weights", back, "CHG-1:canary-5:rollback:1").status_code == 200
    assert sandbox.state("/weights") == back


def test_apply_timeout_applies_then_the_client_times_out(sandbox: Sandbox) -> None:
    sandbox.add_fault("apply-timeout")
    key = "CHG-1:canary-5:apply:1"
    with httpx.Client(base_url=sandbox.url, timeout=0.5) as impatient:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            put(impatient, "/weights", {"tokenizer": 5, "legacy": 95}, key)
        assert time.monotonic() - started < 5
        # The write landed even though no answer came back.
        assert sandbox.state("/weights") == {"tokenizer": 5, "legacy": 95}
        assert [e["key"] for e in sandbox.applied()] == [key]
        sandbox.clear_fault("apply-timeout")
        replay = put(impatient, "/weights", {"tokenizer": 5, "legacy": 95}, key)
    assert (replay.status_code, replay.json()) == (200, {"tokenizer": 5, "legacy": 95})
    assert len(sandbox.applied()) == 1


def test_stop_releases_a_write_held_by_apply_timeout(clock: FakeClock) -> None:
    box = Sandbox(clock=clock).start()
    box.add_fault("apply-timeout")
    outcome: list[str] = []

    def send() -> None:
        try:
            with httpx.Client(base_url=box.url, timeout=60) as patient:
                put(patient, "/weights", {"tokenizer": 5}, "CHG-1:canary-5:apply:1")
            outcome.append("answered")
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 5
    while not box.applied() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    box.stop()
    sender.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not sender.is_alive()
    assert outcome and outcome[0] != "answered"


def test_context_manager_serves_then_stops(clock: FakeClock) -> None:
    with Sandbox(clock=clock) as box:
        url = box.url
        assert httpx.get(f"{url}/healthz").json() == {"ok": True}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    with pytest.raises(RuntimeError):
        _ = box.url


def test_one_connection_carries_many_requests_without_nagle_and_stop_ends_it(clock: FakeClock) -> None:
    box = Sandbox(clock=clock).start()
    url = box.url
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        reader = conn.makefile("rb")
        for path in ("/healthz", "/parity", "/weights"):
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            headers = list(iter(reader.readline, b"\r\n"))
            length = next(int(h.split(b":")[1]) for h in headers if h.lower().startswith(b"content-length"))
            assert reader.read(length)
        # The server's side of this same connection answers without Nagle's delay.
        accepted = list(box._server._open) if box._server is not None else []
        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        box.stop()
        assert reader.read() == b""  # a stopped sandbox closed the kept-alive connection too
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


# ---------------------------------------------------------------- metrics and the query API

_SAMPLE = re.compile(r'^([a-z_]+)\{([a-z]+)="([^"]*)"\} ([0-9.eE+-]+)$')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, float]]:
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"unparseable sample line {line!r}"
            assert m.group(1) in types, f"{m.group(1)} has no TYPE line before it"
            samples[f"{m.group(1)}{{{m.group(2)}={m.group(3)}}}"] = float(m.group(4))
    return types, samples


def test_metrics_text_parses_and_counters_grow_with_time(
    client: httpx.Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    first = client.get("/metrics")
    assert first.headers["content-type"].startswith("text/plain")
    types, before = parse_exposition(first.text)
    assert types == {
        "authz_requests_total": "counter",
        "authz_errors_total": "counter",
        "forecast_points_total": "counter",
        "forecast_variance_ratio": "gauge",
        "sorter_parcels_total": "counter",
        "sorter_misroutes_total": "counter",
        "sorter_throughput_per_hour": "gauge",
    }
    clock.advance(60)
    _, after = parse_exposition(client.get("/metrics").text)
    for name in (
        "authz_requests_total{svc=tokenizer}",
        "forecast_points_total{engine=v2}",
        "sorter_parcels_total{profile=v42}",
    ):
        assert after[name] > before[name], name
    requests = after["authz_requests_total{svc=tokenizer}"] - before["authz_requests_total{svc=tokenizer}"]
    errors = after["authz_errors_total{svc=tokenizer}"] - before["authz_errors_total{svc=tokenizer}"]
    assert errors / requests == pytest.approx(0.002)
    # Under a fault the error counter grows faster, and no counter ever goes down.
    sandbox.add_fault("error-rate-high")
    clock.advance(60)
    _, later = parse_exposition(client.get("/metrics").text)
    more_requests = later["authz_requests_total{svc=tokenizer}"] - after["authz_requests_total{svc=tokenizer}"]
    more_errors = later["authz_errors_total{svc=tokenizer}"] - after["authz_errors_total{svc=tokenizer}"]
    assert more_errors / more_requests == pytest.approx(0.05)
    assert later["sorter_throughput_per_hour{profile=v42}"] == 3000
    assert all(later[k] >= after[k] for k in later if "total" in k)


def test_query_api_answers_the_prometheus_instant_vector_shape(client: httpx.Client, clock: FakeClock) -> None:
    body = query(client, ERROR_RATIO)
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    (series,) = body["data"]["result"]
    assert series["metric"] == {}
    ts, value = series["value"]
    assert isinstance(ts, float)
    assert ts == clock().timestamp()
    assert value == "0.002"
    clock.advance(90)
    assert query(client, ERROR_RATIO)["data"]["result"][0]["value"][0] == clock().timestamp()


@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        (ERROR_RATIO, 0.002),  # errors win over the requests the same query mentions
        ('sum(increase(authz_requests_total{svc="tokenizer"}[1m]))', 1200),
        (VARIANCE, 0.01),
        ('sum(forecast_points_total{engine="v2"})', 400),
        (MISROUTE, 0.001),
        ('sum(increase(sorter_parcels_total{profile="v42"}[5m]))', 900),
        (THROUGHPUT, 5200),
        ("up", None),
        ("rate(http_requests_total[5m])", None),
    ],
)
def test_query_answers_by_the_first_metric_family_mentioned(
    client: httpx.Client, promql: str, expected: float | None
) -> None:
    assert query_value(client, promql) == expected


def test_query_without_a_query_is_a_prometheus_error(client: httpx.Client) -> None:
    r = client.get("/api/v1/query")
    assert r.status_code == 400
    assert r.json()["status"] == "error"


def test_query_accepts_a_form_post_like_prometheus(client: httpx.Client) -> None:
    r = client.post("/api/v1/query", data={"query": THROUGHPUT})
    assert r.json()["data"]["result"][0]["value"][1] == "5200"


# ---------------------------------------------------------------- the command


def test_stagehold_sandbox_command_serves_quietly_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "--port", "0", "--fault", "apply-timeout"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=0.5) as c:
            assert c.get("/faults").json() == {"active": ["apply-timeout"]}
            assert c.get("/nowhere").status_code == 404
            with pytest.raises(httpx.ReadTimeout):
                put(c, "/weights", {"tokenizer": 5}, "CHG-1:canary-5:apply:1")
            assert c.get("/weights").json() == {"tokenizer": 5}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # No request log lines and no tracebacks: only the goodbye.
    assert err.strip() == "sandbox stopped"
