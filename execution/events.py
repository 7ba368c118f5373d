"""What the engine records, as typed events: one frozen class per ledger entry kind (past tense:
each records something that happened), and the one codec between them and ledger entries.

Rules:
* The ledger stores ``(kind, body)`` with the body as JSON; ``record`` turns an event into a
  ``NewEntry`` and ``event_of`` reads an ``Entry`` back. Nothing else builds or reads bodies.
* The codec keeps the bodies byte for byte as the engine has always written them (same keys,
  same ``null``s, the same optional keys left out), so canonical bytes, and with them every
  stored chain, stay valid. A field marked ``_OMIT_NONE`` is left out of the body when it is
  None, as it always was; every other field is written, ``null`` included.
* Older chains lack some keys; their fields have defaults here (the same defaults the fold has
  always used). A key an entry must have and does not is a ``MalformedEvent`` naming it.
* Nested evidence (``results``, ``package``, ``plan``, ...) stays JSON: it is written by
  ``Result.to_json`` and the contract models, which own its shape.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar, TypeAlias

from ledger.chain import format_ts, parse_ts
from ledger.entry import Entry, NewEntry

Json: TypeAlias = Any  # a JSON value as written (evidence rows, read-back values, contract models)
JsonObject: TypeAlias = Mapping[str, Any]


class Direction(StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"


class Resume(StrEnum):
    """What a released hold resumes (the transition table keys ``hold.released`` on it)."""

    ENTER = "enter"  # enter the held stage (its release authorises entry)
    ACCEPT = "accept"  # accept the checkpoint on tolerated-band evidence, if it still matches
    VERIFY = "verify"  # restart the stage's bake
    READBACK = "readback"  # read the target back again (an action's outcome was in doubt)
    RESUME = "resume"  # go back to the phase the hold interrupted (``resume_phase``)


class HoldKind(StrEnum):
    """Why a hold opened; ``execution.hold_kinds`` has each kind's phrase for people."""

    PROTECTED = "protected"
    DEGRADED = "degraded"
    CONFLICTING = "conflicting"
    NO_DATA = "no_data"
    STALE = "stale"
    ERROR = "error"
    HOLD = "hold"
    FAIL = "fail"
    PREFLIGHT = "preflight"
    READINESS_LOST = "readiness_lost"
    ROLLBACK_UNSAFE = "rollback_unsafe"
    AMBIGUOUS = "ambiguous"
    NOT_APPLIED = "not_applied"
    WINDOW_CLOSED = "window_closed"
    MANUAL = "manual"
    NARROWED = "narrowed"
    RECONCILE_MISMATCH = "reconcile_mismatch"


