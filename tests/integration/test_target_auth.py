"""Per-target auth and transport on the wire: basic auth, tenant and secret headers, per-signal
timeouts, from settings only, never written to the ledger, and the same after a restart."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.bootstrap import build_engine, http_client, live_connector, open_store
from bot.clock import utc_now
from bot.driver import drive
from bot.settings import SettingsError, load_settings
from execution.adapters.prometheus import PrometheusReader
from execution.contract import load_change
from execution.contract.models import Signal, Target
from execution.model import Credentials, Role, TargetAuth
from execution.sandbox import Sandbox
from tests.fakes import write_change

USER, PASSWORD, TENANT, API_KEY = "stagehold", "pw-Zq81xk", "tenant-a", "key-77aa91"
EXPECTED = {"authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


class FakePrometheus:
    """Answers the Prometheus query API only to requests carrying the expected headers; records all."""

    def __init__(self, expected: dict[str, str]) -> None:
        self.expected = expected
        self.seen: list[dict[str, str]] = []
        self.refused = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.seen.append(headers)
                query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                if "slow" in query:
                    time.sleep(2.0)
                if any(headers.get(k) != v for k, v in owner.expected.items()):
                    owner.refused += 1
                    self._send(401, {"status": "error", "error": "unauthorized"})
                    return
                now = time.time()
                value = str(now) if query.startswith("timestamp(") else "0.001"
                result = [{"metric": {}, "value": [now, value]}]
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus({**EXPECTED, "x-scope-orgid": TENANT, "x-api-key": API_KEY})
    try:
        yield fake
    finally:
        fake.stop()


def signal(query: str = 'sum(app_errors{svc="x"})', timeout: str | None = None) -> Signal:
    spec: dict[str, Any] = {"target": "metrics", "query": query}
    if timeout is not None:
        spec["timeout"] = timeout
    return Signal.model_validate({"prometheus": spec, "max_age": "30s"})


def reader(url: str, auth: TargetAuth | None, headers: dict[str, str] | None = None) -> PrometheusReader:
    targets = {"metrics": Target(kind="prometheus", url=url, headers=headers or {})}
    creds = Credentials({Role.VERIFIER: "role-token-1234"}, {"metrics": auth} if auth else {})
    return PrometheusReader(targets, creds, http_client(5.0), utc_now)


def test_basic_auth_and_headers_reach_the_target(prom: FakePrometheus) -> None:
    auth = TargetAuth(username=USER, password=PASSWORD, headers={"X-Api-Key": API_KEY})
    evidence = reader(prom.url, auth, {"X-Scope-OrgID": TENANT}).read("e", signal(), Role.VERIFIER)
    assert evidence.error is None and evidence.series[0].value == 0.001
    assert prom.refused == 0 and len(prom.seen) == 2  # the value and the age of its raw data
    assert all("role-token-1234" not in json.dumps(h) for h in prom.seen)  # the target's auth replaces it


def test_without_the_targets_auth_the_read_is_an_error_naming_no_secret(prom: FakePrometheus) -> None:
    evidence = reader(prom.url, None, {"X-Scope-OrgID": TENANT}).read("e", signal(), Role.VERIFIER)
    assert evidence.error is not None and "unauthorized" in evidence.error
    assert prom.seen[0]["authorization"] == "Bearer role-token-1234"  # the role's own credential


def test_a_signals_timeout_is_its_own(prom: FakePrometheus) -> None:
    auth = TargetAuth(username=USER, password=PASSWORD, headers={"X-Api-Key": API_KEY})
    started = time.monotonic()
    evidence = reader(prom.url, auth, {"X-Scope-OrgID": TENANT}).read(
        "e", signal("sum(slow_metric)", timeout="300ms"), Role.VERIFIER
    )
    assert time.monotonic() - started < 1.5  # the 5 s default would have waited the 2 s answer
    assert evidence.error is not None and "Timeout" in evidence.error


def test_settings_give_per_target_auth_and_refuse_bad_input_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "STAGEHOLD_TARGET_AUTH",
        json.dumps({"metrics": {"basic": {"username": USER, "password": PASSWORD}, "headers": {"X-Api-Key": API_KEY}}}),
    )
    creds = load_settings().credentials()
    assert creds.targets["metrics"] == TargetAuth(username=USER, password=PASSWORD, headers={"X-Api-Key": API_KEY})
    assert PASSWORD not in repr(load_settings())

    file = tmp_path / "auth.yaml"
    file.write_text(f"metrics:\n  bearer: {API_KEY}\n", encoding="utf-8")
    monkeypatch.setenv("STAGEHOLD_TARGET_AUTH_FILE", str(file))
    assert load_settings().credentials().targets["metrics"].bearer == API_KEY  # the file wins

    file.write_text(f"metrics:\n  bearer: {API_KEY}\n  basic: {{username: u, password: {PASSWORD}}}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "bearer or basic" in str(caught.value) and PASSWORD not in str(caught.value)

    monkeypatch.delenv("STAGEHOLD_TARGET_AUTH_FILE")
    monkeypatch.setenv("STAGEHOLD_TARGET_AUTH", json.dumps({"metrics": {"ca_bundle": str(tmp_path / "none.pem")}}))
    with pytest.raises(SettingsError, match="file not found"):
        load_settings()


PLAN = """stagehold: 1
kind: execution-plan
name: auth-after-restart
version: 1
signals:
  errors:
    prometheus: {target: metrics, query: 'sum(app_errors{svc="x"})'}
    max_age: 30s
  legacy_ok: {http: {target: router, path: /backends/legacy/health, field: ok}, max_age: 30s}
