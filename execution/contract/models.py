"""Pydantic models of the change package and the execution plan (unknown fields are refused).

These check shape and local grammar (thresholds, durations, identifiers). Rules that relate
fields to each other — digest, scope, protection, references — live in ``rules.py`` so each
can report every problem at once with its own path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from execution.conditions import parse_condition, parse_duration


def _check_condition(text: str) -> str:
    parse_condition(text)
    return text


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone, e.g. 2026-11-28T22:00:00Z")
    return value


Threshold = Annotated[str, AfterValidator(_check_condition)]
Duration = Annotated[str, AfterValidator(_check_duration)]
AwareTime = Annotated[datetime, AfterValidator(_check_aware)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
SlackId = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9]{1,30}$")]
Reaction = Literal["hold", "rollback", "narrow"]
JsonValue = Any


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _exactly_one(model: BaseModel, names: tuple[str, ...]) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of: {', '.join(names)}")


# ---------------------------------------------------------------- plan: signals


class PrometheusSignal(Strict):
    target: Name
    query: Annotated[str, Field(min_length=1, max_length=4000)]
    samples: Annotated[str, Field(min_length=1, max_length=4000)] | None = None


class HttpSignal(Strict):
    target: Name
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)]
    field: Annotated[str, Field(min_length=1, max_length=200)]
    samples_field: str | None = None
    time_field: str | None = None


class CommandSignal(Strict):
    target: Name
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)]
    field: Annotated[str, Field(min_length=1, max_length=200)]
    timeout: Duration = "30s"


class Signal(Strict):
    prometheus: PrometheusSignal | None = None
    http: HttpSignal | None = None
    command: CommandSignal | None = None
    max_age: Duration
    description: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Signal:
        _exactly_one(self, ("prometheus", "http", "command"))
        return self

    @property
    def source(self) -> PrometheusSignal | HttpSignal | CommandSignal:
        src = self.prometheus or self.http or self.command
        assert src is not None
        return src


# ---------------------------------------------------------------- plan: actions and read-backs


class HttpAction(Strict):
    target: Name
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "PUT"
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)]
    json_body: JsonValue = Field(default=None, alias="json")
    timeout: Duration = "10s"


class CommandAction(Strict):
    target: Name
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)]
    timeout: Duration = "60s"


class Action(Strict):
    http: HttpAction | None = None
    command: CommandAction | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Action:
        _exactly_one(self, ("http", "command"))
        return self

    @property
    def target(self) -> str:
        spec = self.http or self.command
        assert spec is not None
        return spec.target


class HttpReadback(Strict):
    target: Name
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)]
    expect: Annotated[dict[str, JsonValue], Field(min_length=1)]
    timeout: Duration = "10s"


class CommandReadback(Strict):
    target: Name
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)]
    expect: Annotated[dict[str, JsonValue], Field(min_length=1)]
    timeout: Duration = "30s"


class Confirm(Strict):
    http: HttpReadback | None = None
    command: CommandReadback | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Confirm:
        _exactly_one(self, ("http", "command"))
        return self

    @property
    def target(self) -> str:
        spec = self.http or self.command
        assert spec is not None
        return spec.target

    @property
    def expect(self) -> dict[str, JsonValue]:
        spec = self.http or self.command
        assert spec is not None
        return spec.expect


class RollbackStep(Strict):
    action: Action
    confirm: Confirm


# ---------------------------------------------------------------- plan: checks and stages


class Gate(Strict):
    """A precondition: the signal must satisfy ``pass`` with fresh evidence."""

    signal: Name
    pass_: Threshold = Field(alias="pass")


class Check(Strict):
    """A verification check: ``pass`` band, optional tolerated ``hold`` band, sample floor."""

    signal: Name
    pass_: Threshold = Field(alias="pass")
    hold: Threshold | None = None
    min_samples: Annotated[int, Field(ge=1)] | None = None


class OutcomeMap(Strict):
    """What each non-pass outcome does. Nothing maps to "continue": no outcome but pass advances."""

    hold: Reaction = "hold"
    fail: Reaction = "rollback"
    no_data: Reaction = "hold"
    stale: Reaction = "hold"
    error: Reaction = "hold"


class Verify(Strict):
    bake: Duration
    every: Duration
    checks: Annotated[list[Check], Field(min_length=1, max_length=50)]
    on: OutcomeMap = OutcomeMap()


class Stage(Strict):
    id: Name
    description: str | None = None
    blast_radius: Annotated[float, Field(ge=0)]
    hold_before: bool = False
    promotes: bool = False
    retires_fallback: bool = False
    irreversible: bool = False
    preflight: Annotated[list[Gate], Field(max_length=50)] = []
    action: Action
    confirm: Confirm
    verify: Verify
    rollback: RollbackStep | None = None


class HoldPolicy(Strict):
    expiry: Duration = "2h"
    remind_before: Duration = "15m"


class Plan(Strict):
    stagehold: Literal[1]
    kind: Literal["execution-plan"]
    name: Name
    version: Annotated[int, Field(ge=1)]
    description: str | None = None
    sensitive_fields: list[Annotated[str, Field(min_length=1, max_length=100)]] = []
    signals: Annotated[dict[Name, Signal], Field(min_length=1, max_length=200)]
    rollback_readiness: Annotated[list[Gate], Field(min_length=1, max_length=50)]
    stages: Annotated[list[Stage], Field(min_length=1, max_length=100)]
    holds: HoldPolicy = HoldPolicy()
    rollback_to: Name | None = None


# ---------------------------------------------------------------- change package


class Window(Strict):
    opens: AwareTime
    closes: AwareTime


class Scope(Strict):
    targets: Annotated[list[Name], Field(min_length=1)]
    protected: list[Name] = []
    max_blast_radius: Annotated[float, Field(ge=0)]


class Approval(Strict):
    user: SlackId
    role: Annotated[str, Field(min_length=1, max_length=100)]
    at: AwareTime


class Authority(Strict):
    users: list[SlackId] = []
    groups: list[SlackId] = []

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups


class Authorities(Strict):
    initiate: Authority
    release: Authority
    rollback: Authority
    operators: Authority = Authority()
    two_person: bool = True


class Target(Strict):
    kind: Literal["http", "prometheus", "command"] = "http"
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _url_when_needed(self) -> Target:
        if self.kind in ("http", "prometheus") and self.url is None:
            raise ValueError(f"a {self.kind} target needs a url")
        return self


class ChangePackage(Strict):
    stagehold: Literal[1]
    kind: Literal["change-package"]
    id: Name
    title: Annotated[str, Field(min_length=1, max_length=200)]
    plan: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$")]
    plan_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    window: Window
    channel: Annotated[str, Field(pattern=r"^[CG][A-Z0-9]{2,30}$")]
    scope: Scope
    approved_by: Annotated[list[Approval], Field(min_length=1)]
    authorities: Authorities
    targets: Annotated[dict[Name, Target], Field(min_length=1)]
