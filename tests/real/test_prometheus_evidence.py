"""Evidence from a real Prometheus (Debian's 2.42) scraping exporters the test controls.

Each case is one the engine used to get wrong on a real Prometheus: staleness that never fired,
a dead series hidden by a healthy one, an unreachable server, and a label typo found only inside
the change window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot import exits
from bot.bootstrap import http_client
from bot.cli import main
from execution.adapters.prometheus import PrometheusReader
from execution.contract.models import Signal, Target
from execution.evaluate import Result, evaluate
from execution.model import Credentials, Outcome, Role
from execution.sandbox import Sandbox
from tests.fakes import write_change
from tests.real.prometheus import Exporter, PrometheusServer, poll


def utc_now() -> datetime:
    return datetime.now(UTC)


def _exporters() -> tuple[Exporter, Exporter]:
    a = Exporter().set("app_value", 1.0, shard="a").set("app_requests_total", 100.0, shard="a").start()
    b = Exporter().set("app_value", 1.0, shard="b").set("app_requests_total", 100.0, shard="b").start()
    return a, b


def _started(workdir: Path) -> tuple[tuple[Exporter, Exporter], PrometheusServer]:
    exporters = _exporters()
    return exporters, PrometheusServer(workdir, {"app": list(exporters)}).start()


def _scraping(prom: PrometheusServer) -> PrometheusServer:
    prom.wait_for_series('up{job="app"} == 1', count=2)
    prom.wait_for_series("app_value", count=2)
    return prom


# Prometheus applies new scrape targets only every 5 s, so each server takes that long to start
# scraping: cases that change nothing share one; cases that stop or change things get their own.
# All of them are started together, so the module waits those 5 s once, not once per server.
OWN_SERVERS = 4  # the cases using the ``prometheus`` fixture


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[tuple[tuple[Exporter, Exporter], PrometheusServer]]]:
    made: list[tuple[tuple[Exporter, Exporter], PrometheusServer]] = []
    try:
        for _ in range(1 + OWN_SERVERS):
            made.append(_started(tmp_path_factory.mktemp("prometheus")))
        yield list(made)
    finally:
        for exporters, prom in made:
            prom.stop()
            for exporter in exporters:
                exporter.stop()


@pytest.fixture(scope="module")
def shared(servers: list[tuple[tuple[Exporter, Exporter], PrometheusServer]]) -> PrometheusServer:
    return _scraping(servers[0][1])


@pytest.fixture
def own(
    servers: list[tuple[tuple[Exporter, Exporter], PrometheusServer]], tmp_path: Path
) -> Iterator[tuple[tuple[Exporter, Exporter], PrometheusServer]]:
    """A server of the case's own, with its exporters: one started with the others if one is left."""
    if len(servers) > 1:
        exporters, prom = servers.pop()
        yield exporters, _scraping(prom)
        return
    exporters, prom = _started(tmp_path)
    try:
        yield exporters, _scraping(prom)
    finally:
        prom.stop()
        for exporter in exporters:
            exporter.stop()


@pytest.fixture
def exporters(own: tuple[tuple[Exporter, Exporter], PrometheusServer]) -> tuple[Exporter, Exporter]:
    return own[0]


@pytest.fixture
def prometheus(own: tuple[tuple[Exporter, Exporter], PrometheusServer]) -> PrometheusServer:
    return own[1]


def judge(prom: PrometheusServer, spec: dict[str, Any], condition: str, max_age: str = "5s") -> Result:
    signal = Signal.model_validate({"prometheus": {"target": "metrics", **spec}, "max_age": max_age})
    client = http_client(5.0)
    try:
        targets = {"metrics": Target(kind="prometheus", url=prom.url)}
        evidence = PrometheusReader(targets, Credentials(), client, utc_now).read("s", signal, Role.VERIFIER)
    finally:
        client.close()
    assert signal.prometheus is not None
    return evaluate("check", evidence, condition, float(max_age.rstrip("s")), utc_now())


def test_healthy_series_pass_with_their_real_age(shared: PrometheusServer) -> None:
    result = judge(shared, {"query": 'up{job="app"}'}, "== 1")
    assert result.outcome == Outcome.PASS, result.detail
    assert result.series == 2 and result.series_not_passing == 0
    # The age is that of the newest raw sample: scraped every second, never older than a few seconds.
    assert result.age_s is not None and result.age_s < 4.0


def test_one_target_down_is_not_hidden_by_a_healthy_one(
    prometheus: PrometheusServer, exporters: tuple[Exporter, Exporter]
) -> None:
    _, b = exporters
    b.stop()
    prometheus.wait_for_series('up{job="app"} == 0')
    result = judge(prometheus, {"query": 'up{job="app"}'}, "== 1")
    assert result.outcome == Outcome.FAIL
    assert result.value == 0
    assert result.labels is not None and result.labels["instance"] == b.address
    assert f'instance="{b.address}"' in result.detail and "1 of 2 series not passing" in result.detail
    # Only when the plan asks for it does the largest value decide.
    assert judge(prometheus, {"query": 'up{job="app"}', "reduce": "max"}, "== 1").outcome == Outcome.PASS


STOPPED = {
    # last_over_time keeps answering the old value after the scrape stops; its age says stale.
    "last_over_time(app_value[5m])": Outcome.STALE,
    'max(last_over_time(app_value{shard="a"}[5m]))': Outcome.STALE,
    # A plain selector: Prometheus marks the series stale itself and the answer is empty.
    "max(app_value)": Outcome.NO_DATA,
}


