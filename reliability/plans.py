"""Change packages and plans the trials run, written to disk like an approver would pin them.

Every package here passes ``stagehold validate``: the trials exercise the engine on contracts it
accepts, so a violation is the engine's fault, not the plan's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from execution.contract import LoadedChange, load_change

TARGET = "router"
PLACEHOLDER_URL = "https://router.invalid"


_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoAliases(_Dumper):  # type: ignore[valid-type,misc]
    # The contract refuses anchors and aliases; a dict used twice must be written out twice.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


def write_change(directory: Path, package: dict[str, Any], plan: dict[str, Any]) -> Path:
    """Write ``plan.yaml`` and ``package.yaml`` (pinning the plan's digest) and return the package path."""
    directory.mkdir(parents=True, exist_ok=True)
    plan_bytes = dump(plan).encode()
    (directory / "plan.yaml").write_bytes(plan_bytes)
    package = {**package, "plan": "plan.yaml", "plan_sha256": hashlib.sha256(plan_bytes).hexdigest()}
    path = directory / "package.yaml"
    path.write_text(dump(package), encoding="utf-8")
    return path


def package(
    change_id: str,
    *,
    initiate: dict[str, list[str]] | None = None,
    release: dict[str, list[str]] | None = None,
    rollback: dict[str, list[str]] | None = None,
    operators: dict[str, list[str]] | None = None,
    two_person: bool = True,
) -> dict[str, Any]:
    return {
        "stagehold": 1,
        "kind": "change-package",
        "id": change_id,
        "title": f"reliability trial {change_id}",
        "plan": "plan.yaml",
        "plan_sha256": "0" * 64,
        # A rehearsal re-bases the window to start now, divided by its speed: 30 days stays open
        # for the whole of any trial.
        "window": {"opens": "2026-11-01T00:00:00Z", "closes": "2026-12-01T00:00:00Z"},
        "channel": "C0TRIALS",
        "scope": {"targets": [TARGET, "metrics"], "protected": [], "max_blast_radius": 100},
        "approved_by": [{"user": "U01DANA", "role": "change-authority", "at": "2026-10-30T12:00:00Z"}],
        "authorities": {
            "initiate": initiate or {"users": ["U05OPS"]},
            "release": release or {"users": ["U01DANA", "U02LEE"], "groups": ["S0CAB"]},
            "rollback": rollback or {"users": ["U03RESP"], "groups": ["S0ONCALL"]},
            "operators": operators or {"users": ["U06SRE"]},
            "two_person": two_person,
        },
        "targets": {
            TARGET: {"kind": "http", "url": PLACEHOLDER_URL},
            "metrics": {"kind": "prometheus", "url": PLACEHOLDER_URL},
        },
    }


def _http_action(path: str, body: dict[str, Any], timeout: str) -> dict[str, Any]:
    return {"http": {"target": TARGET, "method": "PUT", "path": path, "json": body, "timeout": timeout}}


def _confirm(path: str, expect: dict[str, Any]) -> dict[str, Any]:
    return {"http": {"target": TARGET, "path": path, "expect": expect}}


def stage(
    stage_id: str,
    blast: float,
    path: str,
    forward: dict[str, Any],
    backward: dict[str, Any] | None,
    *,
    protected: bool = False,
    retires: bool = False,
    bake: str = "2m",
    every: str = "30s",
    timeout: str = "500ms",
    on: dict[str, str] | None = None,
    preflight: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": stage_id,
        "blast_radius": blast,
        "hold_before": protected,
        "preflight": [{"signal": "vault_healthy", "pass": "== true"}] if preflight else [],
        "action": _http_action(path, forward, timeout),
        "confirm": _confirm(path, forward),
        "verify": {
            "bake": bake,
            "every": every,
            "checks": [{"signal": "parity", "pass": "== 0", "hold": "< 0.001"}],
        },
    }
    if on:
        out["verify"]["on"] = on
    if retires:
        out["retires_fallback"] = True
        out["irreversible"] = True
    if backward is not None:
        out["rollback"] = {"action": _http_action(path, backward, timeout), "confirm": _confirm(path, backward)}
    return out


def plan(name: str, stages: Iterable[dict[str, Any]], *, max_age: str = "10m", light: bool = False) -> dict[str, Any]:
    """A plan over the sandbox's health, parity and snapshot endpoints.

    Evidence ages are generous (``max_age``) because a trial measures crash and delivery safety,
    not how fast a loaded test machine answers: evidence that went stale while two cores were
    busy would stop a rehearsal for a reason that has nothing to do with the trial.
    """

    def http(path: str, field: str, samples: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"target": TARGET, "path": path, "field": field}
        if samples:
            spec["samples_field"] = samples
        return {"http": spec, "max_age": max_age}

    signals = {
        "parity": http("/parity", "mismatch_ratio", "compared"),
        "vault_healthy": http("/dependencies/vault/health", "ok"),
        "legacy_healthy": http("/backends/legacy/health", "ok"),
        "snapshot_age_s": http("/snapshots/latest", "age_seconds"),
    }
    readiness = [{"signal": "legacy_healthy", "pass": "== true"}, {"signal": "snapshot_age_s", "pass": "< 3600"}]
    if light:
        # One read per gate and per sample, for trials that count actions: readiness and the checks
        # read the same signal (readiness only asks that parity be measurable and below 100 %).
        signals = {k: signals[k] for k in ("parity", "legacy_healthy")}
        readiness = [{"signal": "parity", "pass": "< 1"}]
    return {
        "stagehold": 1,
        "kind": "execution-plan",
        "name": name,
        "version": 1,
        "sensitive_fields": ["pan", "account_number"],
        "signals": signals,
        "rollback_readiness": readiness,
        "holds": {"expiry": "24h", "remind_before": "1h"},
        "stages": list(stages),
    }


def crash_drill() -> dict[str, Any]:
    """Four stages: two unprotected ones at 5 %, a protected expansion, and an irreversible retirement."""
    return plan(
        "crash-drill",
        [
            stage("s1", 5, "/weights", {"tokenizer": 5, "legacy": 95}, {"tokenizer": 0, "legacy": 100}),
            stage("s2", 5, "/routing", {"mode": "v2"}, {"mode": "v1"}),
            stage(
                "s3",
                50,
                "/weights",
                {"tokenizer": 50, "legacy": 50},
                {"tokenizer": 5, "legacy": 95},
                protected=True,
            ),
            stage(
                "s4",
                100,
                "/backends/legacy/state",
                {"retired": True},
                None,
                protected=True,
                retires=True,
                on={"fail": "hold"},
            ),
        ],
    )


def many_stages(count: int, *, timeout: str = "100ms") -> dict[str, Any]:
    """``count`` unprotected stages at one blast radius, each writing its own document, one sample each."""
    return plan(
        "ambiguity-drill",
        [
            stage(
                f"a{i}",
                5,
                f"/drill/d{i}",
                {"v": i, "on": True},
                {"v": i, "on": False},
                bake="30s",
                timeout=timeout,
                preflight=False,
            )
            for i in range(1, count + 1)
        ],
        light=True,
    )


def write_and_load(directory: Path, package_data: dict[str, Any], plan_data: dict[str, Any]) -> LoadedChange:
    return load_change(write_change(directory, package_data, plan_data))
