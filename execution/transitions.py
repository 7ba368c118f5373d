"""The one table of phase changes, keyed by the event that causes them. Nothing else changes an
execution's phase: the fold (``project.py``) looks each event up here.

Rules:
* An execution starts READY, before its first stage.
* Forward progress is READY -> APPLYING -> VERIFYING -> READY (next stage) ... -> COMPLETED.
* Any non-terminal phase may stop at a hold (HOLDING) or start rolling back, except that a
  rollback in progress is finished, not held (a narrowing rollback ends in a hold of its own).
* A hold ends only by a human release (to the phase its resume target names), by being
  superseded by a newer hold, or by a rollback.
* An execution nobody will finish may be ABANDONED by a person from any phase after its start;
  the engine never abandons on its own.
* COMPLETED, ROLLED_BACK, NEEDS_HUMAN and ABANDONED are terminal: nothing leaves them.
* An event that changes the phase somewhere but has no row for the current phase raises
  ``IllegalTransition`` and changes nothing. Events with no row at all (samples, sends,
  read-backs, refused clicks, rollback steps) never change the phase.

The key is ``(phase, event class, via)``: ``via`` is the resume target of a released hold (for a
hold released to ``resume``, the phase the hold interrupted), the direction of an action, or
None. The README's phase diagram is generated from this table (``stagehold schema docs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from execution.events import (
    ActionConfirmed,
    ActionIntended,
    Direction,
    Event,
    ExecutionAbandoned,
    ExecutionCompleted,
    ExecutionNeedsHuman,
    ExecutionRolledBack,
    ExecutionStarted,
    HoldOpened,
    HoldReleased,
    Resume,
    RollbackStarted,
    StagePassed,
)


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

Via = Resume | Direction | Phase | None
Key = tuple[Phase, type[Event], Via]

_T = Phase
_RUNNING = (_T.READY, _T.APPLYING, _T.VERIFYING, _T.HOLDING, _T.ROLLING_BACK)
_INTERRUPTIBLE = (_T.READY, _T.APPLYING, _T.VERIFYING)  # what a hold released to "resume" goes back to

TABLE: Mapping[Key, Phase] = {
    (_T.NEW, ExecutionStarted, None): _T.READY,
    (_T.READY, ActionIntended, Direction.APPLY): _T.APPLYING,
    (_T.APPLYING, ActionConfirmed, Direction.APPLY): _T.VERIFYING,
    (_T.VERIFYING, StagePassed, None): _T.READY,
    (_T.READY, ExecutionCompleted, None): _T.COMPLETED,
    # A rollback in progress is finished, not held; it holds only when a narrowing is done.
    **{(phase, HoldOpened, None): _T.HOLDING for phase in _RUNNING},
    (_T.HOLDING, HoldReleased, Resume.ENTER): _T.READY,
    (_T.HOLDING, HoldReleased, Resume.ACCEPT): _T.VERIFYING,
    (_T.HOLDING, HoldReleased, Resume.VERIFY): _T.VERIFYING,
    (_T.HOLDING, HoldReleased, Resume.READBACK): _T.APPLYING,
    **{(_T.HOLDING, HoldReleased, phase): phase for phase in _INTERRUPTIBLE},
    **{(phase, RollbackStarted, None): _T.ROLLING_BACK for phase in _RUNNING if phase != _T.ROLLING_BACK},
    # Forward progress recorded while a hold is open is never the engine's doing (it waits for the
    # release), but a ledger may hold it (edited, or written by another tool): the fold follows it
    # so that ``review`` and ``status`` can name the missing release instead of refusing to read.
    (_T.HOLDING, ActionIntended, Direction.APPLY): _T.APPLYING,
    (_T.HOLDING, ActionConfirmed, Direction.APPLY): _T.VERIFYING,
    (_T.HOLDING, StagePassed, None): _T.READY,
    (_T.ROLLING_BACK, ExecutionRolledBack, None): _T.ROLLED_BACK,
    **{(phase, ExecutionNeedsHuman, None): _T.NEEDS_HUMAN for phase in _RUNNING},
    **{(phase, ExecutionAbandoned, None): _T.ABANDONED for phase in _RUNNING},
}

# Which phases may follow which (the table without its events): for the diagram and the checks.
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    phase: frozenset(target for (source, _, _), target in TABLE.items() if source == phase) for phase in Phase
}

# Where each (event class, via) the table knows leads, and the event classes that move the phase.
_LEADS_TO: Mapping[tuple[type[Event], Via], Phase] = {(event, via): target for (_, event, via), target in TABLE.items()}
_MOVERS = frozenset(event for (_, event, _) in TABLE)


class IllegalTransition(Exception):
    def __init__(self, current: Phase, target: Phase, cause: str) -> None:
        super().__init__(f"illegal transition {current} -> {target} ({cause})")
        self.current = current
        self.target = target


def next_phase(current: Phase, event: Event, via: Via = None) -> Phase:
    """The phase after ``event`` in ``current``: the table's row, or ``current`` when the event
    never changes the phase; ``IllegalTransition`` when the event has no row for ``current``."""
    target = TABLE.get((current, type(event), via))
    if target is not None:
        return target
    elsewhere = _LEADS_TO.get((type(event), via))
    if type(event) not in _MOVERS or (elsewhere is None and isinstance(via, Direction)):
        return current  # e.g. a rollback step's intent or confirmation: the phase stays ROLLING_BACK
    raise IllegalTransition(current, elsewhere or (via if isinstance(via, Phase) else current), event.kind)


def transition(current: Phase, target: Phase, cause: str) -> Phase:
    """Return ``target`` if some event may move ``current`` to it; raise otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target, cause)
    return target


def diagram() -> str:
    """The table as a Mermaid state diagram (README: "Phases"), one arrow per row."""
    lines = ["stateDiagram-v2", "    [*] --> new"]
    for (source, event, via), target in TABLE.items():
        if isinstance(via, Phase):
            label = f"{event.kind}, back to {via}"
        else:
            label = event.kind + (f" ({via})" if via is not None else "")
        lines.append(f"    {source} --> {target}: {label}")
    lines += [f"    {phase} --> [*]" for phase in Phase if phase in TERMINAL]
    return "\n".join(lines) + "\n"
