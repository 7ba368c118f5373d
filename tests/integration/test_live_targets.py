"""LiveTargets driving the payments example's signals, actions and read-backs against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from execution.adapters.live import LiveTargets
from execution.contract import LoadedChange, load_change
from execution.contract.models import Stage
from execution.model import Credentials, Role
from execution.sandbox import Sandbox

from .conftest import TOKENS, FakeClock

PAYMENTS = Path(__file__).resolve().parents[2] / "examples" / "payments-cutover" / "package.yaml"
CREDENTIALS = Credentials(
    {
        Role.EXECUTOR: TOKENS["executor"],
        Role.ROLLBACK: TOKENS["rollback"],
        Role.PREFLIGHT: TOKENS["preflight"],
        Role.VERIFIER: TOKENS["verifier"],
    }
)


@pytest.fixture(scope="module")
def change() -> LoadedChange:
    return load_change(PAYMENTS)


@pytest.fixture
def live(change: LoadedChange, secured_sandbox: Sandbox, clock: FakeClock) -> Iterator[LiveTargets]:
    targets = {name: t.model_copy(update={"url": secured_sandbox.url}) for name, t in change.package.targets.items()}
    with httpx.Client(timeout=5.0) as client:
        yield LiveTargets(targets, CREDENTIALS, client, clock, sensitive_fields=change.plan.sensitive_fields)


def stage(change: LoadedChange, stage_id: str) -> Stage:
    return next(s for s in change.plan.stages if s.id == stage_id)


def test_every_payments_signal_reads_fresh_evidence(change: LoadedChange, live: LiveTargets, clock: FakeClock) -> None:
    signals = change.plan.signals
    readings = {name: live.read(name, signal, Role.PREFLIGHT) for name, signal in signals.items()}
    assert {name: e.value for name, e in readings.items()} == {
        "error_rate": 0.002,
        "settlement_parity": 0.0,
        "vault_healthy": True,
        "legacy_healthy": True,
        "snapshot_age_s": 120,
    }
    assert readings["error_rate"].samples == 1200
    assert readings["settlement_parity"].samples == 1000
    assert all(e.error is None and e.sampled_at == clock() for e in readings.values())


def test_canary_applies_once_reads_back_and_rolls_back_with_the_rollback_role(
    change: LoadedChange, live: LiveTargets, secured_sandbox: Sandbox
) -> None:
    canary = stage(change, "canary-5")
    key = "CHG-2041:canary-5:apply:1"
    applied = live.apply(canary.action, key, Role.EXECUTOR, 2.0)
    assert (applied.outcome, applied.status) == ("ok", 200)
    assert live.read_back(canary.confirm, Role.VERIFIER, 2.0).matches is True
    # A resend with the same key is answered, not applied again.
    assert live.apply(canary.action, key, Role.EXECUTOR, 2.0).outcome == "ok"
    assert canary.rollback is not None
    back = live.apply(canary.rollback.action, "CHG-2041:canary-5:rollback:1", Role.ROLLBACK, 2.0)
    assert back.outcome == "ok"
    assert live.read_back(canary.rollback.confirm, Role.VERIFIER, 2.0).matches is True
    log = secured_sandbox.applied()
    assert [(e["key"], e["role"]) for e in log] == [(key, "executor"), ("CHG-2041:canary-5:rollback:1", "rollback")]


def test_rollback_role_cannot_move_the_change_forward(
    change: LoadedChange, live: LiveTargets, secured_sandbox: Sandbox
) -> None:
    result = live.apply(stage(change, "canary-5").action, "CHG-2041:canary-5:apply:1", Role.ROLLBACK, 2.0)
    assert (result.outcome, result.status) == ("rejected", 403)
    assert TOKENS["rollback"] not in result.detail
    assert secured_sandbox.applied() == []
    assert live.read_back(stage(change, "canary-5").confirm, Role.VERIFIER, 2.0).matches is False


def test_lost_answer_is_ambiguous_and_read_back_resolves_it(
    change: LoadedChange, live: LiveTargets, secured_sandbox: Sandbox
) -> None:
    canary = stage(change, "canary-5")
    secured_sandbox.add_fault("apply-timeout")
    result = live.apply(canary.action, "CHG-2041:canary-5:apply:1", Role.EXECUTOR, 0.5)
    assert result.outcome == "ambiguous"
    assert live.read_back(canary.confirm, Role.VERIFIER, 2.0).matches is True


def test_faults_reach_the_engine_as_data(change: LoadedChange, live: LiveTargets, secured_sandbox: Sandbox) -> None:
    signals, canary = change.plan.signals, stage(change, "canary-5")
    secured_sandbox.set_faults(["no-data", "dependency-down", "snapshot-missing", "readback-fail", "rollback-fail"])
    no_data = live.read("error_rate", signals["error_rate"], Role.VERIFIER)
    assert (no_data.value, no_data.error) == (None, None)
    assert live.read("vault_healthy", signals["vault_healthy"], Role.PREFLIGHT).value is False
    missing = live.read("snapshot_age_s", signals["snapshot_age_s"], Role.PREFLIGHT)
    assert missing.value is None and missing.error is not None and "404" in missing.error
    assert live.read_back(canary.confirm, Role.VERIFIER, 2.0).matches is None
    assert canary.rollback is not None
    failed = live.apply(canary.rollback.action, "CHG-2041:canary-5:rollback:1", Role.ROLLBACK, 2.0)
    assert (failed.outcome, failed.status) == ("rejected", 500)


def test_unreachable_target_means_the_action_was_not_sent(
    change: LoadedChange, live: LiveTargets, secured_sandbox: Sandbox
) -> None:
    secured_sandbox.stop()
    result = live.apply(stage(change, "canary-5").action, "CHG-2041:canary-5:apply:1", Role.EXECUTOR, 2.0)
    assert result.outcome == "rejected"
    assert "not sent" in result.detail
    evidence = live.read("legacy_healthy", change.plan.signals["legacy_healthy"], Role.PREFLIGHT)
    assert evidence.value is None and evidence.error is not None
