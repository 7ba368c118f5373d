"""Invariants judged from the outside: the ledger's entries and the sandbox's logs, nothing else.

Each function returns a list of violations (one line each, empty when the invariant holds). They
re-derive what must be true from the plan and the recorded facts rather than trusting the engine's
own counters, so an engine bug that miscounts cannot also pass its own check.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from execution.conditions import parse_duration
from execution.project import State, project
from ledger.chain import verify_chain
from ledger.entry import Entry

Applied = Mapping[str, Any]


def folded(entries: Sequence[Entry]) -> State:
    return project(entries[0].execution_id, entries) if entries else State("?")


def _identity(key: str) -> str:
    return key


def effects(
    entries: Sequence[Entry],
    applied: Iterable[Applied],
    transition_of: Callable[[str], str] = _identity,
) -> list[str]:
    """Each intended transition took effect on the target at most once, and exactly once if confirmed.

    ``applied`` is the target's effect log (one record per write it applied). ``transition_of``
    maps a key the target saw to the ledger key of the transition it served.
    """
    intended = {e.body["key"] for e in entries if e.kind == "action.intended"}
    confirmed = [e for e in entries if e.kind == "action.confirmed"]
    counts = Counter(transition_of(str(a["key"])) for a in applied)
    out = []
    for key, n in sorted(counts.items()):
        if key not in intended:
            out.append(f"effect without recorded intent: {key} applied {n}x")
        elif n > 1:
            out.append(f"duplicate effect: {key} applied {n} times")
    for e in confirmed:
        if counts.get(e.body["key"], 0) == 0 and not _already_there(entries, e):
            out.append(f"confirmed without effect: {e.body['key']}")
    return out


def _already_there(entries: Sequence[Entry], confirmed: Entry) -> bool:
    """A transition confirmed by a read-back taken before any send: the target already showed it."""
    key = confirmed.body["key"]
    sends = [e for e in entries if e.kind == "action.sent" and e.body["key"] == key]
    return not sends


def no_blind_retry(
    entries: Sequence[Entry], sends: Iterable[str], transition_of: Callable[[str], str] = _identity
) -> list[str]:
    """Every send of a key beyond the first follows a read-back that showed the old state.

    ``sends`` are the keys of every write that reached the target (applied or not), so a send whose
    result the ledger never recorded (the sender died) still counts.
    """
    raw = Counter(transition_of(k) for k in sends)
    resends = Counter(e.body["key"] for e in entries if e.kind == "action.resend_intended")
    out = []
    for key, n in sorted(raw.items()):
        if n > 1 + resends.get(key, 0):
            out.append(f"blind retry: {key} sent {n} times with {resends.get(key, 0)} recorded re-send decision(s)")
    for i, e in enumerate(entries):
        if e.kind != "action.resend_intended":
            continue
        earlier = [x for x in entries[:i] if x.body.get("key") == e.body["key"] and x.kind == "action.read_back"]
        if not earlier or earlier[-1].body.get("matches") is not False:
            out.append(f"re-send of {e.body['key']} at seq {e.seq} without a read-back showing the old state")
    return out


def ambiguity_resolved(entries: Sequence[Entry]) -> list[str]:
    """Every ambiguous send ends confirmed by read-back, held, or handed to a human — never assumed."""
    out = []
    for i, e in enumerate(entries):
        if e.kind != "action.sent" or e.body.get("outcome") != "ambiguous":
            continue
        key = e.body["key"]
        resolved = False
        for later in entries[i + 1 :]:
            if later.kind == "action.confirmed" and later.body.get("key") == key:
                reads = [
                    x
                    for x in entries[i + 1 : later.seq - 1]
                    if x.kind == "action.read_back" and x.body.get("key") == key
                ]
                if not reads or reads[-1].body.get("matches") is not True:
                    out.append(f"ambiguous send of {key} confirmed at seq {later.seq} without a matching read-back")
                resolved = True
                break
            if later.kind == "hold.opened" and later.body.get("kind") in ("ambiguous", "not_applied"):
                resolved = True
                break
            if later.kind in ("rollback.started", "execution.needs_human"):
                resolved = True
                break
            if later.kind == "action.sent" and later.body.get("key") == key:
                resolved = True  # re-sent (no_blind_retry judges whether that was allowed); judged again there
                break
        if not resolved:
            out.append(f"ambiguous send of {key} (seq {e.seq}) never resolved by read-back or a hold")
    return out


def _required_samples(bake: str, every: str) -> int:
    return max(1, math.ceil(parse_duration(bake) / parse_duration(every) - 1e-9))


def passed_with_evidence(entries: Sequence[Entry]) -> list[str]:
    """A stage passes only on its full bake of consecutive passing samples, or on a release of a degraded hold."""
    state = folded(entries)
    if state.plan is None:
        return []
    stages = {s.id: s for s in state.plan.stages}
    out = []
    for idx, e in enumerate(entries):
        if e.kind != "stage.passed":
            continue
        name = e.body["stage"]
        stage = stages[name]
        if e.body.get("basis") == "released":
            hold_id = e.body.get("hold")
            opened = [x for x in entries[:idx] if x.kind == "hold.opened" and x.body.get("hold") == hold_id]
            released = [x for x in entries[:idx] if x.kind == "hold.released" and x.body.get("hold") == hold_id]
            if not opened or opened[0].body.get("resume") != "accept" or not released:
                out.append(f"{name} passed on release of {hold_id} without a released degraded-evidence hold")
            continue
        start = 0
        for j in range(idx - 1, -1, -1):
            x = entries[j]
            if x.kind == "hold.released" or (
                x.kind == "action.confirmed" and x.body.get("stage") == name and x.body.get("direction") == "apply"
            ):
                start = j
                break
        samples = [
            x
            for x in entries[start:idx]
            if x.kind == "verification.sampled" and x.body.get("stage") == name and not x.body.get("during_hold")
        ]
        required = _required_samples(stage.verify.bake, stage.verify.every)
        tail = samples[-required:]
        if len(tail) < required:
            out.append(f"{name} passed at seq {e.seq} with {len(tail)} of {required} samples since it went live")
            continue
        for s in tail:
            results = s.body.get("results", [])
            if s.body.get("outcome") != "pass" or not results or any(r.get("outcome") != "pass" for r in results):
                out.append(f"{name} passed at seq {e.seq} counting a non-passing sample (seq {s.seq})")
                break
        every = parse_duration(stage.verify.every) / state.speed
        for a, b in itertools.pairwise(tail):
            if (b.ts - a.ts).total_seconds() < every * 0.999:
                out.append(f"{name} samples seq {a.seq} and {b.seq} are closer than the interval ({every:.3f}s)")
    return out


def checkpoints(entries: Sequence[Entry]) -> list[str]:
    """No stage is entered before every earlier stage passed, without a passing gate, or (protected) without a release."""
    state = folded(entries)
    if state.plan is None or state.package is None:
        return []
    plan = state.plan
    auth = state.package.authorities
    index_of = {s.id: i for i, s in enumerate(plan.stages)}
    passed: set[int] = set()
    out = []
    for idx, e in enumerate(entries):
        if e.kind == "stage.passed":
            passed.add(int(e.body["index"]))
        elif e.kind == "action.confirmed" and e.body.get("direction") == "rollback":
            passed.discard(int(e.body["index"]))
        elif e.kind == "action.intended" and e.body.get("direction") == "apply":
            i = int(e.body["index"])
            name = plan.stages[i].id
            gate = entries[idx - 1] if idx > 0 else None
            if not (
                gate is not None
                and gate.kind == "gate.checked"
                and gate.body.get("stage") == name
                and gate.body.get("outcome") == "pass"
            ):
                out.append(f"{name} entered at seq {e.seq} without a passing preflight and readiness check")
            missing = [plan.stages[j].id for j in range(i) if j not in passed]
            if missing:
                out.append(f"{name} entered at seq {e.seq} before {', '.join(missing)} passed")
            if plan.stages[i].hold_before:
                out += _released_entry(entries[:idx], i, name, e.seq, state.initiator, auth.two_person, index_of)
    return out


def _released_entry(
    before: Sequence[Entry], i: int, name: str, seq: int, initiator: str, two_person: bool, index_of: dict[str, int]
) -> list[str]:
    last_pass = max((x.seq for x in before if x.kind == "stage.passed" and int(x.body["index"]) == i - 1), default=0)
    holds = {
        x.body["hold"]: x
        for x in before
        if x.kind == "hold.opened" and x.body.get("stage") == name and x.body.get("kind") == "protected"
    }
    released = [x for x in before if x.kind == "hold.released" and x.body.get("hold") in holds and x.seq > last_pass]
    if not released:
        return [f"protected {name} entered at seq {seq} without a released protected hold"]
    rel = released[-1]
    hold = holds[rel.body["hold"]]
    by = list(rel.body.get("by", []))
    out = []
    if len(set(by)) < int(hold.body.get("required", 1)):
        out.append(f"{name} entered on {len(set(by))} distinct releaser(s), {hold.body.get('required')} required")
    if two_person and initiator in by:
        out.append(f"{name} released by its initiator {initiator} under two-person control")
    return out


def chain(entries: Sequence[Entry], execution_id: str, heads: Iterable[tuple[int, str]] = ()) -> list[str]:
    out = []
    result = verify_chain(entries, execution_id)
    if not result.ok:
        out.append(f"chain does not verify: seq {result.first_bad_seq}: {result.reason}")
    for head in heads:
        r = verify_chain(entries, execution_id, head=head)
        if not r.ok:
            out.append(f"chain does not verify against the head saved at seq {head[0]}: {r.reason}")
    return out


def live_matches_ledger(entries: Sequence[Entry], documents: Callable[[str], Any]) -> list[str]:
    """With nothing in flight, every document the plan writes shows the last confirmed effect on it."""
    state = folded(entries)
    if state.plan is None or state.pending is not None:
        return []
    last: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.kind != "action.confirmed":
            continue
        stage = state.plan.stages[int(e.body["index"])]
        confirm = (
            stage.confirm if e.body["direction"] == "apply" else stage.rollback.confirm if stage.rollback else None
        )
        if confirm is None or confirm.http is None:
            continue
        last[confirm.http.path] = dict(confirm.http.expect)
    out = []
    for path, expect in sorted(last.items()):
        doc = documents(path) or {}
        wrong = {k: doc.get(k) for k, v in expect.items() if doc.get(k) != v}
        if wrong:
            out.append(f"live {path} shows {wrong}, the ledger's last confirmed effect says {expect}")
    return out


def outcome(state: State) -> dict[str, Any]:
    """What "the same terminal state" compares: status, every stage's status and an open hold's kind."""
    return {
        "status": state.status(),
        "stages": {s.id: s.status for s in state.stages},
        "hold": state.hold.kind if state.hold is not None else None,
    }
