"""A plan the sandbox has never seen — its own signal names, paths, queries and targets, and every
kind of action (an HTTP form answered with 303, HAProxy weights, a command with stdin) — rehearses
to completion without editing any source, and faults by signal hold or roll it back."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot import exits
from bot.cli import main
from execution import events as ev
from execution.contract import load_change
from execution.sandbox import Sandbox
from tests.fakes import from_export

PLAN: dict[str, Any] = {
    "stagehold": 1,
    "kind": "execution-plan",
    "name": "cart-pricing-v3",
    "version": 1,
    "signals": {
        "checkout_p99_s": {
            "prometheus": {
                "target": "mimir",
                "query": 'histogram_quantile(0.99, sum by (le) (rate(cart_checkout_seconds_bucket{service="cart", tier="canary"}[2m])))',
                "samples": 'sum(increase(cart_checkout_seconds_count{service="cart"}[2m]))',
            },
            "max_age": "90s",
        },
        "pricing_drift": {
            "http": {
                "target": "pricing-admin",
                "path": "/v3/compare/summary",
                "field": "drift.ratio",
                "samples_field": "drift.compared",
                "time_field": "drift.at",
            },
            "max_age": "2m",
        },
        "old_pricer_up": {
            "http": {"target": "pricing-admin", "path": "/v2/pricer/status", "field": "up"},
            "max_age": "1m",
        },
        "queue_depth": {
            "command": {"target": "cartctl", "argv": ["/opt/cartctl/bin/cartctl", "queue", "--json"], "field": "depth"},
            "max_age": "1m",
        },
        "error_ratio": {
            "prometheus": {
                "target": "mimir",
                "query": 'sum(rate(cart_errors_total{service="cart"}[2m])) / sum(rate(cart_requests_total{service="cart"}[2m]))',
            },
            "max_age": "90s",
        },
    },
    "rollback_readiness": [{"signal": "old_pricer_up", "pass": "== true"}],
    "stages": [
        {
            "id": "canary",
            "blast_radius": 10,
            "preflight": [{"signal": "queue_depth", "pass": "< 500"}],
            "action": {
                "http": {
                    "target": "pricing-admin",
                    "method": "POST",
                    "path": "/admin/rollout",
                    "form": {"service": "cart", "pricer": "v3", "share": 10},
                    "headers": {"X-Tenant": "shop"},
                    "expect_status": [303],
                    "expect_location": "result=applied",
                }
            },
            "confirm": {
                "http": {"target": "pricing-admin", "path": "/admin/rollout/cart", "expect": {"pricer.v3.share": 10}}
            },
            "verify": {
                "bake": "1m",
                "every": "30s",
                "checks": [
                    {"signal": "checkout_p99_s", "pass": "< 0.8", "hold": "< 1.2", "min_samples": 50},
                    {"signal": "pricing_drift", "pass": "between 0 and 0.002", "hold": "< 0.01"},
                    {"signal": "error_ratio", "pass": "< 0.005"},
                ],
            },
            "rollback": {
                "action": {
                    "http": {
                        "target": "pricing-admin",
                        "method": "POST",
                        "path": "/admin/rollout",
                        "form": {"service": "cart", "pricer": "v3", "share": 0},
                        "expect_status": [303],
                    }
                },
                "confirm": {
                    "http": {"target": "pricing-admin", "path": "/admin/rollout/cart", "expect": {"pricer.v3.share": 0}}
                },
            },
        },
        {
            "id": "half",
            "blast_radius": 50,
            "hold_before": True,
            "action": {
                "haproxy": {"target": "edge-lb", "backend": "cart", "weights": {"pricer-v3": 50, "pricer-v2": 50}}
            },
            "confirm": {
                "haproxy": {
                    "target": "edge-lb",
                    "backend": "cart",
                    "expect": {"pricer-v3.weight": 50, "pricer-v2.weight": 50},
                }
            },
            "verify": {
                "bake": "1m",
                "every": "30s",
                "checks": [
                    {"signal": "checkout_p99_s", "pass": "< 0.8", "hold": "< 1.2", "min_samples": 50},
                    {"signal": "error_ratio", "pass": "< 0.005"},
                ],
            },
            "rollback": {
                "action": {
                    "haproxy": {"target": "edge-lb", "backend": "cart", "weights": {"pricer-v3": 0, "pricer-v2": 100}}
                },
                "confirm": {"haproxy": {"target": "edge-lb", "backend": "cart", "expect": {"pricer-v3.weight": 0}}},
            },
        },
        {
            "id": "all",
            "blast_radius": 100,
            "hold_before": True,
            "action": {
                "command": {
                    "target": "cartctl",
                    "argv": ["/opt/cartctl/bin/cartctl", "pricer", "set", "--stdin"],
                    "stdin": {"service": "cart", "pricer": "v3"},
                    "error_pattern": "^ERROR",
                    "expect_answer": {"applied": True},
                }
            },
            "confirm": {
                "command": {
                    "target": "cartctl",
                    "argv": ["/opt/cartctl/bin/cartctl", "pricer", "get"],
                    "expect": {"pricer": "v3"},
                }
            },
            "verify": {"bake": "1m", "every": "30s", "checks": [{"signal": "error_ratio", "pass": "< 0.005"}]},
            "rollback": {
                "action": {
                    "command": {
                        "target": "cartctl",
                        "argv": ["/opt/cartctl/bin/cartctl", "pricer", "set", "--stdin"],
                        "stdin": {"service": "cart", "pricer": "v2"},
                    }
                },
                "confirm": {
                    "command": {
                        "target": "cartctl",
                        "argv": ["/opt/cartctl/bin/cartctl", "pricer", "get"],
                        "expect": {"pricer": "v2"},
                    }
                },
            },
        },
    ],
}


def package_for(plan_file: Path) -> dict[str, Any]:
    return {
        "stagehold": 1,
        "kind": "change-package",
        "id": "SHOP-77",
        "title": "Cart pricing v3",
        "plan": plan_file.name,
        "plan_sha256": hashlib.sha256(plan_file.read_bytes()).hexdigest(),
        "window": {"opens": "2020-01-01T00:00:00Z", "closes": "2099-01-01T00:00:00Z"},
        "channel": "C0SHOP",
        "scope": {"targets": ["pricing-admin", "edge-lb", "cartctl"], "max_blast_radius": 100},
        "approved_by": [{"user": "U0CAB", "role": "change-authority", "at": "2020-01-01T00:00:00Z"}],
        "authorities": {
            "initiate": {"users": ["U0OPS"]},
            "release": {"users": ["U0ANA", "U0BEN"]},
            "rollback": {"users": ["U0ONCALL"]},
        },
        "targets": {
            "pricing-admin": {"kind": "http", "url": "https://pricing-admin.shop.internal"},
            "mimir": {"kind": "prometheus", "url": "https://mimir.shop.internal/prometheus"},
            "edge-lb": {"kind": "haproxy", "socket": "/run/haproxy/edge.sock"},
            "cartctl": {"kind": "command"},
        },
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cart")
    plan_file = directory / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(PLAN, sort_keys=False), encoding="utf-8")
    package_file = directory / "package.yaml"
    package_file.write_text(yaml.safe_dump(package_for(plan_file), sort_keys=False), encoding="utf-8")
    load_change(package_file)  # valid as written
    return package_file


def rehearse(package: Path, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], list[Any]]:
    out = tmp_path / "out"
    code = main(
        ["rehearse", str(package), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--out", str(out), "--quiet", *args]
    )
    state = json.loads((out / "state.json").read_text(encoding="utf-8")) if (out / "state.json").exists() else {}
    lines = (out / "ledger.jsonl").read_text(encoding="utf-8").splitlines() if state else []
    return code, state, from_export(lines) if lines else []


def test_a_new_plan_rehearses_to_completion_with_every_kind_of_action(package: Path, tmp_path: Path) -> None:
    code, state, entries = rehearse(package, tmp_path, "--auto-release")
    assert code == exits.OK, state
    assert [s["status"] for s in state["stages"]] == ["passed"] * 3
    sent = [(e.body["stage"], e.body["outcome"]) for e in entries if e.kind == ev.ACTION_SENT]
    # Every action was acknowledged as the plan expects (303 to the declared Location, ok from the
    # bridged HAProxy and command kinds): none ambiguous, none re-sent. Nothing ran for real:
    # /opt/cartctl does not exist and no HAProxy socket is open.
    assert sent == [("canary", "ok"), ("half", "ok"), ("all", "ok")]
    readbacks = [e for e in entries if e.kind == ev.ACTION_READ_BACK]
    assert [e.body["matches"] for e in readbacks] == [True] * 3
    assert readbacks[1].body["observed"] == {"pricer-v3": {"weight": 50}, "pricer-v2": {"weight": 50}}
    samples = [e for e in entries if e.kind == ev.VERIFICATION_SAMPLED]
    read = {r["signal"] for e in samples for r in e.body["results"]}
    assert read == {"checkout_p99_s", "pricing_drift", "error_ratio", "old_pricer_up"}  # its own signals
    assert {e.body["outcome"] for e in samples} == {"pass"}


@pytest.mark.parametrize(
    ("fault", "code", "status", "outcome"),
    [
        ("signal:checkout_p99_s=fail@half", exits.ROLLED_BACK, "rolled_back", "fail"),
        ("signal:checkout_p99_s=degraded@canary", exits.HELD, "held", "hold"),
        ("signal:pricing_drift=stale@canary", exits.HELD, "held", "stale"),
        ("signal:error_ratio=no-data@canary", exits.HELD, "held", "no_data"),
        ("signal:error_ratio=error@half", exits.HELD, "held", "error"),
    ],
)
def test_a_signal_fault_holds_or_rolls_the_new_plan_back(
    package: Path, tmp_path: Path, fault: str, code: int, status: str, outcome: str
) -> None:
    got, state, entries = rehearse(package, tmp_path, "--auto-release", "--fault", fault)
    assert got == code, state
    assert state["status"] == status
    outcomes = {e.body["outcome"] for e in entries if e.kind == ev.VERIFICATION_SAMPLED}
    assert outcome in outcomes
    if status == "rolled_back":
        undo = [e for e in entries if e.kind == ev.ACTION_READ_BACK and e.body["direction"] == "rollback"]
        assert undo and all(e.body["matches"] for e in undo)
        assert {"pricer-v3": {"weight": 0}} in [e.body["observed"] for e in undo] or any(
            e.body["observed"].get("pricer", {}).get("v3", {}).get("share") == 0 for e in undo
        )


def test_a_failing_gate_signal_stops_before_the_stage(package: Path, tmp_path: Path) -> None:
    got, state, entries = rehearse(package, tmp_path, "--fault", "signal:old_pricer_up=fail")
    assert got == exits.HELD
    assert state["status"] == "held"
    assert [e for e in entries if e.kind == ev.ACTION_INTENDED] == []


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        ("signal:nope=fail", "no signal 'nope'"),
        ("signal:queue_depth=stale", "cannot be stale"),
        ("signal:old_pricer_up=stale", "without time_field"),
        ("signal:error_ratio=degraded", "no hold band"),
        ("signal:error_ratio=melted", "unknown mode"),
        ("signal:error_ratio", "signal:NAME=MODE"),
        ("signal:error_ratio=fail@nowhere", "no stage 'nowhere'"),
    ],
)
def test_a_signal_fault_that_cannot_be_shown_exits_2_with_the_reason(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, fragment: str
) -> None:
    got, _, _ = rehearse(package, tmp_path, "--fault", fault)
    assert got == exits.INVALID
    assert fragment in capsys.readouterr().err


def test_post_faults_takes_signal_faults_for_taught_plans(package: Path) -> None:
    with Sandbox() as box, httpx.Client(base_url=box.url, timeout=5) as client:
        plan = load_change(package).plan.model_dump(mode="json", by_alias=True, exclude_none=True)
        refused = client.post("/faults", json={"add": ["signal:error_ratio=fail"]})
        assert refused.status_code == 400 and "no plan taught" in refused.json()["error"]
        taught = client.post("/plans", json={"plan": plan})
        assert taught.json() == {"plan": "cart-pricing-v3", "signals": sorted(PLAN["signals"])}
        assert client.get("/plans").json() == {"plans": {"cart-pricing-v3": sorted(PLAN["signals"])}}

        def drift() -> Any:
            return client.get("/v3/compare/summary").json()["drift"]

        assert drift()["ratio"] == 0.001 and drift()["compared"] == 1000
        r = client.post("/faults", json={"add": ["signal:pricing_drift=degraded", "no-data"]})
        assert r.json() == {"active": ["no-data", "signal:pricing_drift=degraded"]}
        assert 0.002 < drift()["ratio"] < 0.01
        r = client.post("/faults", json={"add": ["signal:pricing_drift=fail"]})  # one mode per signal
        assert r.json() == {"active": ["no-data", "signal:pricing_drift=fail"]}
        assert drift()["ratio"] >= 0.01
        assert client.post("/faults", json={"clear": ["signal:pricing_drift"]}).json() == {"active": ["no-data"]}
        assert drift()["ratio"] == 0.001
        bad = client.post("/faults", json={"set": ["signal:pricing_drift=sideways"]})
        assert bad.status_code == 400 and "unknown mode" in bad.json()["error"]
        assert client.post("/plans", json={"plan": {"name": "x"}}).status_code == 400


def test_prometheus_answers_any_expression_over_a_signal_with_labels_and_sample_times(package: Path) -> None:
    with Sandbox() as box, httpx.Client(base_url=box.url, timeout=5) as client:
        box.learn(load_change(package).plan)
        query = PLAN["signals"]["checkout_p99_s"]["prometheus"]["query"]

        def ask(expr: str, path: str = "/api/v1/query", **extra: Any) -> Any:
            body = client.get(path, params={"query": expr, **extra}).json()
            assert body["status"] == "success", body
            return body["data"]

        (series,) = ask(query)["result"]
        assert series["metric"] == {}  # sum by (le) keeps only le, which no matcher names
        assert float(series["value"][1]) < 0.8
        (series,) = ask(f"last_over_time(({query})[5m:30s])")["result"]
        assert float(series["value"][1]) < 0.8
        selector = 'cart_checkout_seconds_bucket{service="cart", tier="canary"}'
        (stamp,) = ask(f"timestamp({selector})")["result"]
        assert stamp["metric"] == {"service": "cart", "tier": "canary"}
        assert ask(f"max(timestamp({selector}))")["result"][0]["metric"] == {}  # max() drops them
        asked_at, sampled = stamp["value"]
        assert abs(float(sampled) - asked_at) < 5
        (count,) = ask(PLAN["signals"]["checkout_p99_s"]["prometheus"]["samples"])["result"]
        assert float(count["value"][1]) >= 50  # at least the checks' min_samples
        assert ask('up{job="unknown"}')["result"] == []

        box.add_fault("signal:checkout_p99_s=stale")
        (stamp,) = ask(f"timestamp({selector})")["result"]
        assert stamp["value"][0] - float(stamp["value"][1]) > 900  # older than ten times max_age
        (series,) = ask(query)["result"]
        assert series["value"][0] < stamp["value"][0] - 900
        now = stamp["value"][0]
        ranged = ask(query, "/api/v1/query_range", start=now - 7200, end=now, step=60)
        assert ranged["resultType"] == "matrix"
        assert max(t for t, _ in ranged["result"][0]["values"]) < now - 900  # nothing newer than the stale sample
        too_many = client.get("/api/v1/query_range", params={"query": query, "start": 0, "end": now, "step": 1})
        assert too_many.status_code == 400

        box.add_fault("signal:checkout_p99_s=error")
        failed = client.get("/api/v1/query", params={"query": query})
        assert failed.status_code == 422 and failed.json()["status"] == "error"


def test_a_rehearsal_against_a_running_sandbox_teaches_it_the_plan_first(package: Path, tmp_path: Path) -> None:
    with Sandbox() as box:
        got, state, _ = rehearse(
            package, tmp_path, "--sandbox", box.url, "--auto-release", "--fault", "signal:checkout_p99_s=degraded"
        )
        assert box.plans() == {"cart-pricing-v3": sorted(PLAN["signals"])}
        assert box.faults() == ["signal:checkout_p99_s=degraded"]
    assert (got, state["status"]) == (exits.HELD, "held")


def test_stagehold_sandbox_learns_packages_and_refuses_faults_it_cannot_show(package: Path) -> None:
    command = [sys.executable, "-m", "bot.cli", "sandbox", "--port", "0", "--package", str(package)]
    bad = subprocess.run([*command, "--fault", "signal:queue_depth=stale"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == exits.INVALID
    assert "cannot be stale" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen(
        [*command, "--fault", "signal:error_ratio=fail"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.split("sandbox serving at ")[1].strip()
        assert "plan cart-pricing-v3: checkout_p99_s" in proc.stdout.readline()
        assert httpx.get(f"{url}/faults", timeout=5).json() == {"active": ["signal:error_ratio=fail"]}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)  # waits, and closes both pipes


def test_validate_refuses_a_haproxy_action_on_a_target_of_another_kind(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plan.yaml").write_bytes((package.parent / "plan.yaml").read_bytes())
    data = yaml.safe_load(package.read_text(encoding="utf-8"))
    data["targets"]["edge-lb"] = {"kind": "http", "url": "https://edge.shop.internal"}
    (tmp_path / "package.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["validate", str(tmp_path / "package.yaml")]) == exits.INVALID
    err = capsys.readouterr().err
    assert "plan.yaml:106: stages[1].action.haproxy.target: target 'edge-lb' is not a haproxy target" in err
