"""The engine against the real sandbox over HTTP on loopback: one test per robustness check.

The sandbox and the engine share a hand-moved clock, so sample times and evidence ages are exact
and nothing sleeps; the sandbox checks each write's bearer token against its key's direction, so
a rollback sent with the executor's credential (or the reverse) would be refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.bootstrap import live_connector
from execution import events as ev
from execution.adapters.base import Connection
from execution.contract import InvalidChange, load_change
from execution.decide import SendAction
from execution.model import ActionResult, Credentials, Role
from execution.project import State
from execution.sandbox import Sandbox
from execution.service import Engine
from execution.transitions import Phase
from tests.fakes import EXAMPLES, FakeClock, Rig, edited, example

TOKENS = {"executor": "exec-5e1f", "rollback": "back-9a2c", "preflight": "pre-7d3b", "verifier": "ver-4c8e"}
CREDENTIALS = Credentials(
    {
        Role.EXECUTOR: TOKENS["executor"],
        Role.ROLLBACK: TOKENS["rollback"],
        Role.PREFLIGHT: TOKENS["preflight"],
        Role.VERIFIER: TOKENS["verifier"],
    }
)
# Rehearsal compression: 1 s adapter timeouts (apply-timeout resolves quickly), 30 s bakes.
SPEED = 10.0


class Killed(BaseException):
    """The process dies: not an error the engine may catch."""


class SandboxRig(Rig):
    """A ``Rig`` whose engine talks to a secured sandbox over HTTP with the shared clock."""

    def __init__(self, db_path: Path, sandbox: Sandbox, client: httpx.Client, clock: FakeClock, **kw: Any) -> None:
        change = kw.pop("change", None)
        super().__init__(db_path, change=change, clock=clock)
        self.sandbox = sandbox
        self.client = client
        self.connect = live_connector(CREDENTIALS, client, clock, sandbox.url)
        self.engine = self.new_engine("owner-a", **kw)

    def new_engine(self, owner: str, **kw: Any) -> Engine:
        return Engine(self.store, kw.pop("connect", self.connect), self.clock, owner, **kw)

    def start(self, initiator: str = "U05OPS", groups: Any = (), **kwargs: Any) -> State:
        kwargs.setdefault("mode", "rehearsal")
        kwargs.setdefault("speed", SPEED)
        return super().start(initiator, groups, **kwargs)

    def applied(self) -> list[dict[str, Any]]:
        response = self.client.get(f"{self.sandbox.url}/applied")
        assert response.status_code == 200
        items: list[dict[str, Any]] = response.json()["applied"]
        return items

    def applied_keys(self) -> list[str]:
        return [a["key"] for a in self.applied()]

    def weights(self) -> Any:
        return self.sandbox.state("/weights")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    box = Sandbox(port=0, tokens=TOKENS, clock=clock).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


@pytest.fixture
def make(tmp_path: Path, sandbox: Sandbox, client: httpx.Client, clock: FakeClock) -> Iterator[Any]:
    made: list[SandboxRig] = []

    def _make(**kw: Any) -> SandboxRig:
        rig = SandboxRig(tmp_path / f"l{len(made)}.db", sandbox, client, clock, **kw)
        made.append(rig)
        return rig

    yield _make
    for rig in made:
        rig.close()


@pytest.fixture
def rig(make: Any) -> SandboxRig:
    r: SandboxRig = make()
    return r


def stage_keys(keys: list[str], stage: str, direction: str = "apply") -> list[str]:
    return [k for k in keys if f":{stage}:{direction}:" in k]


# ---------------------------------------------------------------- robustness checks of the pattern card


def test_a_degraded_dependency_between_stages_pauses_before_the_next_tier(rig: SandboxRig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 5)
    rig.sandbox.add_fault("dependency-down")
    state = rig.run()
    assert state.stages[0].status == "passed"
    assert state.phase == Phase.HOLDING and state.hold is not None
    assert state.hold.stage == "canary-25"
    assert state.hold.categories["preflight:vault_healthy"] == "fail"
    rig.release("U01DANA")
    state = rig.run()
    assert state.phase == Phase.HOLDING and state.hold is not None and state.hold.supersedes is not None
    assert stage_keys(rig.applied_keys(), "canary-25") == []
    assert rig.weights() == {"tokenizer": 5, "legacy": 95}


@pytest.mark.parametrize("fault", ["snapshot-stale", "snapshot-missing"])
def test_a_stale_or_missing_rollback_artifact_stops_execution_with_nominal_forward_metrics(
    rig: SandboxRig, fault: str
) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    rig.sandbox.add_fault(fault)
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "readiness_lost"
    sample = rig.of_kind(ev.VERIFICATION_SAMPLED)[-1]
    outcomes = {r["key"]: r["outcome"] for r in sample.body["results"]}
    assert outcomes["check:error_rate"] == "pass"
    assert outcomes["check:settlement_parity"] == "pass"
    assert outcomes["readiness:snapshot_age_s"] == ("fail" if fault == "snapshot-stale" else "error")
    assert rig.applied_keys() == [f"{rig.eid}:canary-5:apply:1"]


def test_a_missing_rollback_artifact_before_the_first_stage_sends_nothing(rig: SandboxRig) -> None:
    rig.sandbox.add_fault("snapshot-missing")
    rig.start()
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "readiness_lost"
    assert rig.applied() == []


def test_interruption_replay_and_partial_rollback_never_duplicate_or_skip(make: Any) -> None:
    armed = {"kill_send": False, "kill_after": False}

    def before_send(state: State, action: SendAction) -> None:
        if armed["kill_send"] and action.direction == "rollback":
            armed["kill_send"] = False
            raise Killed

    rig: SandboxRig = make(before_send=before_send)

    class KillAfterApply:
        def __init__(self, inner: Connection) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def apply(self, action: Any, key: str, role: Role, timeout_s: float) -> ActionResult:
            result = self.inner.apply(action, key, role, timeout_s)
            if armed["kill_after"]:
                armed["kill_after"] = False
                raise Killed
            return result

    def killing(state: State) -> Connection:
        return KillAfterApply(rig.connect(state))  # type: ignore[return-value]

    rig.start()
    rig.engine = rig.new_engine("owner-a", connect=killing)
    # Die after the forward action to canary-25 took effect, before its answer is recorded.
    rig.run()
    armed["kill_after"] = True
    rig.release("U01DANA")
    with pytest.raises(Killed):
        rig.tick()
    rig.clock.advance(61)
    rig.engine = rig.new_engine("owner-b", before_send=before_send)
    rig.engine.resume(rig.eid)
    rig.run_to_stage("full")
    # Order a rollback and die twice on the way back: before one undo is sent, then replay twice.
    rig.engine.rollback(rig.eid, "U03RESP", "finance asked")
    armed["kill_send"] = True
    with pytest.raises(Killed):
        rig.tick()
    rig.clock.advance(61)
    rig.engine = rig.new_engine("owner-c")
    rig.engine.resume(rig.eid)
    done = rig.state.seq
    # A replay by yet another process (or the scheduler waking it again) changes nothing.
    rig.clock.advance(61)
    rig.engine = rig.new_engine("owner-d")
    assert rig.engine.resume(rig.eid) is None
    rig.engine.tick(rig.eid)
    assert rig.state.seq == done
    state = rig.run()
    assert state.phase == Phase.ROLLED_BACK
    applied = rig.applied_keys()
    assert applied == rig.confirmed()
    assert len(applied) == len(set(applied))
    assert [k.split(":")[1:3] for k in applied] == [
        ["canary-5", "apply"],
        ["canary-25", "apply"],
        ["full", "apply"],
        ["full", "rollback"],
        ["canary-25", "rollback"],
        ["canary-5", "rollback"],
    ]
    assert {a["role"] for a in rig.applied() if ":rollback:" in a["key"]} == {"rollback"}
    assert {a["role"] for a in rig.applied() if ":apply:" in a["key"]} == {"executor"}
    assert rig.weights() == {"tokenizer": 0, "legacy": 100}
    assert [e.body["owner"] for e in rig.of_kind(ev.EXECUTION_RESUMED)] == ["owner-b", "owner-c"]


def test_no_data_holds(make: Any) -> None:
    rig: SandboxRig = make(change=example("sorter-routing"))
    rig.sandbox.add_fault("no-data")
    rig.start("U21CTRL")
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "no_data"
    assert {r["signal"]: r["outcome"] for r in state.hold.results if r["kind"] == "check"} == {
        "misroute_ratio": "no_data",
        "throughput_per_hour": "no_data",
    }
    assert state.stages[0].consecutive == 0
    assert ev.STAGE_PASSED not in rig.kinds()


def test_conflicting_telemetry_holds(rig: SandboxRig) -> None:
    rig.sandbox.add_fault("no-data")  # Prometheus goes quiet while the HTTP parity check still passes
    rig.start()
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "conflicting"
    assert state.hold.categories["check:error_rate"] == "no_data"
    assert state.hold.categories["check:settlement_parity"] == "pass"
    assert stage_keys(rig.applied_keys(), "canary-25") == []


def test_an_ambiguous_apply_is_resolved_by_read_back(rig: SandboxRig) -> None:
    rig.sandbox.add_fault("apply-timeout")
    rig.start()
    state = rig.run(until=lambda s: s.phase == Phase.VERIFYING)
    assert state.stages[0].status == "live"
    sent = rig.of_kind(ev.ACTION_SENT)
    assert [e.body["outcome"] for e in sent] == ["ambiguous"]
    assert rig.of_kind(ev.ACTION_READ_BACK)[0].body["matches"] is True
    assert ev.ACTION_RESEND_INTENDED not in rig.kinds()
    assert rig.applied_keys() == [f"{rig.eid}:canary-5:apply:1"]


def test_a_failed_rollback_escalates_to_needs_human(rig: SandboxRig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.sandbox.add_fault("rollback-fail")
    rig.sandbox.add_fault("error-rate-high")
    state = rig.run()
    assert state.phase == Phase.NEEDS_HUMAN
    assert "rollback failed" in state.outcome_reason
    assert stage_keys(rig.applied_keys(), "canary-25", "rollback") == []
    assert rig.weights() == {"tokenizer": 25, "legacy": 75}


def test_a_high_error_rate_rolls_back_with_the_rollback_credential(rig: SandboxRig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.sandbox.add_fault("error-rate-high")
    state = rig.run()
    assert state.phase == Phase.ROLLED_BACK
    assert rig.weights() == {"tokenizer": 0, "legacy": 100}
    assert rig.applied_keys() == rig.confirmed()


def test_self_release_is_refused(make: Any) -> None:
    change = edited(example(), package=lambda p: p["authorities"]["initiate"].update(users=["U01DANA"]))
    rig: SandboxRig = make(change=change)
    rig.start("U01DANA")
    rig.run()
    out = rig.release("U01DANA")
    assert out.kinds == (ev.RELEASE_DENIED,)
    assert "initiator cannot release" in out.entries[0].body["reason"]
    assert rig.run().phase == Phase.HOLDING
    assert stage_keys(rig.applied_keys(), "canary-25") == []


def test_the_window_closing_holds_and_nothing_expands(rig: SandboxRig) -> None:
    state = rig.start()
    assert state.window_closes is not None
    rig.run()
    rig.clock.now = state.window_closes - timedelta(seconds=10)  # canary-25 bakes for 30 s
    rig.release("U01DANA")
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "window_closed"
    assert state.stages[1].status == "passed"
    assert stage_keys(rig.applied_keys(), "full") == []
    assert rig.release("U02LEE").kinds == (ev.RELEASE_DENIED,)


def test_a_tampered_plan_refuses_to_start(tmp_path: Path, rig: SandboxRig) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(EXAMPLES / "payments-cutover", copy)
    plan = copy / "plan.yaml"
    plan.write_text(plan.read_text().replace("bake: 5m", "bake: 30s", 1))
    with pytest.raises(InvalidChange, match="plan changed after approval"):
        load_change(copy / "package.yaml")
    assert rig.engine.executions() == []
    assert rig.applied() == []


def test_a_release_given_before_the_evidence_changed_does_not_carry_forward(rig: SandboxRig) -> None:
    rig.start()
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "protected"
    rig.sandbox.add_fault("snapshot-stale")  # the way back degrades after the card was shown
    rig.release("U01DANA")
    state = rig.run()
    not_carried = rig.of_kind(ev.RELEASE_NOT_CARRIED)
    assert [e.body["changes"] for e in not_carried] == [["readiness:snapshot_age_s pass -> fail"]]
    assert state.hold is not None and state.hold.id == "H2" and state.hold.supersedes == "H1"
    assert stage_keys(rig.applied_keys(), "canary-25") == []
    assert rig.weights() == {"tokenizer": 5, "legacy": 95}


def test_a_rollback_write_with_the_executor_credential_is_refused_by_the_target(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    response = client.put(
        f"{sandbox.url}/weights",
        json={"tokenizer": 0, "legacy": 100},
        headers={"Idempotency-Key": "CHG-1:canary-5:rollback:1", "Authorization": f"Bearer {TOKENS['executor']}"},
    )
    assert response.status_code == 403
    assert sandbox.applied() == []
