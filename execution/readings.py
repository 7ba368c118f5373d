"""Evidence for one decision: which signals a gate, a check or readiness needs, and their results.

Rules: evidence not observed is an error, never a pass; readiness is not read once the fallback
is retired (there is no way back left to prove); a hold's evidence expires at its oldest
sample's max age, which a rehearsal never compresses below a person's reading time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from execution.contract.models import Stage
from execution.evaluate import Result, evaluate
from execution.model import Evidence, Outcome
from execution.project import State
from execution.protocol import Observations, hold_evidence_window, scaled
from ledger.chain import parse_ts


def readiness_names(state: State) -> tuple[str, ...]:
    assert state.plan is not None
    if state.fallback_retired:
        return ()
    return tuple(g.signal for g in state.plan.rollback_readiness)


def evidence_for(obs: Observations, name: str) -> Evidence:
    found = obs.evidence.get(name)
    return found if found is not None else Evidence(name, None, None, "not observed", error="signal was not read")


def gate_results(state: State, stage: Stage, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    results = []
    for gate in stage.preflight:
        sig = state.plan.signals[gate.signal]
        results.append(
            evaluate("preflight", evidence_for(obs, gate.signal), gate.pass_, scaled(state, sig.max_age), now)
        )
    results += readiness_results(state, obs, now)
    return results


def readiness_results(state: State, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    if state.fallback_retired:
        return []
    out = []
    for gate in state.plan.rollback_readiness:
        sig = state.plan.signals[gate.signal]
        out.append(evaluate("readiness", evidence_for(obs, gate.signal), gate.pass_, scaled(state, sig.max_age), now))
    return out


def check_results(state: State, stage: Stage, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    out = []
    for check in stage.verify.checks:
        sig = state.plan.signals[check.signal]
        out.append(
            evaluate(
                "check",
                evidence_for(obs, check.signal),
                check.pass_,
                scaled(state, sig.max_age),
                now,
                hold_text=check.hold,
                min_samples=check.min_samples,
            )
        )
    return out


def evidence_expiry(state: State, results: list[Result]) -> datetime | None:
    """When a hold card's evidence goes stale: its oldest sample plus that signal's
    ``hold_evidence_window`` (a rehearsal never compresses it below what a person needs to read)."""
    assert state.plan is not None
    times = []
    for r in results:
        if r.sampled_at is None:
            continue
        sig = state.plan.signals.get(r.signal)
        window = hold_evidence_window(state, sig.max_age) if sig is not None else r.max_age_s
        times.append(parse_ts(r.sampled_at) + timedelta(seconds=window))
    return min(times) if times else None


def summary(results: list[Result]) -> str:
    bad = [r for r in results if r.outcome != Outcome.PASS]
    if not bad:
        return "all evidence passes"
    # Outcomes as words ("no data", as every card shows them); the detail only when it adds something.
    return "; ".join(
        f"{r.signal} {r.outcome.value.replace('_', ' ')}" + (f" ({r.detail})" if r.detail != "no data" else "")
        for r in bad
    )
