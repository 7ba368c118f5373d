"""Family 7: authority — random people with random lists click random buttons.

Each trial draws a change package's authorities at random — initiators, releasers and rollback
authorities as users and user groups, operators, two-person control on or off, and who belongs to
which group — keeps it only if ``stagehold validate``'s rules accept it, starts an execution of a
three-stage plan (an unprotected stage, a protected expansion, an irreversible retirement that
needs two releasers) and drives it with the real engine on an in-memory ledger and a fake clock.
At every pause, random people (listed or not, the initiator included) click Release, Rollback or
Hold with random hold ids and evidence versions, current or stale; now and then a degraded or
failing signal opens other kinds of hold.

An oracle written from the package alone says who may do what. Checked per click: an unauthorised
attempt is recorded as a denial by that person and changes nothing; every attempt is in the
ledger. Checked over each ledger: every release was given by a release authority (never the
initiator under two-person control); a release counts only on the open hold at its current
evidence version; irreversible stages were entered on two distinct releasers; every rollback a
person started was started by a rollback authority; every manual hold by a listed person; no
entry by a person outside the lists changes anything; denials in the ledger equal the attempts the
oracle refused.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from execution import events as ev
from execution.commands import StartRefused
from execution.contract import LoadedChange
from execution.contract.models import Authority, ChangePackage
from execution.contract.rules import check_package, check_plan
from execution.project import State
from execution.service import CommandOutcome, Engine
from execution.transitions import Phase
from ledger.entry import Entry
from ledger.memory import MemoryLedgerStore
from reliability import plans
from reliability.fakes import HealthyTarget
from reliability.harness import FamilyResult, Recorder, Size, Violation
from reliability.rig import Clock

USERS = [f"U0{i}PERSON" for i in range(1, 9)]
STRANGER = "U0STRANGER"
GROUPS = ["S0CAB", "S0ONCALL", "S0OPS"]
HEALTHY = {"parity": 0, "vault_healthy": True, "legacy_healthy": True, "snapshot_age_s": 120}
DENIALS = {"release": ev.RELEASE_DENIED, "rollback": ev.ROLLBACK_DENIED, "hold": ev.HOLD_DENIED}

INVARIANTS = [
    "an unauthorised click is recorded as a denial and changes nothing",
    "every click is in the ledger",
    "releases only by release authorities, never the initiator under two-person control",
    "a release counts only on the open hold at its current evidence version",
    "irreversible stages entered on two distinct authorised releasers",
    "rollbacks started only by rollback authorities; manual holds only by listed people",
    "no entry by anyone outside the lists changes anything; denials in the ledger = refused attempts",
]


def _plan() -> dict[str, Any]:
    return plans.plan(
        "authority-drill",
        [
            plans.stage("s1", 5, "/weights", {"tokenizer": 5}, {"tokenizer": 0}, bake="1m"),
            plans.stage("s2", 50, "/weights", {"tokenizer": 50}, {"tokenizer": 5}, protected=True, bake="1m"),
            plans.stage(
                "s3",
                100,
                "/backends/legacy/state",
                {"retired": True},
                None,
                protected=True,
                retires=True,
                bake="1m",
                on={"fail": "hold"},
            ),
        ],
    )


def _authority(rng: random.Random, users: Sequence[str], *, allow_empty: bool = False) -> dict[str, list[str]]:
    while True:
        chosen = {
            "users": sorted(rng.sample(list(users), rng.randint(0, 3))),
            "groups": sorted(rng.sample(GROUPS, rng.choice([0, 0, 1, 2]))),
        }
        if allow_empty or chosen["users"] or chosen["groups"]:
            return chosen


class Oracle:
    """Who may do what, from the package and the directory alone (independent of the engine)."""

    def __init__(self, package: ChangePackage, directory: dict[str, tuple[str, ...]], initiator: str) -> None:
        self.auth = package.authorities
        self.directory = directory
        self.initiator = initiator

    def _member(self, user: str, authority: Authority) -> bool:
        return user in authority.users or any(g in authority.groups for g in self.directory.get(user, ()))

    def may_release(self, user: str) -> bool:
        if self.auth.two_person and user == self.initiator:
            return False
        return self._member(user, self.auth.release)

    def may_rollback(self, user: str) -> bool:
        return self._member(user, self.auth.rollback)

    def may_hold(self, user: str) -> bool:
        a = self.auth
        return any(self._member(user, x) for x in (a.operators, a.initiate, a.release, a.rollback))

    def may_initiate(self, user: str) -> bool:
        return self._member(user, self.auth.initiate)

    def may(self, action: str, user: str) -> bool:
        return {"release": self.may_release, "rollback": self.may_rollback, "hold": self.may_hold}[action](user)


class _Trial:
    def __init__(self, number: int, change_base: LoadedChange, rng: random.Random, rec: Recorder, counts: Counter[str]):
        self.number = number
        self.name = f"authority-{number:05d}"
        self.rng = rng
        self.rec = rec
        self.counts = counts
        self.change_base = change_base
        self.refused = 0

    def _package(self) -> tuple[LoadedChange, dict[str, tuple[str, ...]]]:
        rng = self.rng
        base = self.change_base.package_data()
        while True:
            data = dict(base)
            data["authorities"] = {
                "initiate": _authority(rng, USERS),
                "release": _authority(rng, USERS),
                "rollback": _authority(rng, USERS),
                "operators": _authority(rng, USERS, allow_empty=True),
                "two_person": rng.random() < 0.7,
            }
            package = ChangePackage.model_validate(data)
            if list(check_package(package)) or list(check_plan(package, self.change_base.plan)):
                self.counts["assignments refused by validation"] += 1
                continue
            directory = {u: tuple(g for g in GROUPS if rng.random() < 0.3) for u in [*USERS, STRANGER]}
            for group in package.authorities.initiate.groups:
                # A group that starts a change has at least one member to start it.
                member = rng.choice(USERS)
                directory[member] = tuple(sorted({*directory[member], group}))
            change = LoadedChange(
                package,
                self.change_base.plan,
                self.change_base.package_path,
                self.change_base.plan_path,
                self.change_base.plan_sha256,
            )
            return change, directory

    def _check_click(self, oracle: Oracle, action: str, user: str, before: State, outcome: CommandOutcome) -> None:
        entries = outcome.entries
        self.counts["clicks"] += 1
        if not entries or any(e.actor != user for e in entries):
            self.rec.add(self.name, "every click is in the ledger", f"{action} by {user} wrote {outcome.kinds}")
            return
        if not oracle.may(action, user):
            self.counts["refused by the oracle"] += 1
            self.refused += 1
            if outcome.kinds != (DENIALS[action],) or outcome.state.phase != before.phase:
                self.rec.add(
                    self.name,
                    "unauthorised click changes nothing",
                    f"{action} by unlisted {user} wrote {outcome.kinds}, phase {before.phase} -> {outcome.state.phase}",
                )
        elif action == "hold" and ev.HOLD_DENIED in outcome.kinds:
            # Releases and rollbacks by listed people can be refused for the state (a hold that
            # cannot be released, a rollback already under way); a hold by a listed person cannot.
            self.rec.add(
                self.name, "authorised click not denied", f"{action} by listed {user} was denied: {outcome.kinds}"
            )

    def _click(self, engine: Engine, eid: str, oracle: Oracle, directory: dict[str, tuple[str, ...]]) -> None:
        rng = self.rng
        state = engine.load(eid)
        user = rng.choice([*USERS, STRANGER, oracle.initiator])
        groups = directory.get(user, ())
        action = rng.choices(["release", "rollback", "hold"], weights=[60, 8, 32])[0]
        if action == "release":
            hold_id = state.open_hold or (sorted(state.holds)[-1] if state.holds else "H1")
            roll = rng.random()
            if roll < 0.15 and state.holds:
                hold_id = rng.choice(sorted(state.holds))
            elif roll < 0.2:
                hold_id = "H99"
            version = state.holds[hold_id].evidence_version if hold_id in state.holds else 1
            version += rng.choices([0, -1, 1], weights=[80, 10, 10])[0]
            outcome = engine.release(eid, hold_id, version, user, groups)
            self.counts["release clicks"] += 1
            if ev.RELEASE_GRANTED in outcome.kinds:
                current = state.hold
                if current is None or current.id != hold_id or current.evidence_version != version:
                    self.rec.add(
                        self.name,
                        "release bound to hold and version",
                        f"{user} released {hold_id} v{version}; open hold was "
                        f"{current.id + ' v' + str(current.evidence_version) if current else 'none'}",
                    )
        elif action == "rollback":
            outcome = engine.rollback(eid, user, "trial rollback", groups)
            self.counts["rollback clicks"] += 1
        else:
            outcome = engine.hold(eid, user, "trial hold", groups)
            self.counts["hold clicks"] += 1
        self._check_click(oracle, action, user, state, outcome)

    def _release_properly(
        self, engine: Engine, eid: str, oracle: Oracle, directory: dict[str, tuple[str, ...]]
    ) -> None:
        """Someone listed releases the open hold, as the authorities would, so executions get further."""
        state = engine.load(eid)
        hold = state.hold
        if hold is None:
            return
        people = [u for u in USERS if oracle.may_release(u)]
        self.rng.shuffle(people)
        for user in people[: hold.required]:
            outcome = engine.release(eid, hold.id, hold.evidence_version, user, directory.get(user, ()))
            self._check_click(oracle, "release", user, state, outcome)

    def run(self) -> None:
        rng = self.rng
        change, directory = self._package()
        clock = Clock(datetime(2026, 11, 28, 22, 0, tzinfo=UTC))
        target = HealthyTarget(clock, HEALTHY)
        store = MemoryLedgerStore()
        engine = Engine(store, lambda s: target, clock, "reliability")
        # A start by someone outside the initiate list is refused before anything is written.
        outsider = rng.choice([*USERS, STRANGER])
        oracle_for = Oracle(change.package, directory, "")
        if not oracle_for.may_initiate(outsider):
            try:
                engine.start(change, outsider, directory.get(outsider, ()), mode="rehearsal", speed=1.0)
                self.rec.add(self.name, "start only by initiators", f"{outsider} started {change.package.id}")
            except StartRefused:
                self.counts["starts refused"] += 1
        initiators = [u for u in USERS if oracle_for.may_initiate(u)]
        initiator = rng.choice(initiators)
        state = engine.start(change, initiator, directory.get(initiator, ()), mode="rehearsal", speed=1.0)
        eid = state.execution_id
        oracle = Oracle(change.package, directory, initiator)
        for _step in range(60):
            wake = engine.tick(eid)
            state = engine.load(eid)
            if state.terminal:
                break
            if rng.random() < 0.1:
                target.values["parity"] = rng.choice([0, 0, 0.0005, 0.01])
            clicks = rng.randint(1, 4) if state.phase == Phase.HOLDING else (1 if rng.random() < 0.25 else 0)
            for _ in range(clicks):
                self._click(engine, eid, oracle, directory)
            state = engine.load(eid)
            if state.phase == Phase.HOLDING and rng.random() < 0.5:
                target.values["parity"] = 0
                self._release_properly(engine, eid, oracle, directory)
            if wake is not None:
                clock.now = max(clock.now, wake)
            else:
                clock.advance(30)
        entries = store.read(eid)
        self.counts[f"ended {engine.load(eid).status()}"] += 1
        self._check_ledger(entries, oracle, change)

    def _check_ledger(self, entries: Sequence[Entry], oracle: Oracle, change: LoadedChange) -> None:
        name, add = self.name, self.rec.add
        plan = change.plan
        holds: dict[str, Entry] = {}
        granted: dict[str, list[Entry]] = {}
        denied = 0
        for i, e in enumerate(entries):
            person = not e.actor.startswith("role:")
            action = {ev.RELEASE_DENIED: "release", ev.ROLLBACK_DENIED: "rollback", ev.HOLD_DENIED: "hold"}.get(e.kind)
            if action is not None and not oracle.may(action, e.actor):
                denied += 1
            if e.kind == ev.HOLD_OPENED:
                holds[e.body["hold"]] = e
                if e.body.get("kind") == "manual" and not oracle.may_hold(e.actor):
                    add(name, "manual holds only by listed people", f"{e.actor} placed {e.body['hold']}")
            elif e.kind == ev.HOLD_REQUESTED and not oracle.may_hold(e.actor):
                add(name, "manual holds only by listed people", f"{e.actor} requested a hold")
            elif e.kind == ev.RELEASE_GRANTED:
                if not oracle.may_release(e.actor):
                    add(name, "releases only by release authorities", f"{e.actor} released {e.body['hold']}")
                granted.setdefault(e.body["hold"], []).append(e)
            elif e.kind == ev.HOLD_RELEASED:
                hold = holds.get(e.body["hold"])
                by = list(e.body.get("by", []))
                givers = {g.actor for g in granted.get(e.body["hold"], [])}
                if hold is None or not set(by) <= givers or len(set(by)) != len(by):
                    add(name, "releases only by release authorities", f"{e.body['hold']} released by {by}")
                elif len(by) < int(hold.body.get("required", 1)):
                    add(name, "release counts", f"{e.body['hold']} released by {len(by)} of {hold.body['required']}")
            elif e.kind == ev.ROLLBACK_STARTED and person and not oracle.may_rollback(e.actor):
                add(name, "rollbacks only by rollback authorities", f"{e.actor} started a rollback")
            elif e.kind == ev.ACTION_INTENDED and e.body.get("direction") == "apply":
                stage = plan.stages[int(e.body["index"])]
                if stage.irreversible:
                    protected = {
                        x.body["hold"]
                        for x in entries[:i]
                        if x.kind == ev.HOLD_OPENED
                        and x.body.get("kind") == "protected"
                        and x.body.get("stage") == stage.id
                    }
                    released = [x for x in entries[:i] if x.kind == ev.HOLD_RELEASED and x.body["hold"] in protected]
                    last = released[-1] if released else None
                    givers = set(last.body.get("by", [])) if last else set()
                    if len(givers) < 2 or not all(oracle.may_release(u) for u in givers):
                        add(
                            name,
                            "irreversible needs two releasers",
                            f"{stage.id} entered on release by {sorted(givers)}",
                        )
            if person and e.kind not in ev.NO_OP_KINDS:
                allowed = {
                    ev.EXECUTION_STARTED: oracle.may_initiate,
                    ev.RELEASE_GRANTED: oracle.may_release,
                    ev.HOLD_RELEASED: oracle.may_release,
                    ev.ROLLBACK_STARTED: oracle.may_rollback,
                    ev.HOLD_OPENED: oracle.may_hold,
                    ev.HOLD_REQUESTED: oracle.may_hold,
                    ev.EXECUTION_NEEDS_HUMAN: oracle.may_rollback,
                }.get(e.kind)
                if allowed is None or not allowed(e.actor):
                    add(name, "nobody outside the lists changes anything", f"{e.kind} by {e.actor} at seq {e.seq}")
        if denied != self.refused:
            add(name, "denials recorded", f"{denied} denials of unlisted people for {self.refused} refused attempts")
        self.counts["denials in the ledger"] += denied


def _process(seed: int, part: int, count: int) -> tuple[list[Violation], int, dict[str, int]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = plans.write_and_load(Path(tmp), plans.package("CHG-AUTH"), _plan())
    rng = random.Random(f"{seed}-{part}")
    rec = Recorder()
    counts: Counter[str] = Counter()
    for n in range(count):
        _Trial(part * 1_000_000 + n + 1, base, rng, rec, counts).run()
        rec.trial_done()
    return rec.violations, rec.trials, dict(counts)


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    total = size.pick(300, 10_000)
    parts = 2
    rec = Recorder()
    counts: Counter[str] = Counter()
    trials = 0
    with ProcessPoolExecutor(max_workers=parts, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_process, size.seed, p, total // parts + (p < total % parts)) for p in range(parts)]
        for f in futures:
            violations, n, c = f.result()
            trials += n
            counts.update(c)
            for v in violations:
                rec.add(v.trial, v.invariant, v.detail)
    notes = [
        f"{counts['clicks']:,} clicks ({counts['release clicks']:,} release, {counts['rollback clicks']:,} rollback, "
        f"{counts['hold clicks']:,} hold, the rest releases by listed people to move executions on); "
        f"{counts['refused by the oracle']:,} refused by the oracle, {counts['denials in the ledger']:,} denials recorded",
        f"{counts['starts refused']:,} starts by people outside the initiate list refused; "
        f"{counts['assignments refused by validation']:,} drawn assignments rejected by `stagehold validate` rules and redrawn",
        "ends: " + ", ".join(f"{k[6:]} {n:,}" for k, n in sorted(counts.items()) if k.startswith("ended ")),
        "users U01PERSON..U08PERSON and an unlisted U0STRANGER; groups S0CAB, S0ONCALL, S0OPS with random members; "
        "two-person control on in 70 % of assignments",
    ]
    return [
        rec.result(
            "authority",
            "Authority and separation of duties",
            "assignments",
            INVARIANTS,
            notes,
            size,
            started,
            trials=trials,
        )
    ]
