"""Probe a package's evidence before its window: read every signal and read-back once, act on nothing.

Rules:
* Every check of the plan (preflight gates, rollback readiness, verification checks) is judged
  with the engine's own ``evaluate``, against one reading of its signal by the role that reads it
  in a run (preflight and readiness: ``role:preflight``; verification: ``role:verifier``). A
  check that appears in several stages is listed once, with those stages.
* Read-backs are read, never written: a read-back that differs now is expected before the change
  (``differs``); one that cannot be read (``unreadable``) would hold the run.
* The probe passes only when every check passes and every read-back can be read.

Worked example: a plan whose ``error_rate`` query has a label typo -> that check is ``no_data``,
the probe does not pass, and the command exits 3 before any window opens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from execution.adapters.base import Connection
from execution.conditions import parse_duration
from execution.contract.models import Confirm, Plan
from execution.evaluate import Result, evaluate
from execution.model import Evidence, Outcome, Role


@dataclass(frozen=True)
class ProbedCheck:
    result: Result
    stages: tuple[str, ...]  # where the check applies ("readiness" checks: every stage)

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "stages": list(self.stages)}


@dataclass(frozen=True)
class ProbedReadback:
    stage: str
    direction: str  # apply | rollback
    target: str
    status: str  # matches | differs | unreadable
    detail: str
    observed: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "direction": self.direction,
            "target": self.target,
            "status": self.status,
            "detail": self.detail,
            "observed": self.observed,
        }


@dataclass(frozen=True)
class ProbeReport:
    checks: tuple[ProbedCheck, ...]
    readbacks: tuple[ProbedReadback, ...]

    @property
    def passes(self) -> bool:
        return all(c.result.outcome == Outcome.PASS for c in self.checks) and all(
            r.status != "unreadable" for r in self.readbacks
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "checks": [c.to_json() for c in self.checks],
            "readbacks": [r.to_json() for r in self.readbacks],
        }


# (kind, signal, pass, hold, min_samples) -> the stages it applies to
_CheckKey = tuple[str, str, str, str | None, int | None]


def _wanted(plan: Plan) -> dict[_CheckKey, list[str]]:
    wanted: dict[_CheckKey, list[str]] = {}
    for stage in plan.stages:
        for gate in stage.preflight:
            wanted.setdefault(("preflight", gate.signal, gate.pass_, None, None), []).append(stage.id)
    for gate in plan.rollback_readiness:
        wanted.setdefault(("readiness", gate.signal, gate.pass_, None, None), []).extend(s.id for s in plan.stages)
    for stage in plan.stages:
        for check in stage.verify.checks:
            key = ("check", check.signal, check.pass_, check.hold, check.min_samples)
            wanted.setdefault(key, []).append(stage.id)
    return wanted


def probe(plan: Plan, connection: Connection, clock: Callable[[], datetime]) -> ProbeReport:
    wanted = _wanted(plan)
    readings: dict[tuple[str, Role], Evidence] = {}
    for kind, signal, *_ in wanted:
        role = Role.VERIFIER if kind == "check" else Role.PREFLIGHT
        if (signal, role) not in readings:
            try:
                readings[(signal, role)] = connection.read(signal, plan.signals[signal], role)
            except Exception as exc:  # an adapter must not raise; if one does, that is an error
                readings[(signal, role)] = Evidence(signal, None, None, "adapter", error=f"{type(exc).__name__}: {exc}")
    now = clock()
    checks = []
    for (kind, signal, pass_text, hold, min_samples), stages in wanted.items():
        role = Role.VERIFIER if kind == "check" else Role.PREFLIGHT
        max_age = parse_duration(plan.signals[signal].max_age)
        result = evaluate(kind, readings[(signal, role)], pass_text, max_age, now, hold, min_samples)
        checks.append(ProbedCheck(result, tuple(dict.fromkeys(stages))))
    readbacks = []
    for stage in plan.stages:
        confirms: list[tuple[str, Confirm, Role]] = [("apply", stage.confirm, Role.EXECUTOR)]
        if stage.rollback is not None:
            confirms.append(("rollback", stage.rollback.confirm, Role.ROLLBACK))
        for direction, confirm, role in confirms:
            readbacks.append(_read_back(stage.id, direction, confirm, role, connection))
    return ProbeReport(tuple(checks), tuple(readbacks))


def _read_back(stage: str, direction: str, confirm: Confirm, role: Role, connection: Connection) -> ProbedReadback:
    try:
        result = connection.read_back(confirm, role, parse_duration(confirm.spec.timeout))
    except Exception as exc:
        return ProbedReadback(stage, direction, confirm.target, "unreadable", f"{type(exc).__name__}: {exc}", None)
    status = "unreadable" if result.matches is None else "matches" if result.matches else "differs"
    return ProbedReadback(stage, direction, confirm.target, status, result.detail, result.observed)