rollback_readiness:
  - {signal: legacy_ok, pass: "== true"}
stages:
  - id: canary
    blast_radius: 5
    action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 5, legacy: 95}}}
    confirm: {http: {target: router, path: /weights, expect: {tokenizer: 5}}}
    verify:
      bake: 3s
      every: 1s
      checks:
        - {signal: errors, pass: "< 0.01"}
    rollback:
      action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 0, legacy: 100}}}
      confirm: {http: {target: router, path: /weights, expect: {tokenizer: 0}}}
"""


def test_auth_from_settings_survives_a_restart_and_never_reaches_the_ledger(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "STAGEHOLD_TARGET_AUTH",
        json.dumps({"metrics": {"basic": {"username": USER, "password": PASSWORD}, "headers": {"X-Api-Key": API_KEY}}}),
    )
    with Sandbox() as router:
        targets = {
            "router": f'{{kind: http, url: "{router.url}"}}',
            "metrics": f'{{kind: prometheus, url: "{prom.url}", headers: {{X-Scope-OrgID: {TENANT}}}}}',
        }
        package = write_change(tmp_path, PLAN, "CHG-AUTH", targets)
        store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            # The first process starts the execution and takes the first sample, then goes away.
            client = http_client(5.0)
            first = build_engine(store, live_connector(load_settings().credentials(), client, utc_now))
            state = first.start(load_change(package), "U05OPS", (), mode="live")
            first.tick(state.execution_id)
            assert len(prom.seen) >= 2 and prom.refused == 0
            first.let_go(state.execution_id)
            client.close()
            before = len(prom.seen)

            # A new process rebuilds the targets from the ledger and its secrets from settings.
            client = http_client(5.0)
            second = build_engine(store, live_connector(load_settings().credentials(), client, utc_now))
            second.resume(state.execution_id)
            done = drive(second, state.execution_id)
            client.close()
            assert done.status() == "completed"
            assert len(prom.seen) > before and prom.refused == 0
            ledger = json.dumps([e.to_json() for e in second.entries(state.execution_id)])
        finally:
            store.close()
    for secret in (PASSWORD, API_KEY, EXPECTED["authorization"].split()[1]):
        assert secret not in ledger
    assert TENANT in ledger  # the package's own, non-secret header is part of what was approved
