"""The one table of legal phase changes. Nothing else changes an execution's phase.

Rules:
* An execution starts READY, before its first stage.
* Forward progress is READY -> APPLYING -> VERIFYING -> READY (next stage) ... -> COMPLETED.
* Any non-terminal phase may stop at a hold (HOLDING) or start rolling back, except that a
  rollback in progress is finished, not held.
* A hold ends only by a human release (back to the phase its release resumes), by being
  superseded by a newer hold, or by a rollback.
* An execution nobody will finish may be ABANDONED by a person from any phase after its start;
  the engine never abandons on its own.
* COMPLETED, ROLLED_BACK, NEEDS_HUMAN and ABANDONED are terminal: nothing leaves them.
* An illegal change raises ``IllegalTransition`` and changes nothing.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    NEW = "new"
    READY = "ready"  # before entering the next stage (or completing)
    APPLYING = "applying"  # a forward action's intent is recorded; resolving its outcome
    VERIFYING = "verifying"  # the stage is live and confirmed; baking against signals
    HOLDING = "holding"  # a human-visible hold is open
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    NEEDS_HUMAN = "needs_human"
    ABANDONED = "abandoned"  # ended by a person's reasoned decision; nothing drives it again


TERMINAL = frozenset({Phase.COMPLETED, Phase.ROLLED_BACK, Phase.NEEDS_HUMAN, Phase.ABANDONED})

_T = Phase
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _T.NEW: frozenset({_T.READY}),
    _T.READY: frozenset({_T.APPLYING, _T.HOLDING, _T.COMPLETED, _T.ROLLING_BACK, _T.NEEDS_HUMAN, _T.ABANDONED}),
    _T.APPLYING: frozenset({_T.VERIFYING, _T.HOLDING, _T.ROLLING_BACK, _T.NEEDS_HUMAN, _T.ABANDONED}),
    _T.VERIFYING: frozenset({_T.READY, _T.HOLDING, _T.ROLLING_BACK, _T.NEEDS_HUMAN, _T.ABANDONED}),
    _T.HOLDING: frozenset(
        {_T.HOLDING, _T.READY, _T.APPLYING, _T.VERIFYING, _T.ROLLING_BACK, _T.NEEDS_HUMAN, _T.ABANDONED}
    ),
    _T.ROLLING_BACK: frozenset({_T.ROLLED_BACK, _T.HOLDING, _T.NEEDS_HUMAN, _T.ABANDONED}),
    _T.COMPLETED: frozenset(),
    _T.ROLLED_BACK: frozenset(),
    _T.NEEDS_HUMAN: frozenset(),
    _T.ABANDONED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: Phase, target: Phase, cause: str) -> None:
        super().__init__(f"illegal transition {current} -> {target} ({cause})")
        self.current = current
        self.target = target


def transition(current: Phase, target: Phase, cause: str) -> Phase:
    """Return ``target`` if the table allows ``current -> target``; raise otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target, cause)
    return target