def test_a_stopped_scrape_is_never_a_pass_within_max_age(
    prometheus: PrometheusServer, exporters: tuple[Exporter, Exporter]
) -> None:
    for query in STOPPED:
        assert judge(prometheus, {"query": query}, "== 1").outcome == Outcome.PASS, query
    for exporter in exporters:
        exporter.stop()
    for query, outcome in STOPPED.items():
        result = poll(
            lambda q=query: judge(prometheus, {"query": q}, "== 1", max_age="5s"),  # type: ignore[misc]
            lambda r: r.outcome != Outcome.PASS,
            within_s=5.0 + 3.0,  # max_age plus a scrape interval and the time to ask
            what=f"{query} to stop passing",
        )
        assert result.outcome == outcome, (query, result.detail)
        if outcome == Outcome.STALE:
            assert result.value == 1.0  # the old value is still answered: only its age tells


def test_an_unreachable_prometheus_is_an_error(prometheus: PrometheusServer) -> None:
    prometheus.stop()
    result = judge(prometheus, {"query": 'up{job="app"}'}, "== 1")
    assert result.outcome == Outcome.ERROR
    assert "failed" in result.detail


def test_a_query_error_and_an_infinite_value_are_errors_and_nan_is_no_data(shared: PrometheusServer) -> None:
    # Parses (so it passes validate), but Prometheus refuses it: many-to-many matching.
    refused = judge(shared, {"query": "app_value + on() app_value"}, "== 1")
    assert refused.outcome == Outcome.ERROR and "many-to-many" in refused.detail
    infinite = judge(shared, {"query": "sum(app_value) / (sum(app_value) - sum(app_value))"}, "< 1")
    assert infinite.outcome == Outcome.ERROR and "infinite" in infinite.detail
    nan = judge(shared, {"query": "(sum(app_value) - sum(app_value)) / (sum(app_value) - sum(app_value))"}, "< 1")
    assert nan.outcome == Outcome.NO_DATA


def test_a_range_query_judges_every_point(prometheus: PrometheusServer, exporters: tuple[Exporter, Exporter]) -> None:
    a, _ = exporters
    spec = {"query": 'app_value{shard="a"}', "range": {"window": "30s", "step": "1s"}}
    assert judge(prometheus, spec, "== 1").outcome == Outcome.PASS
    a.set("app_value", 5.0, shard="a")
    prometheus.wait_for_series('app_value{shard="a"} == 5')
    # The newest point is 5; every point must meet "== 1", so the range fails and names 5.
    result = judge(prometheus, spec, "== 1")
    assert result.outcome == Outcome.FAIL and result.value == 5.0


# ---------------------------------------------------------------- stagehold probe

PLAN = """stagehold: 1
kind: execution-plan
name: probe-me
version: 1
signals:
  targets_up:
    prometheus: {{target: metrics, query: 'up{{job="app"}}'}}
    max_age: 30s
  value:
    prometheus: {{target: metrics, query: 'sum(app_value{{shard="{shard}"}})'}}
    max_age: 30s
  legacy_ok: {{http: {{target: router, path: /backends/legacy/health, field: ok}}, max_age: 30s}}
rollback_readiness:
  - {{signal: legacy_ok, pass: "== true"}}
stages:
  - id: canary
    blast_radius: 5
    preflight: [{{signal: targets_up, pass: "== 1"}}]
    action: {{http: {{target: router, method: PUT, path: /weights, json: {{tokenizer: 5, legacy: 95}}}}}}
    confirm: {{http: {{target: router, path: /weights, expect: {{tokenizer: 5}}}}}}
    verify:
      bake: 1m
      every: 10s
      checks:
        - {{signal: value, pass: "== 1"}}
    rollback:
      action: {{http: {{target: router, method: PUT, path: /weights, json: {{tokenizer: 0, legacy: 100}}}}}}
      confirm: {{http: {{target: router, path: /weights, expect: {{tokenizer: 0}}}}}}
"""


def write_package(directory: Path, prometheus_url: str, router_url: str, shard: str) -> Path:
    targets = {
        "router": f'{{kind: http, url: "{router_url}"}}',
        "metrics": f'{{kind: prometheus, url: "{prometheus_url}"}}',
    }
    return write_change(directory, PLAN.format(shard=shard), "CHG-PROBE", targets)


def probe_json(package: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["probe", str(package), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_probe_finds_a_label_typo_before_the_window(
    shared: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus = shared
    with Sandbox() as router:
        good = write_package(tmp_path, prometheus.url, router.url, shard="a")
        code, report = probe_json(good, capsys)
        assert code == exits.OK, report
        assert {c["signal"]: c["outcome"] for c in report["checks"]} == {
            "targets_up": "pass",
            "legacy_ok": "pass",
            "value": "pass",
        }
        # Read-backs are read, never written: before the change the apply read-back differs.
        assert {(r["direction"], r["status"]) for r in report["readbacks"]} == {
            ("apply", "differs"),
            ("rollback", "matches"),
        }
        assert router.applied() == []

        typo = write_package(tmp_path, prometheus.url, router.url, shard="a-typo")
        code, report = probe_json(typo, capsys)
        assert code == exits.HELD
        outcomes = {c["signal"]: c["outcome"] for c in report["checks"]}
        assert outcomes["value"] == "no_data" and outcomes["targets_up"] == "pass"

        code = main(["probe", str(typo)])
        printed = capsys.readouterr().out
        assert code == exits.HELD and "NO_DATA" in printed and "value" in printed


def test_probe_of_an_invalid_package_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = write_package(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9", shard="a")
    plan = (tmp_path / "plan.yaml").read_text().replace("sum(app_value", "sum(rate(app_value")
    write_change(tmp_path, plan, "CHG-PROBE", {"router": '{kind: http, url: "http://127.0.0.1:9"}'})
    assert main(["probe", str(package)]) == exits.INVALID
    err = capsys.readouterr().err
    assert "plan.yaml:10: signals.value.prometheus.query: PromQL does not parse" in err
