"""Policy (pure): who may do what, how outcomes map to reactions, and what the way back is.

Rules:
* Release authority and rollback authority are separate lists; holding is open to every listed
  person (operators, initiators, releasers, rollback authorities).
* Under two-person control the initiator cannot release; an irreversible stage needs two distinct
  releasers.
* No outcome but pass continues; when checks disagree the most severe reaction wins
  (rollback > narrow > hold > continue).
* The way back never crosses an irreversible stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from execution.contract.models import Authority, OutcomeMap
from execution.model import Outcome
from execution.project import State

REACTION_SEVERITY = {"continue": 0, "hold": 1, "narrow": 2, "rollback": 3}


def is_member(user: str, groups: Iterable[str], authority: Authority) -> bool:
    return user in authority.users or bool(set(groups) & set(authority.groups))


def reaction(outcome: Outcome, on: OutcomeMap) -> str:
    if outcome == Outcome.PASS:
        return "continue"
    return str(getattr(on, outcome.value))


def strongest(reactions: Iterable[str]) -> str:
    return max(reactions, key=REACTION_SEVERITY.__getitem__, default="continue")


def required_releases(state: State, index: int) -> int:
    return 2 if state.stage_def(index).irreversible else 1


def releasers(state: State) -> dict[str, list[str]]:
    """Who may release holds of this execution (the initiator is left out under two-person control)."""
    assert state.package is not None
    auth = state.package.authorities
    users = [u for u in auth.release.users if not (auth.two_person and u == state.initiator)]
    return {"users": users, "groups": list(auth.release.groups)}


def rollback_authority(state: State) -> dict[str, list[str]]:
    assert state.package is not None
    auth = state.package.authorities.rollback
    return {"users": list(auth.users), "groups": list(auth.groups)}


def is_operator(state: State, user: str, groups: Iterable[str]) -> bool:
    assert state.package is not None
    auth = state.package.authorities
    return any(is_member(user, groups, a) for a in (auth.operators, auth.initiate, auth.release, auth.rollback))


def release_refusal(state: State, user: str, groups: Iterable[str]) -> str | None:
    """Why ``user`` may not release holds of this execution, or None if they may."""
    assert state.package is not None
    auth = state.package.authorities
    if not is_member(user, groups, auth.release):
        return f"{user} is not a release authority for {state.package.id}"
    if auth.two_person and user == state.initiator:
        return f"{user} started this execution; under two-person control the initiator cannot release"
    return None


def rollback_refusal(state: State, user: str, groups: Iterable[str]) -> str | None:
    assert state.package is not None
    if not is_member(user, groups, state.package.authorities.rollback):
        return f"{user} is not a rollback authority for {state.package.id}"
    return None


@dataclass(frozen=True)
class UndoPlan:
    undo: tuple[str, ...]
    blocked_by: str | None  # an irreversible stage that makes the way back impossible


def undo_plan(state: State, scope: str) -> UndoPlan:
    """The stages to undo, newest first, down to the plan's rollback point (or one tier, narrowing)."""
    assert state.plan is not None
    touched = list(state.live_stages())
    if scope == "narrow":
        touched = touched[-1:]
    undo: list[str] = []
    for s in reversed(touched):
        if scope == "full" and state.plan.rollback_to == s.id:
            break
        if state.stage_def(s.index).irreversible:
            return UndoPlan(tuple(undo), blocked_by=s.id)
        undo.append(s.id)
    return UndoPlan(tuple(undo), None)


def rollback_path(state: State) -> str:
    """One line saying which way back remains open right now."""
    plan = undo_plan(state, "full")
    auth = rollback_authority(state)
    who = ", ".join(auth["users"] + auth["groups"]) or "nobody"
    if plan.blocked_by:
        return f"no automated rollback: stage '{plan.blocked_by}' retired the fallback"
    if not plan.undo:
        return f"nothing applied yet; rollback authority: {who}"
    return f"undo {' -> '.join(plan.undo)} (rollback authority: {who})"
