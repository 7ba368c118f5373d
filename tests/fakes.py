"""Recording fakes for engine tests: a settable clock and an in-memory control plane.

The fake target keeps documents per path like the sandbox, honours idempotency keys, and lets a
test set each signal's reading. It records every call so tests assert on what was sent.

Below the fakes are small builders shared by the engine tests: the bundled examples (optionally
edited), an in-memory ledger that seals and folds entries without a database, and ``Rig``, an
``Engine`` over SQLite with a fake clock and target that a test drives tick by tick.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from execution import events as ev
from execution.commands import start as start_entries
from execution.contract.load import LoadedChange, load_change
from execution.contract.models import Action, ChangePackage, Confirm, Plan, Signal
from execution.model import ActionResult, Evidence, ReadbackResult, Role
from execution.project import State, apply, project
from execution.service import CommandOutcome, Engine
from execution.transitions import Phase
from ledger.chain import GENESIS_HASH, parse_ts, seal
from ledger.entry import Entry, NewEntry
from ledger.note import Signer, generate_private_key, load_private_key, private_key_pem
from ledger.sql import SqlLedgerStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeTarget:
    clock: FakeClock
    docs: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)  # name -> value (None: no data)
    samples: dict[str, int] = field(default_factory=dict)
    signal_age: dict[str, float] = field(default_factory=dict)
    signal_error: dict[str, str] = field(default_factory=dict)
    applied: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    seen_keys: dict[str, ActionResult] = field(default_factory=dict)
    # faults
    timeout_after_apply: bool = False
    readback_fails: bool = False
    reject_rollback: bool = False
    reject_apply: bool = False
    # Sends that time out before reaching the target: ambiguous to the caller, nothing applied.
    lose_applies: int = 0
    # Every call in order: ("read", signal, role), ("apply", key, role), ("read_back", path, role).
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    # Called at the start of every apply, before anything is recorded or changed.
    on_apply: Callable[[str, Role], None] | None = None

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        self.calls.append(("read", name, role.value))
        if name in self.signal_error:
            return Evidence(name, None, None, "fake", error=self.signal_error[name])
        value = self.signals.get(name)
        sampled = self.clock() - timedelta(seconds=self.signal_age.get(name, 0.0))
        return Evidence(
            name, value, sampled if value is not None else None, "fake", samples=self.samples.get(name, 1000)
        )

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        assert action.http is not None
        if self.on_apply is not None:
            self.on_apply(idempotency_key, role)
        self.calls.append(("apply", idempotency_key, role.value))
        self.sent.append({"key": idempotency_key, "role": role.value, "path": action.http.path})
        direction = idempotency_key.split(":")[-2]
        if direction == "rollback" and self.reject_rollback:
            return ActionResult("rejected", "500 rollback refused", 500)
        if direction == "apply" and self.reject_apply:
            return ActionResult("rejected", "409 refused", 409)
        if self.lose_applies > 0:
            self.lose_applies -= 1
            return ActionResult("ambiguous", "connect timeout; the request may not have arrived")
        if idempotency_key in self.seen_keys:
            return self.seen_keys[idempotency_key]
        self.docs[action.http.path] = copy.deepcopy(action.http.json_body)
        self.applied.append(
            {"key": idempotency_key, "path": action.http.path, "body": action.http.json_body, "role": role.value}
        )
        result = ActionResult("ok", "200", 200, action.http.json_body)
        self.seen_keys[idempotency_key] = result
        if self.timeout_after_apply:
            return ActionResult("ambiguous", "read timeout after sending")
        return result

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        assert confirm.http is not None
        self.calls.append(("read_back", confirm.http.path, role.value))
        if self.readback_fails:
            return ReadbackResult(None, None, "500 from target")
        doc = self.docs.get(confirm.http.path)
        if doc is None:
            return ReadbackResult(False, None, "not found")
        matches = all(doc.get(k) == v for k, v in confirm.http.expect.items())
        return ReadbackResult(matches, doc, "read")

    def applies(self) -> list[str]:
        """Keys of every apply call, in order (sent, whether or not it took effect)."""
        return [key for kind, key, _ in self.calls if kind == "apply"]


# ---------------------------------------------------------------- examples and edits

# Nominal readings for every signal of the payments example.
PAYMENTS_HEALTHY: dict[str, Any] = {
    "error_rate": 0.002,
    "settlement_parity": 0,
    "vault_healthy": True,
    "legacy_healthy": True,
    "snapshot_age_s": 120,
}
PAYMENTS_STAGES = ("canary-5", "canary-25", "full", "retire-legacy")
INITIATOR = "U05OPS"
RELEASERS = ("U01DANA", "U02LEE")
ROLLBACKER = "U03RESP"


def example(name: str = "payments-cutover") -> LoadedChange:
    return load_change(EXAMPLES / name / "package.yaml")


def edited(
    change: LoadedChange,
    plan: Callable[[dict[str, Any]], None] | None = None,
    package: Callable[[dict[str, Any]], None] | None = None,
) -> LoadedChange:
    """A copy of ``change`` with its plan and/or package data edited in place by the callables."""
    plan_data = change.plan_data()
    package_data = change.package_data()
    if plan is not None:
        plan(plan_data)
    if package is not None:
        package(package_data)
    return LoadedChange(
        ChangePackage.model_validate(package_data),
        Plan.model_validate(plan_data),
        change.package_path,
        change.plan_path,
        change.plan_sha256,
    )


def stage_of(plan_data: dict[str, Any], stage_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in plan_data["stages"] if s["id"] == stage_id)
    return found


def evidence(
    name: str, value: Any, now: datetime, *, age: float = 0.0, samples: int | None = 1000, error: str | None = None
) -> Evidence:
    sampled = now - timedelta(seconds=age) if value is not None else None
    return Evidence(name, value, sampled, "test", samples=samples, error=error)


# ---------------------------------------------------------------- an in-memory ledger


class MemoryLedger:
    """Seals and folds entries in memory: the pure core without a database or a shell."""

    def __init__(self, execution_id: str = "CHG-T-1") -> None:
        self.execution_id = execution_id
        self.entries: list[Entry] = []
        self.state = State(execution_id)

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> MemoryLedger:
        """A ledger holding ``entries`` (e.g. a prefix of what an engine wrote), folded."""
        ledger = cls(entries[0].execution_id)
        ledger.entries = list(entries)
        ledger.state = project(ledger.execution_id, entries)
        return ledger

    def record(self, *events: ev.Event | tuple[ev.Event, str]) -> State:
        """Append typed events, each one second after the last entry, by ``role:executor`` or by
        the actor paired with it: ``ledger.record(ev.HoldRequested(reason="x"), (ev.RollbackStarted(...), "U03RESP"))``."""
        for item in events:
            event, actor = item if isinstance(item, tuple) else (item, Role.EXECUTOR.value)
            ts = self.entries[-1].ts + timedelta(seconds=1) if self.entries else FakeClock()()
            self.append([ev.record(event, actor, ts)])
        return self.state

    def append(self, new: Iterable[NewEntry]) -> list[Entry]:
        written = []
        for item in new:
            prev = self.entries[-1].hash if self.entries else GENESIS_HASH
            entry = seal(self.execution_id, len(self.entries) + 1, item, prev)
            self.state = apply(self.state, entry)
            self.entries.append(entry)
            written.append(entry)
        return written


def hold_opened(
    hold: str, stage: str, index: int, kind: ev.HoldKind, resume: ev.Resume, resume_phase: str | None = None
) -> ev.HoldOpened:
    """A hold opened at ``stage`` (expiring at midnight after the example's window opens), for ``given``."""
    return ev.HoldOpened(
        hold=hold,
        stage=stage,
        index=index,
        hold_kind=kind,
        reason=f"a {kind} hold",
        expires_at=datetime(2026, 11, 29, tzinfo=UTC),
        remind_at=datetime(2026, 11, 28, 23, 45, tzinfo=UTC),
        resume=resume,
        resume_phase=resume_phase,
    )


def given(*events: ev.Event | tuple[ev.Event, str], change: LoadedChange | None = None) -> MemoryLedger:
    """A ledger where ``change`` (the payments example) was started by ``INITIATOR`` and then
    ``events`` happened (see ``MemoryLedger.record``), folded: state from typed events, without
    recording a run and cutting it.

    Example: ``given(ev.ActionIntended(stage="canary-5", index=0, direction=ev.Direction.APPLY,
    attempt=1, key="k")).state.phase`` is ``applying``.
    """
    ledger = MemoryLedger()
    ledger.append(start_entries(change or example(), INITIATOR, (), FakeClock()()))
    ledger.record(*events)
    return ledger


def from_export(lines: Iterable[str]) -> list[Entry]:
    """Entries read back from exported JSON Lines (``Entry.to_json`` per line)."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        d = json.loads(line)
        out.append(
            Entry(d["execution"], d["seq"], parse_ts(d["ts"]), d["kind"], d["actor"], d["body"], d["prev"], d["hash"])
        )
    return out


def upto(entries: Sequence[Entry], kind: str, nth: int = 1) -> list[Entry]:
    """The entries up to and including the ``nth`` entry of ``kind``."""
    seen = 0
    for i, entry in enumerate(entries):
        if entry.kind == kind:
            seen += 1
            if seen == nth:
                return list(entries[: i + 1])
    raise AssertionError(f"no entry #{nth} of kind {kind}")


def before(entries: Sequence[Entry], kind: str, nth: int = 1) -> list[Entry]:
    """The entries before the ``nth`` entry of ``kind``."""
    return upto(entries, kind, nth)[:-1]


# ---------------------------------------------------------------- an engine over SQLite


class Rig:
    """An ``Engine`` over a SQLite file, a fake clock and one fake target, driven by hand."""

    def __init__(
        self,
        db_path: Path,
        change: LoadedChange | None = None,
        signals: dict[str, Any] | None = None,
        owner: str = "owner-a",
        clock: FakeClock | None = None,
        target: FakeTarget | None = None,
        **engine_kwargs: Any,
    ) -> None:
        self.url = f"sqlite:///{db_path}"
        self.store = SqlLedgerStore(self.url)
        self.clock = clock or FakeClock()
        self.fake = target or FakeTarget(self.clock, signals=dict(PAYMENTS_HEALTHY if signals is None else signals))
        self.change = change or example()
        self.engine = Engine(self.store, lambda s: self.fake, self.clock, owner, **engine_kwargs)
        self.eid = ""

    def close(self) -> None:
        self.store.close()

    def start(self, initiator: str = INITIATOR, groups: Sequence[str] = (), **kwargs: Any) -> State:
        state = self.engine.start(self.change, initiator, groups, **kwargs)
        self.eid = state.execution_id
        return state

    @property
    def state(self) -> State:
        return self.engine.load(self.eid)

    def entries(self) -> list[Entry]:
        return self.engine.entries(self.eid)

    def kinds(self, after: int = 0) -> list[str]:
        return [e.kind for e in self.entries() if e.seq > after]

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries() if e.kind == kind]

    def tick(self) -> datetime | None:
        return self.engine.tick(self.eid)

    def run(self, max_ticks: int = 400, until: Callable[[State], bool] | None = None) -> State:
        """Tick, jumping the clock to each wake time, until the execution holds, ends, idles or ``until``."""
        for _ in range(max_ticks):
            wake = self.engine.tick(self.eid)
            state = self.state
            if (until is not None and until(state)) or state.terminal or state.phase == Phase.HOLDING or wake is None:
                return state
            self.clock.now = max(self.clock.now, wake)
        raise AssertionError(f"{self.eid} did not stop within {max_ticks} ticks (phase {self.state.phase})")

    def release(self, user: str, hold: str | None = None, version: int | None = None) -> CommandOutcome:
        state = self.state
        hold_id = hold or state.open_hold
        assert hold_id is not None, "no open hold to release"
        v = version if version is not None else state.holds[hold_id].evidence_version
        return self.engine.release(self.eid, hold_id, v, user)

    def release_protected(self) -> None:
        """Release the open hold with as many distinct releasers as it needs."""
        hold = self.state.hold
        assert hold is not None
        for user in RELEASERS[: hold.required]:
            self.release(user)

    def run_to_stage(self, stage: str) -> State:
        """Run, releasing protected holds, until ``stage`` is confirmed live and verifying."""

        def live(state: State) -> bool:
            return any(s.id == stage and s.status == "live" for s in state.stages)

        for _ in range(10):
            state = self.run(until=live)
            if live(state):
                return state
            hold = state.hold
            assert hold is not None and hold.kind == "protected", f"stopped at {state.phase}: {hold}"
            self.release_protected()
        raise AssertionError(f"never reached {stage}")

    def confirmed(self, direction: str | None = None) -> list[str]:
        """Keys of confirmed actions in ledger order."""
        return [
            e.body["key"]
            for e in self.of_kind("action.confirmed")
            if direction is None or e.body["direction"] == direction
        ]


# ---------------------------------------------------------------- a package written for a test

_PACKAGE = """stagehold: 1
kind: change-package
id: {change_id}
title: {change_id} written by a test
plan: plan.yaml
plan_sha256: "{digest}"
window: {{opens: "2020-01-01T00:00:00Z", closes: "2099-01-01T00:00:00Z"}}
channel: C0CHANGES
scope: {{targets: [router], max_blast_radius: 100}}
approved_by: [{{user: U01DANA, role: change-authority, at: "2025-01-01T00:00:00Z"}}]
authorities:
  initiate: {{users: [U05OPS]}}
  release: {{users: [U01DANA, U02LEE]}}
  rollback: {{users: [U03RESP]}}
targets:
{targets}
"""


def write_change(directory: Path, plan: str, change_id: str, targets: dict[str, str]) -> Path:
    """A package pinning ``plan`` (digest computed), open now, in scope ``router``; each target is
    given as YAML flow text, e.g. ``{"router": '{kind: http, url: "http://127.0.0.1:8099"}'}``."""
    (directory / "plan.yaml").write_text(plan, encoding="utf-8")
    digest = hashlib.sha256(plan.encode()).hexdigest()
    lines = "\n".join(f"  {name}: {spec}" for name, spec in targets.items())
    package = directory / "package.yaml"
    package.write_text(_PACKAGE.format(change_id=change_id, digest=digest, targets=lines), encoding="utf-8")
    return package


def approver(directory: Path, name: str = "dana", owner: str = "U01DANA") -> tuple[Path, Path]:
    """An approver's new Ed25519 key (``NAME.pem``) and a keyring trusting it for ``owner`` as
    change-authority (``keyring.yaml``), both in ``directory``: (key, keyring)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.pem"
    key.write_bytes(private_key_pem(generate_private_key()))
    vkey = Signer(name, load_private_key(key.read_bytes())).verifier.vkey
    keyring = directory / "keyring.yaml"
    keyring.write_text(
        f"stagehold: 1\nkind: approver-keyring\nkeys:\n  - {{vkey: {vkey}, owner: {owner}, role: change-authority}}\n"
    )
    return key, keyring