class StageStatus(StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    LIVE = "live"
    PASSED = "passed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class SendOutcome(StrEnum):
    OK = "ok"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"


class Purpose(StrEnum):
    ENTER = "enter"  # preflight and rollback readiness before entering a stage
    RELEASE = "release"  # the re-check before accepting a released tolerated-band checkpoint


class Basis(StrEnum):
    VERIFIED = "verified"
    RELEASED = "released"


class Scope(StrEnum):
    FULL = "full"
    NARROW = "narrow"


_OMIT_NONE = {"omit_none": True}


class MalformedEvent(ValueError):
    """A ledger entry of a known kind whose body cannot be read as that kind."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"{kind}: {problem}")
        self.kind = kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Every event class names its ledger ``kind``."""

    kind: ClassVar[str]


# ---------------------------------------------------------------- execution


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionStarted(Event):
    kind: ClassVar[str] = "execution.started"
    change_id: str = ""
    title: str = ""
    package: JsonObject
    plan: JsonObject
    plan_sha256: str
    channel: str = ""
    mode: str = "live"  # live | rehearsal
    speed: float = 1.0
    window: Mapping[str, str]  # {opens, closes}
    initiator: str = ""
    # What the signed approvals showed: {package_sha256, approved, policy[], signed_by[], refused[],
    # missing[]}; absent when they were not checked.
    approvals: JsonObject | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionResumed(Event):
    kind: ClassVar[str] = "execution.resumed"
    owner: str
    reconcile: JsonObject | None = None  # {stage, direction, expect, observed, matches, detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionCompleted(Event):
    kind: ClassVar[str] = "execution.completed"
    stages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRolledBack(Event):
    kind: ClassVar[str] = "execution.rolled_back"
    undone: tuple[str, ...] = ()
    reason: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionNeedsHuman(Event):
    kind: ClassVar[str] = "execution.needs_human"
    why: str = ""
    stage: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionAbandoned(Event):
    """An execution nobody will finish, ended by a person; frees the change."""

    kind: ClassVar[str] = "execution.abandoned"
    reason: str = ""
    phase: str | None = None
    hold: str | None = None


# ---------------------------------------------------------------- gates and verification


@dataclass(frozen=True, slots=True, kw_only=True)
class GateChecked(Event):
    kind: ClassVar[str] = "gate.checked"
    stage: str = ""
    purpose: Purpose = Purpose.ENTER
    results: tuple[JsonObject, ...] = ()
    outcome: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationSampled(Event):
    kind: ClassVar[str] = "verification.sampled"
    stage: str = ""
    results: tuple[JsonObject, ...] = ()
    outcome: str = ""
    reaction: str = ""
    consecutive: int = 0
    required: int = 0
    # Only when a gap restarted the streak: {since_previous_s, limit_s}.
    gap: Mapping[str, float] | None = field(default=None, metadata=_OMIT_NONE)
    # Only for a sample taken while held: the hold's id (the bake is not touched).
    during_hold: str | None = field(default=None, metadata=_OMIT_NONE)
    # [check key, consecutive failing samples] pairs: not an object, so that a signal whose name
    # looks secret (masking works by key) cannot hide its streak.
    failing: tuple[tuple[str, int], ...] | None = field(default=None, metadata=_OMIT_NONE)
    tolerated: tuple[str, ...] | None = field(default=None, metadata=_OMIT_NONE)
    predates_change: tuple[str, ...] | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePassed(Event):
    kind: ClassVar[str] = "stage.passed"
    stage: str = ""
    index: int
    basis: Basis
    hold: str | None = None
    consecutive: int = 0


# ---------------------------------------------------------------- holds


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldOpened(Event):
    kind: ClassVar[str] = "hold.opened"
    hold: str
    stage: str | None = None
    index: int | None = None  # older chains: the stage in focus
    hold_kind: HoldKind = field(metadata={"key": "kind"})
    reason: str
    results: tuple[JsonObject, ...] = ()
    categories: Mapping[str, str] = field(default_factory=dict)
    evidence_version: int = 1
    evidence_expires_at: datetime | None = None
    releasers: Mapping[str, list[str]] = field(default_factory=dict)  # {users, groups}
    required: int = 1
    releasable: bool = True
    resume: Resume = Resume.RESUME
    resume_phase: str | None = None  # the phase a RESUME release returns to (older chains: the phase held)
    expires_at: datetime
    remind_at: datetime
    rollback_path: str = ""
    rollback_authority: Mapping[str, list[str]] | None = field(default=None, metadata=_OMIT_NONE)
    supersedes: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldRequested(Event):
    """A manual hold asked for while an action resolves."""

    kind: ClassVar[str] = "hold.requested"
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEvidenceExpired(Event):
    """The hold's evidence went stale: the new version makes earlier release buttons stale."""

    kind: ClassVar[str] = "hold.evidence_expired"
    hold: str
    evidence_version: int
    note: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldReminded(Event):
    kind: ClassVar[str] = "hold.reminded"
    hold: str
    expires_at: datetime | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEscalated(Event):
    kind: ClassVar[str] = "hold.escalated"
    hold: str
    expires_at: datetime | None = field(default=None, metadata=_OMIT_NONE)
    notify: Mapping[str, list[str]] = field(default_factory=dict)  # {users, groups}
    note: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldReleased(Event):
    kind: ClassVar[str] = "hold.released"
    hold: str
    by: tuple[str, ...]
    resume: Resume | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseGranted(Event):
    kind: ClassVar[str] = "release.granted"
    hold: str
    evidence_version: int
    count: int = 1
    required: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseNotCarried(Event):
    kind: ClassVar[str] = "release.not_carried"
    hold: str
    why: str = ""
    changes: tuple[str, ...] = ()


# ---------------------------------------------------------------- attempts that change nothing


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt(Event):
    """A person's attempt that changed nothing (refused or ignored); recorded so the ledger shows
    who tried what. ``reason`` says why it did not count."""

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseDenied(Attempt):
    """Not an authority, the initiator under two-person control, a hold that cannot be released."""

    kind: ClassVar[str] = "release.denied"
    hold: str | None = field(default=None, metadata=_OMIT_NONE)
    evidence_version: int | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseIgnored(Attempt):
    """A stale, repeated or superseded click."""

    kind: ClassVar[str] = "release.ignored"
    hold: str | None = field(default=None, metadata=_OMIT_NONE)
    evidence_version: int | None = field(default=None, metadata=_OMIT_NONE)
    released_by: tuple[str, ...] | None = field(default=None, metadata=_OMIT_NONE)
    released_at: str | None = field(default=None, metadata=_OMIT_NONE)  # a time, or "earlier"
    # One person's further clicks on the same button, counted after a first click that decided
    # them, recorded together: how many, the first and the last (times).
    repeats: int | None = field(default=None, metadata=_OMIT_NONE)
    first_at: str | None = field(default=None, metadata=_OMIT_NONE)
    last_at: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackDenied(Attempt):
    kind: ClassVar[str] = "rollback.denied"


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldIgnored(Attempt):
    """A manual hold that could not be placed now."""

    kind: ClassVar[str] = "hold.ignored"


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldDenied(Attempt):
    """The person is not a listed operator."""

    kind: ClassVar[str] = "hold.denied"


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonDenied(Attempt):
    kind: ClassVar[str] = "abandon.denied"


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionIntended(Event):
    kind: ClassVar[str] = "action.intended"
    stage: str
    index: int
    direction: Direction
    attempt: int
    key: str
    target: str | None = None
    action: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSent(Event):
    kind: ClassVar[str] = "action.sent"
    stage: str = ""
    direction: Direction | None = None
    key: str
    outcome: SendOutcome
    status: int | None = None
    detail: str = ""
    response: Json = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionReadBack(Event):
    kind: ClassVar[str] = "action.read_back"
    stage: str = ""
    direction: Direction | None = None
    key: str
    matches: bool | None = None  # None: the read failed
    expect: Json = None
    observed: Json = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResendIntended(Event):
    kind: ClassVar[str] = "action.resend_intended"
    stage: str = ""
    direction: Direction | None = None
    key: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionConfirmed(Event):
    kind: ClassVar[str] = "action.confirmed"
    stage: str
    index: int
    direction: Direction
    key: str
    observed: Json = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackStarted(Event):
    kind: ClassVar[str] = "rollback.started"
    trigger: str
    reason: str = ""
    scope: Scope = Scope.FULL
    undo: tuple[str, ...]
    requested_by: str | None = field(default=None, metadata=_OMIT_NONE)


EVENT_TYPES: tuple[type[Event], ...] = (
    ExecutionStarted,
    ExecutionResumed,
    GateChecked,
    HoldOpened,
    HoldRequested,
    HoldEvidenceExpired,
    HoldReminded,
    HoldEscalated,
    HoldIgnored,
    HoldDenied,
    ReleaseGranted,
    ReleaseDenied,
    ReleaseIgnored,
    HoldReleased,
    ReleaseNotCarried,
    ActionIntended,
    ActionSent,
    ActionReadBack,
    ActionResendIntended,
    ActionConfirmed,
    VerificationSampled,
    StagePassed,
    RollbackStarted,
    RollbackDenied,
    ExecutionCompleted,
    ExecutionRolledBack,
    ExecutionNeedsHuman,
    ExecutionAbandoned,
    AbandonDenied,
)
BY_KIND: Mapping[str, type[Event]] = {t.kind: t for t in EVENT_TYPES}

# Attempts that only record a human's try and never change where the execution is.
NO_OP_KINDS = frozenset(t.kind for t in EVENT_TYPES if issubclass(t, Attempt))

# The moments the bot signs a checkpoint of the chain's head (ledger.witness) and posts it in the thread.
Witnessed = (
    HoldOpened | StagePassed | ExecutionCompleted | ExecutionRolledBack | ExecutionNeedsHuman | ExecutionAbandoned
)
WITNESSED = frozenset(t.kind for t in typing.get_args(Witnessed))

# Kind strings, for code that selects entries by kind (queries, exports, reliability oracles).
EXECUTION_STARTED = ExecutionStarted.kind
EXECUTION_RESUMED = ExecutionResumed.kind
GATE_CHECKED = GateChecked.kind
HOLD_OPENED = HoldOpened.kind
HOLD_REQUESTED = HoldRequested.kind
HOLD_EVIDENCE_EXPIRED = HoldEvidenceExpired.kind
HOLD_REMINDED = HoldReminded.kind
HOLD_ESCALATED = HoldEscalated.kind
HOLD_IGNORED = HoldIgnored.kind
HOLD_DENIED = HoldDenied.kind
RELEASE_GRANTED = ReleaseGranted.kind
RELEASE_DENIED = ReleaseDenied.kind
RELEASE_IGNORED = ReleaseIgnored.kind
HOLD_RELEASED = HoldReleased.kind
RELEASE_NOT_CARRIED = ReleaseNotCarried.kind
ACTION_INTENDED = ActionIntended.kind
ACTION_SENT = ActionSent.kind
ACTION_READ_BACK = ActionReadBack.kind
ACTION_RESEND_INTENDED = ActionResendIntended.kind
ACTION_CONFIRMED = ActionConfirmed.kind
VERIFICATION_SAMPLED = VerificationSampled.kind
STAGE_PASSED = StagePassed.kind
ROLLBACK_STARTED = RollbackStarted.kind
ROLLBACK_DENIED = RollbackDenied.kind
EXECUTION_COMPLETED = ExecutionCompleted.kind
EXECUTION_ROLLED_BACK = ExecutionRolledBack.kind
EXECUTION_NEEDS_HUMAN = ExecutionNeedsHuman.kind
EXECUTION_ABANDONED = ExecutionAbandoned.kind
ABANDON_DENIED = AbandonDenied.kind


# ---------------------------------------------------------------- the codec


def record(event: Event, actor: str, ts: datetime) -> NewEntry:
    """The entry that records ``event``: its kind and the body as the ledger has always held it."""
    return NewEntry(kind=event.kind, actor=actor, body=encode(event), ts=ts)


def encode(event: Event) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        body[f.metadata.get("key", f.name)] = _to_json(value)
    return body


def event_of(entry: Entry | NewEntry) -> Event | None:
    """The typed event an entry records; None for kinds the engine does not interpret (notes, marks)."""
    cls = BY_KIND.get(entry.kind)
    return None if cls is None else decode(cls, entry.body)


_E = typing.TypeVar("_E", bound=Event)


def decode(cls: type[_E], body: Mapping[str, Any]) -> _E:
    values: dict[str, Any] = {}
    for name, key, convert, required in _schema(cls):
        if key in body:
            try:
                values[name] = convert(body[key])
            except (TypeError, ValueError, KeyError) as exc:
                raise MalformedEvent(cls.kind, f"field {key!r} cannot be read: {exc}") from None
        elif required:
            raise MalformedEvent(cls.kind, f"the body has no {key!r}")
    return cls(**values)


def _to_json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


_Field = tuple[str, str, typing.Callable[[Any], Any], bool]  # name, body key, reader, required
_SCHEMAS: dict[type[Event], tuple[_Field, ...]] = {}


def _schema(cls: type[Event]) -> tuple[_Field, ...]:
    """Each field's body key, how to read it and whether a body must have it (worked out once)."""
    known = _SCHEMAS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = tuple(
            (
                f.name,
                f.metadata.get("key", f.name),
                _reader(hints[f.name]),
                f.default is MISSING and f.default_factory is MISSING,
            )
            for f in fields(cls)
        )
        _SCHEMAS[cls] = known
    return known


def _reader(hint: Any) -> typing.Callable[[Any], Any]:
    """How to read a JSON value as ``hint`` (enums, times, tuples; JSON values as they are)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = _reader(next(a for a in args if a is not type(None)))
        return lambda v: None if v is None else inner(v)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint
    if hint is datetime:
        return parse_ts
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _reader(args[0])
            return lambda v: tuple(item(x) for x in v)
        readers = [_reader(a) for a in args]
        return lambda v: tuple(r(x) for r, x in zip(readers, v, strict=True))
    if origin is Mapping:
        value = _reader(args[1])
        return lambda v: {str(k): value(x) for k, x in v.items()}
    if hint is float:
        return float
    if hint is int:
        return int
    if hint is bool:
        return bool
    if hint is str:
        return str
    return lambda v: v
