"""Pydantic models of the change package and the execution plan (unknown fields are refused).

These check shape and local grammar (thresholds, durations, identifiers). Rules that relate
fields to each other — digest, scope, protection, references — live in ``rules.py`` so each
can report every problem at once with its own path.

Every field carries ``Field(description=..., examples=[...])``: ``docs/reference.md``, the JSON
Schema (``stagehold schema package|plan``) and the examples in validation messages are generated
from them, and a test fails when a field has no description or example. A description says what
the field means and the rule it serves.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from execution.conditions import CONDITION_PATTERN, DURATION_PATTERN, parse_condition, parse_duration
from execution.promql import analyse, parse_query
from ledger.masking import mask, mask_text


def _check_condition(text: str) -> str:
    parse_condition(text)
    return text


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _recorded(info: ValidationInfo) -> bool:
    """True when folding a document already recorded in the ledger: rules added later must not
    make an execution that was valid when it started impossible to read back."""
    return isinstance(info.context, dict) and bool(info.context.get(RECORDED))


RECORDED = "recorded"


def _check_query(text: str, info: ValidationInfo) -> str:
    if not _recorded(info):
        analyse(text)  # a PromQLError (a ValueError) becomes a problem at the query's line
    return text


def _check_samples_query(text: str, info: ValidationInfo) -> str:
    if not _recorded(info):
        parse_query(text)
    return text


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone, e.g. 2026-11-28T22:00:00Z")
    return value


# ``format`` names the grammar for the reference and for messages; ``pattern`` lets editors check it.
Threshold = Annotated[
    str,
    AfterValidator(_check_condition),
    Field(json_schema_extra={"format": "condition", "pattern": CONDITION_PATTERN}),
]
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(json_schema_extra={"format": "duration", "pattern": DURATION_PATTERN}),
]
PromQL = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_check_query)]
SamplesPromQL = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_check_samples_query)]
AwareTime = Annotated[datetime, AfterValidator(_check_aware)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
SlackId = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9]{1,30}$")]
Reaction = Literal["hold", "rollback", "narrow"]
JsonValue = Any
# HAProxy names backends and servers with letters, digits and ``-_.:``.
HaproxyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")]
HeaderValue = Annotated[str, Field(pattern=r"^[^\r\n\x00]{0,2000}$")]
FormValue = str | int | float | bool | list[str | int | float | bool]
StatusCode = Annotated[int, Field(ge=100, le=599)]
# Headers stagehold sets itself: the role's credential, the idempotency key, the role name.
RESERVED_HEADERS = frozenset({"authorization", "idempotency-key", "x-stagehold-role", "content-length", "host"})


def _check_pattern(text: str | None) -> str | None:
    if text is not None:
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return text


Pattern = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_check_pattern)]


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    reserved = sorted(h for h in headers if h.lower() in RESERVED_HEADERS)
    if reserved:
        raise ValueError(
            f"header(s) {', '.join(reserved)} are set by stagehold itself (credentials come from settings, "
            "never from the plan)"
        )
    return headers


Headers = Annotated[dict[HeaderName, HeaderValue], AfterValidator(_check_headers)]


def _true_or_false(value: Any) -> Any:
    # pydantic alone would read "no", "off", "0" and 0 as False: a yes/no field that protects
    # something (two_person, hold_before) takes only a real YAML boolean.
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "expected true or false")
    return value


# Every yes/no field of a contract model is a YesNo (a test holds every model to it). On the
# field itself rather than as a validator of every field of every model: building that one costs
# a tenth of the models' build, and each command that reads a package or the ledger pays for it.
YesNo = Annotated[bool, BeforeValidator(_true_or_false)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


ACTION_KINDS = ("http", "command", "haproxy")


def _exactly_one(model: BaseModel, names: tuple[str, ...]) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of: {', '.join(names)}")


# ---------------------------------------------------------------- plan: signals


Reduce = Literal["all", "any", "max", "min", "avg", "sum"]


class PrometheusRange(Strict):
    """A range query (``/api/v1/query_range``) over the last ``window``, one point every ``step``."""

    window: Duration = Field(
        description="How far back the range query starts; it ends at the time of reading.", examples=["10m"]
    )
    step: Duration = Field(description="The resolution: one point per series every step.", examples=["1m"])


class PrometheusSignal(Strict):
    """A PromQL query against a ``prometheus`` target, judged series by series (see ``reduce``)."""

    target: Name = Field(
        description="The package target (of kind prometheus) to query. Rule 3: it must be defined in the package.",
        examples=["metrics"],
    )
    query: PromQL = Field(
        description="The PromQL query; parsed when the package is validated. Every series it answers must "
        "meet the check unless reduce says otherwise; its age is that of the newest raw sample behind it.",
        examples=[
            'sum(rate(authz_errors_total{svc="tokenizer"}[1m])) / sum(rate(authz_requests_total{svc="tokenizer"}[1m]))'
        ],
    )
    samples: SamplesPromQL | None = Field(
        None,
        description="A second query counting the samples behind the value, for a check's min_samples: "
        "too little data is no_data, never a pass. When it answers several series the smallest counts.",
        examples=['sum(increase(authz_requests_total{svc="tokenizer"}[1m]))'],
    )
    reduce: Reduce = Field(
        default="all",
        description="How a query answering several series (or points) is judged: 'all' (every series must "
        "meet the check; the evidence names the worst), 'any' (one passing series is enough), or one "
        "value from 'max', 'min', 'avg' or 'sum'.",
        examples=["all", "max"],
    )
    range: PrometheusRange | None = Field(
        default=None,
        description="Read a range query instead of an instant one; every point counts as a series value.",
        examples=[{"window": "10m", "step": "1m"}],
    )
    timeout: Duration | None = Field(
        default=None,
        description="How long one read of this signal may take (default: STAGEHOLD_HTTP_TIMEOUT).",
        examples=["5s"],
    )


class HttpSignal(Strict):
    """A JSON document fetched with GET from a package target; one field of it is the value."""

    target: Name = Field(
        description="The package target to read. Rule 3: it must be defined in the package.",
        examples=["payments-router"],
    )
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)] = Field(
        description="The path under the target's url, starting with '/'.", examples=["/parity"]
    )
    field: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The value's place in the JSON answer, as a dotted path ('a.b', list items as 'items.0'). "
        "A missing field is no_data, never a pass.",
        examples=["mismatch_ratio"],
    )
    samples_field: str | None = Field(
        None,
        description="Dotted path of an integer counting the samples behind the value, for a check's min_samples.",
        examples=["compared"],
    )
    time_field: str | None = Field(
        None,
        description="Dotted path of the time the value was sampled (RFC 3339 or Unix seconds). When given, the "
        "evidence's age is measured from it, not from when it was read; a missing time is no_data.",
        examples=["sampled_at"],
    )
    timeout: Duration | None = Field(
        default=None,
        description="How long one read of this signal may take (default: STAGEHOLD_HTTP_TIMEOUT).",
        examples=["5s"],
    )


Stdin = Annotated[
    str | dict[str, JsonValue] | list[JsonValue] | None,
    Field(
        description="Written to the program's standard input: text as given, a mapping or list as JSON. "
        "Without it standard input is empty. Example: `stdin: {backend: app, weight: 25}`.",
        examples=[{"backend": "app", "weight": 25}],
    ),
]
ErrorPattern = Annotated[
    Pattern | None,
    Field(
        description="A regular expression searched in the program's stdout and stderr: a match means the "
        "program refused (an action is `rejected`, a read an error) even when it exits 0. "
        "Example: `error_pattern: '(?i)^error:'`.",
        examples=["(?i)^error:"],
    ),
]


class CommandSignal(Strict):
    """A program run without a shell; its stdout is JSON and one field of it is the value."""

    target: Name = Field(
        description="The package target the program speaks to (its url and the role's credential are passed "
        "in the environment, never on the command line).",
        examples=["sorter-control"],
    )
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)] = Field(
        description="The program and its arguments, run as given (no shell).",
        examples=[["sorterctl", "status", "--json"]],
    )
    field: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Dotted path of the value in the program's JSON output.", examples=["throughput_per_hour"]
    )
    timeout: Duration = Field(
        "30s", description="How long the program may run; a timeout is an error outcome.", examples=["30s"]
    )
    stdin: Stdin = None
    error_pattern: ErrorPattern = None


class Signal(Strict):
    """A named live reading. Give exactly one source: ``prometheus``, ``http`` or ``command``."""

    prometheus: PrometheusSignal | None = Field(
        None,
        description="Read the signal with a PromQL query.",
        examples=[{"target": "metrics", "query": 'sum(rate(errors_total{svc="api"}[1m]))'}],
    )
    http: HttpSignal | None = Field(
        None,
        description="Read the signal from a JSON document over HTTP.",
        examples=[{"target": "payments-router", "path": "/parity", "field": "mismatch_ratio"}],
    )
    command: CommandSignal | None = Field(
        None,
        description="Read the signal from a program's JSON output.",
        examples=[{"target": "sorter-control", "argv": ["sorterctl", "status", "--json"], "field": "ok"}],
    )
    max_age: Duration = Field(
        description="Evidence older than this is stale and never used: a stale reading opens a hold, it never passes.",
        examples=["60s"],
    )
    description: str | None = Field(
        None,
        description="What the signal measures, shown to people on evidence cards.",
        examples=["share of authorizations that failed"],
    )

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


ExpectAnswer = Annotated[
    dict[str, JsonValue] | None,
    Field(
        description="Fields (dotted paths) the action's JSON answer must hold for the outcome to be `ok`. "
        "An answer without them is `ambiguous` (the read-back decides), never `rejected`. "
        "Example: `expect_answer: {result.applied: true}`.",
        examples=[{"result.applied": True}],
    ),
]


class HttpAction(Strict):
    """An HTTP write to a target, sent with an ``Idempotency-Key`` header and the role's credential."""

    target: Name = Field(
        description="The package target to change. Rule 3: it must be in the package scope and not protected.",
        examples=["payments-router"],
    )
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = Field(
        "PUT", description="The HTTP method of the write.", examples=["PUT"]
    )
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)] = Field(
        description="The path under the target's url, starting with '/'.", examples=["/weights"]
    )
    json_body: JsonValue = Field(
        default=None,
        alias="json",
        description="The JSON body sent (any YAML value). Fields the plan marks sensitive are masked in the ledger.",
        examples=[{"tokenizer": 5, "legacy": 95}],
    )
    timeout: Duration = Field(
        "10s",
        description="How long to wait for the answer. No answer is an ambiguous outcome, resolved by the read-back "
        "(record intent, act, read back), never by a blind retry.",
        examples=["10s"],
    )
    form: dict[Annotated[str, Field(min_length=1, max_length=200)], FormValue] | None = Field(
        default=None,
        description="Send the body as `application/x-www-form-urlencoded` instead of JSON; a list sends the "
        "field once per item. Example (HAProxy's stats page): `form: {s: canary, action: drain, b: app}`.",
        examples=[{"s": "canary", "action": "drain", "b": "app"}],
    )
    headers: Headers = Field(
        default_factory=dict,
        description="Extra request headers for this action. Credentials never go here: `Authorization`, "
        "`Idempotency-Key` and `X-Stagehold-Role` are set by stagehold. Example: `headers: {X-Tenant: payments}`.",
        examples=[{"X-Tenant": "payments"}],
    )
    expect_status: Annotated[list[StatusCode], Field(min_length=1, max_length=20)] | None = Field(
        default=None,
        description="The status codes that mean the target applied the action (default: any 2xx). "
        "Example: `expect_status: [303]` for a form that answers with a redirect.",
        examples=[[303]],
    )
    redirect: Literal["stop", "follow"] = Field(
        default="stop",
        description="`stop` (default): a 3xx answer is judged as it is — listed in `expect_status` is `ok`, "
        "307/308 is `rejected` (the target sent the request elsewhere unprocessed), any other 3xx is "
        "`ambiguous`. `follow`: follow up to 5 redirects on the same origin and judge the final answer.",
        examples=["stop"],
    )
    expect_location: Pattern | None = Field(
        default=None,
        description="For a redirect listed in `expect_status`: a regular expression its `Location` must match "
        "for the outcome to be `ok`; otherwise it is `ambiguous`. Example (HAProxy's stats page answers "
        "`303` to `/stats;st=DONE`, or `;st=ERRP` when it did nothing): `expect_location: 'st=DONE'`.",
        examples=["st=DONE"],
    )
    expect_answer: ExpectAnswer = None

    @model_validator(mode="after")
    def _one_body(self) -> HttpAction:
        if self.json_body is not None and self.form is not None:
            raise ValueError("give json or form, not both")
        return self


class CommandAction(Strict):
    """A program run without a shell; exit 0 means it was accepted."""

    target: Name = Field(
        description="The package target the program changes. Rule 3: in scope, not protected.",
        examples=["sorter-control"],
    )
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)] = Field(
        description="The program and its arguments, run as given (no shell); the idempotency key is passed in "
        "STAGEHOLD_IDEMPOTENCY_KEY.",
        examples=[["sorterctl", "activate", "--profile", "v42", "--zones", "1"]],
    )
    timeout: Duration = Field(
        "60s",
        description="How long the program may run; a timeout leaves the outcome ambiguous, resolved by the read-back.",
        examples=["60s"],
    )
    stdin: Stdin = None
    error_pattern: ErrorPattern = None
    expect_answer: ExpectAnswer = None


class HaproxyAction(Strict):
    """Server weights and states set through HAProxy's Runtime API (``set weight``, ``set server``)."""

    target: Name = Field(
        description="A `kind: haproxy` target of the package (its Runtime API socket).", examples=["edge-lb"]
    )
    backend: HaproxyName = Field(
        description="The backend whose servers change. Example: `backend: app`.", examples=["app"]
    )
    weights: dict[HaproxyName, Annotated[int, Field(ge=0, le=256)]] = Field(
        default_factory=dict,
        description="Weight per server (0-256), sent as `set weight BACKEND/SERVER N`. "
        "Example: `weights: {canary: 25, stable: 75}`.",
        examples=[{"canary": 25, "stable": 75}],
    )
    states: dict[HaproxyName, Literal["ready", "drain", "maint"]] = Field(
        default_factory=dict,
        description="Administrative state per server, sent as `set server BACKEND/SERVER state S`. "
        "Example: `states: {canary: drain}`.",
        examples=[{"canary": "drain"}],
    )
    timeout: Duration = Field(
        default="10s", description="For all of this action's commands together.", examples=["10s"]
    )

    @model_validator(mode="after")
    def _something(self) -> HaproxyAction:
        if not self.weights and not self.states:
            raise ValueError("give weights or states (or both)")
        return self


class _OneKind(Strict):
    """An action or a read-back: exactly one of its kinds (``http``, ``command``, ``haproxy``) is set."""

    @model_validator(mode="after")
    def _one_kind(self) -> _OneKind:
        _exactly_one(self, ACTION_KINDS)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ACTION_KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        return str(getattr(self, self.kind).target)


class Action(_OneKind):
    """The one change a stage (or its rollback) makes. Give exactly one of ``http``, ``command`` or ``haproxy``."""

    http: HttpAction | None = Field(
        None,
        description="Make the change with an HTTP write.",
        examples=[{"target": "payments-router", "method": "PUT", "path": "/weights", "json": {"tokenizer": 5}}],
    )
    command: CommandAction | None = Field(
        None,
        description="Make the change by running a program.",
        examples=[{"target": "sorter-control", "argv": ["sorterctl", "activate", "--zones", "1"]}],
    )
    haproxy: HaproxyAction | None = Field(
        default=None,
        description="Set weights or states in HAProxy through its Runtime API.",
        examples=[{"target": "edge-lb", "backend": "app", "weights": {"canary": 25, "stable": 75}}],
    )

    @property
    def spec(self) -> HttpAction | CommandAction | HaproxyAction:
        spec = self.http or self.command or self.haproxy
        assert spec is not None
        return spec


class HttpReadback(Strict):
    """A GET whose JSON answer must contain the expected values."""

    target: Name = Field(
        description="The package target to read back. Rule 3: in scope, not protected.", examples=["payments-router"]
    )
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2000)] = Field(
        description="The path under the target's url, starting with '/'.", examples=["/weights"]
    )
    expect: Annotated[dict[str, JsonValue], Field(min_length=1)] = Field(
        description="Dotted field paths and the values they must hold for the change to count as applied "
        "(numbers compare numerically; true never equals 1).",
        examples=[{"tokenizer": 5, "legacy": 95}],
    )
    timeout: Duration = Field("10s", description="How long to wait for the answer.", examples=["10s"])
    headers: Headers = Field(
        default_factory=dict,
        description="Extra request headers for this read-back (as for actions; never credentials).",
        examples=[{"X-Tenant": "payments"}],
    )


class CommandReadback(Strict):
    """A program whose JSON output must contain the expected values."""

    target: Name = Field(
        description="The package target the program reads. Rule 3: in scope, not protected.",
        examples=["sorter-control"],
    )
    argv: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1, max_length=100)] = Field(
        description="The program and its arguments, run as given (no shell).",
        examples=[["sorterctl", "profile", "--json"]],
    )
    expect: Annotated[dict[str, JsonValue], Field(min_length=1)] = Field(
        description="Dotted field paths and the values they must hold for the change to count as applied.",
        examples=[{"profile": "v42", "zones": 1}],
    )
    timeout: Duration = Field("30s", description="How long the program may run.", examples=["30s"])
    stdin: Stdin = None
    error_pattern: ErrorPattern = None


class HaproxyReadback(Strict):
    """Reads ``show servers state BACKEND``: one object per server with ``weight``,
    ``initial_weight``, ``state`` (ready, drain or maint), ``operational`` (stopped, starting,
    running or stopping), ``address`` and ``port``."""

    target: Name = Field(description="A `kind: haproxy` target of the package.", examples=["edge-lb"])
    backend: HaproxyName = Field(description="The backend whose servers are read.", examples=["app"])
    expect: Annotated[dict[str, JsonValue], Field(min_length=1)] = Field(
        description="`SERVER.FIELD: value` pairs the live state must match. "
        "Example: `expect: {canary.weight: 25, stable.weight: 75}`.",
        examples=[{"canary.weight": 25, "stable.weight": 75}],
    )
    timeout: Duration = Field("10s", description="How long to wait for the Runtime API's answer.", examples=["10s"])


class Confirm(_OneKind):
    """The read-back that proves an action took effect. Exactly one of ``http``, ``command`` or ``haproxy``."""

    http: HttpReadback | None = Field(
        None,
        description="Read the target back over HTTP.",
        examples=[{"target": "payments-router", "path": "/weights", "expect": {"tokenizer": 5}}],
    )
    command: CommandReadback | None = Field(
        None,
        description="Read the target back by running a program.",
        examples=[{"target": "sorter-control", "argv": ["sorterctl", "profile", "--json"], "expect": {"zones": 1}}],
    )
    haproxy: HaproxyReadback | None = Field(
        default=None,
        description="Read server weights and states from HAProxy.",
        examples=[{"target": "edge-lb", "backend": "app", "expect": {"canary.weight": 25}}],
    )

    @property
    def spec(self) -> HttpReadback | CommandReadback | HaproxyReadback:
        spec = self.http or self.command or self.haproxy
        assert spec is not None
        return spec

    @property
    def expect(self) -> dict[str, JsonValue]:
        return self.spec.expect


class RollbackStep(Strict):
    """How to undo a stage: the action that restores the previous state and its read-back."""

    action: Action = Field(
        description="The change that undoes the stage, sent with the rollback role's own credential.",
        examples=[
            {"http": {"target": "payments-router", "method": "PUT", "path": "/weights", "json": {"tokenizer": 0}}}
        ],
    )
    confirm: Confirm = Field(
        description="The read-back that proves the undo took effect; a failed one ends in needs_human.",
        examples=[{"http": {"target": "payments-router", "path": "/weights", "expect": {"tokenizer": 0}}}],
    )


# ---------------------------------------------------------------- plan: checks and stages


class Gate(Strict):
    """A precondition: the signal must satisfy ``pass`` with fresh evidence."""

    signal: Name = Field(
        description="The signal to read, by its name under signals. Rule 6: it must be defined.",
        examples=["legacy_healthy"],
    )
    pass_: Threshold = Field(
        alias="pass",
        description="The condition the fresh reading must meet; anything else (fail, no data, stale, error) holds.",
        examples=["== true"],
    )


class Check(Strict):
    """A verification check: ``pass`` band, optional tolerated ``hold`` band, sample floor."""

    signal: Name = Field(
        description="The signal to judge, by its name under signals. Rule 6: it must be defined.",
        examples=["error_rate"],
    )
    pass_: Threshold = Field(
        alias="pass", description="The condition every sample of the bake must meet to pass.", examples=["< 0.01"]
    )
    hold: Threshold | None = Field(
        None,
        description="A tolerated band: a reading that misses pass but meets this opens a hold for a human instead "
        "of failing: degraded-but-tolerable evidence is for a person to judge.",
        examples=["< 0.02"],
    )
    min_samples: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Fewer samples behind the reading than this is no_data: too little data never passes "
        "(missing data never counts as a pass). Needs the signal's samples or samples_field.",
        examples=[20],
    )
    consecutive_failure_limit: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="How many consecutive failing samples of this check are tolerated before a failure "
        "counts (Argo Rollouts' consecutive-limit sense): 0 reacts to the first failing sample. A "
        "tolerated failure never counts toward the bake.",
        examples=[0, 2],
    )


class OutcomeMap(Strict):
    """What each non-pass outcome does. Nothing maps to "continue": no outcome but pass advances."""

    hold: Reaction = Field("hold", description="Reaction to a reading in the tolerated hold band.", examples=["hold"])
    fail: Reaction = Field(
        "rollback",
        description="Reaction to a failing reading. Rule 5: from an irreversible stage on, only hold.",
        examples=["rollback"],
    )
    no_data: Reaction = Field(
        "hold", description="Reaction to a signal that answered no data (missing data never passes).", examples=["hold"]
    )
    stale: Reaction = Field(
        "hold", description="Reaction to evidence older than the signal's max_age.", examples=["hold"]
    )
    error: Reaction = Field("hold", description="Reaction to a signal that could not be read.", examples=["hold"])


class Verify(Strict):
    """The checkpoint after a stage: every check must pass at every interval for the whole bake."""

    bake: Duration = Field(
        description="How long the stage must keep passing: bake/every consecutive passing samples. "
        "Rule 7: at least one interval.",
        examples=["5m"],
    )
    every: Duration = Field(description="How often the checks are sampled during the bake.", examples=["30s"])
    initial_delay: Duration | None = Field(
        default=None,
        description="Wait this long after the read-back confirms the stage before the first sample "
        "(Argo Rollouts' initialDelay), so the first sample reads post-change data.",
        examples=["1m"],
    )
    checks: Annotated[list[Check], Field(min_length=1, max_length=50)] = Field(
        description="The checks judged at every interval; the most severe outcome wins.",
        examples=[[{"signal": "error_rate", "pass": "< 0.01", "hold": "< 0.02", "min_samples": 20}]],
    )
    on: OutcomeMap = Field(
        OutcomeMap(),
        description="What each non-pass outcome does: hold, rollback or narrow (step back one tier).",
        examples=[{"hold": "hold", "fail": "rollback", "no_data": "hold", "stale": "hold", "error": "hold"}],
    )


class Stage(Strict):
    """One bounded transition with a blast radius: act, read back, verify, then hold or go on."""

    id: Name = Field(description="The stage's name, unique in the plan (rule 6).", examples=["canary-5"])
    description: str | None = Field(
        None, description="What the stage does, shown to people.", examples=["5% of authorizations through v2"]
    )
    blast_radius: Annotated[float, Field(ge=0)] = Field(
        description="The impact once this stage is live, in the package's unit (e.g. % of traffic). "
        "Rule 2: at most the package's max_blast_radius.",
        examples=[5],
    )
    hold_before: YesNo = Field(
        False,
        description="Stop before entering this stage until a named release authority releases it. Rule 4: "
        "required when the stage widens the blast radius, promotes or retires the fallback.",
        examples=[True],
    )
    promotes: YesNo = Field(
        False, description="The stage makes the new side authoritative (rule 4: needs hold_before).", examples=[True]
    )
    retires_fallback: YesNo = Field(
        False,
        description="The stage removes the way back (rule 5: it must also be irreversible and protected).",
        examples=[True],
    )
    irreversible: YesNo = Field(
        False,
        description="No automated rollback exists from here: it needs two distinct releasers, names no rollback, "
        "and no later outcome may roll back (rule 5).",
        examples=[True],
    )
    preflight: Annotated[list[Gate], Field(max_length=50)] = Field(
        [],
        description="Conditions re-read immediately before entering the stage, never from memory; any miss holds.",
        examples=[[{"signal": "vault_healthy", "pass": "== true"}]],
    )
    action: Action = Field(
        description="The change that enters the stage, sent with the executor role's credential.",
        examples=[
            {"http": {"target": "payments-router", "method": "PUT", "path": "/weights", "json": {"tokenizer": 5}}}
        ],
    )
    confirm: Confirm = Field(
        description="The read-back proving the action took effect before verification starts.",
        examples=[{"http": {"target": "payments-router", "path": "/weights", "expect": {"tokenizer": 5}}}],
    )
    verify: Verify = Field(
        description="The checkpoint that must pass before the next stage.",
        examples=[{"bake": "5m", "every": "30s", "checks": [{"signal": "error_rate", "pass": "< 0.01"}]}],
    )
    rollback: RollbackStep | None = Field(
        None,
        description="How to undo this stage. Rule 5: every reversible stage names one; an irreversible one cannot.",
        examples=[
            {
                "action": {
                    "http": {"target": "payments-router", "method": "PUT", "path": "/weights", "json": {"tokenizer": 0}}
                },
                "confirm": {"http": {"target": "payments-router", "path": "/weights", "expect": {"tokenizer": 0}}},
            }
        ],
    )


class HoldPolicy(Strict):
    """How long a hold waits for a human. Expiry escalates to the rollback authority; it never releases."""

    expiry: Duration = Field(
        "2h",
        description="How long a hold stays open before it escalates to the rollback authority; expiry never releases.",
        examples=["2h"],
    )
    remind_before: Duration = Field(
        "15m",
        description="How long before expiry the releasers are reminded. Rule 7: shorter than expiry.",
        examples=["15m"],
    )


class Plan(Strict):
    """The versioned runbook a change package pins by digest: signals, stages, checks and rollbacks."""

    stagehold: Literal[1] = Field(description="The contract version this file is written for.", examples=[1])
    kind: Literal["execution-plan"] = Field(
        description="Says this file is an execution plan.", examples=["execution-plan"]
    )
    name: Name = Field(description="The plan's name.", examples=["payments-tokenization-cutover"])
    version: Annotated[int, Field(ge=1)] = Field(
        description="The plan's version, raised with every edit (an edit also changes the digest the package pins).",
        examples=[7],
    )
    description: str | None = Field(
        None, description="What the change does, for people.", examples=["Shift authorization traffic to tokenizer v2."]
    )
    sensitive_fields: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        [],
        description="Field names whose values are masked before anything is written, posted, logged or exported, "
        "on top of secrets and card numbers, which are always masked.",
        examples=[["pan", "account_number"]],
    )
    signals: Annotated[dict[Name, Signal], Field(min_length=1, max_length=200)] = Field(
        description="The live readings the plan judges, by name.",
        examples=[
            {
                "legacy_healthy": {
                    "http": {"target": "payments-router", "path": "/backends/legacy/health", "field": "ok"},
                    "max_age": "30s",
                }
            }
        ],
    )
    rollback_readiness: Annotated[list[Gate], Field(min_length=1, max_length=50)] = Field(
        description="Proof the way back works now, re-read before every consequential step; losing it holds even "
        "when forward metrics pass.",
        examples=[[{"signal": "legacy_healthy", "pass": "== true"}]],
    )
    stages: Annotated[list[Stage], Field(min_length=1, max_length=100)] = Field(
        description="The stages in order. The first is entered by the initiator's start; later ones as the rules allow.",
        examples=[
            [
                {
                    "id": "canary-5",
                    "blast_radius": 5,
                    "action": {"http": {"target": "router", "path": "/weights", "json": {"v2": 5}}},
                    "confirm": {"http": {"target": "router", "path": "/weights", "expect": {"v2": 5}}},
                    "verify": {"bake": "5m", "every": "30s", "checks": [{"signal": "errors", "pass": "< 0.01"}]},
                    "rollback": {
                        "action": {"http": {"target": "router", "path": "/weights", "json": {"v2": 0}}},
                        "confirm": {"http": {"target": "router", "path": "/weights", "expect": {"v2": 0}}},
                    },
                }
            ]
        ],
    )
    holds: HoldPolicy = Field(
        HoldPolicy(),
        description="How long holds wait for a human.",
        examples=[{"expiry": "2h", "remind_before": "15m"}],
    )
    rollback_to: Name | None = Field(
        None,
        description="A full rollback undoes stages newest-first down to (not including) this stage; "
        "without it, down to before the first. Rule 6: it must name a stage.",
        examples=["canary-5"],
    )


# ---------------------------------------------------------------- change package


class Window(Strict):
    """When the change may run. Outside it nothing starts, and a closed window stops expansion."""

    opens: AwareTime = Field(
        description="When a live run may start, with a time zone.", examples=["2026-11-28T22:00:00Z"]
    )
    closes: AwareTime = Field(
        description="After this nothing expands further; rule 8: after opens. `validate` warns once it has passed.",
        examples=["2026-11-29T02:00:00Z"],
    )


class Scope(Strict):
    """What the change may touch and how wide it may reach."""

    targets: Annotated[list[Name], Field(min_length=1)] = Field(
        description="The targets actions, read-backs and rollbacks may touch (rule 3); each defined under targets.",
        examples=[["payments-router"]],
    )
    protected: list[Name] = Field(
        [],
        description="Protected boundaries: targets nothing in the plan may touch (rule 3), though signals may read them.",
        examples=[["settlement-batch"]],
    )
    max_blast_radius: Annotated[float, Field(ge=0)] = Field(
        description="The widest blast radius any stage may reach (rule 2).", examples=[100]
    )


class Approval(Strict):
    """A record of who approved the change, in what role, and when."""

    user: SlackId = Field(description="The approver's Slack user id.", examples=["U01DANA"])
    role: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="The capacity in which they approved.", examples=["change-authority"]
    )
    at: AwareTime = Field(description="When they approved, with a time zone.", examples=["2026-11-27T16:02:00Z"])


class RoleQuorum(Strict):
    """How many distinct people holding a key of one role must sign."""

    role: Name = Field(description="An approver role, as the keyring names it.", examples=["change-advisory-board"])
    count: Annotated[int, Field(ge=1, le=20)] = Field(
        1, description="How many distinct signers of this role.", examples=[2]
    )


class ApprovalPolicy(Strict):
    """The signed approvals a live run needs."""

    require: Annotated[list[RoleQuorum], Field(min_length=1, max_length=10)] = Field(
        description="One entry per role: COUNT distinct signers holding a key of ROLE.",
        examples=[[{"role": "change-advisory-board", "count": 2}]],
    )

    @model_validator(mode="after")
    def _roles_once(self) -> ApprovalPolicy:
        roles = [q.role for q in self.require]
        if len(set(roles)) != len(roles):
            raise ValueError("name each role once (raise its count instead)")
        return self


class Authority(Strict):
    """People allowed to do one thing: Slack user ids and Slack user-group ids."""

    users: list[SlackId] = Field([], description="Slack user ids.", examples=[["U01DANA", "U02LEE"]])
    groups: list[SlackId] = Field(
        [], description="Slack user-group ids; members are resolved when they click.", examples=[["S0CAB"]]
    )

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups


class Authorities(Strict):
    """Who may start, release, roll back and hold; every action records who took it."""

    initiate: Authority = Field(
        description="Who may start the change (rule 8: not empty).", examples=[{"users": ["U05OPS"]}]
    )
    release: Authority = Field(
        description="Who may release protected holds (rule 8: not empty; rule 5: two distinct people when a stage "
        "is irreversible).",
        examples=[{"users": ["U01DANA", "U02LEE"], "groups": ["S0CAB"]}],
    )
    rollback: Authority = Field(
        description="Who may order a rollback, a list separate from release (rule 8: not empty).",
        examples=[{"users": ["U03RESP"], "groups": ["S0ONCALL"]}],
    )
    operators: Authority = Field(
        Authority(),
        description="Others who may place a hold at any time (everyone above may too).",
        examples=[{"users": ["U06SRE"]}],
    )
    two_person: YesNo = Field(
        True,
        description="Two-person control: the initiator cannot release. Only true or false; YAML's yes/no/on/off "
        "are refused, never read as a boolean.",
        examples=[True],
    )


def _check_url(url: str, info: ValidationInfo) -> str:
    # A package is recorded in the ledger, masked: a credential in it would be written nowhere
    # usable and lost when the targets are rebuilt from the ledger on resume.
    if _recorded(info):
        return url
    if "@" in urlsplit(url).netloc or mask_text(url) != url:
        raise ValueError(
            "the url carries a credential; give credentials in the STAGEHOLD_TARGET_AUTH setting, never in the package"
        )
    return url


def _check_target_headers(headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    # A package is recorded in the ledger: a secret header in it would be masked there and lost on
    # resume, and it would not be a secret. Secret headers come from settings.
    if _recorded(info):
        return headers
    for name, value in headers.items():
        if name.lower() in ("cookie", "proxy-authorization") or mask({name: value}) != {name: value}:
            raise ValueError(
                f"header {name!r} looks secret; give secret headers in the STAGEHOLD_TARGET_AUTH setting, "
                "never in the package"
            )
    return headers


Url = Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000), AfterValidator(_check_url)]


class Target(Strict):
    """A system the change reads or acts on. Role credentials come from the environment, never from here."""

    kind: Literal["http", "prometheus", "command", "haproxy"] = Field(
        "http", description="How stagehold speaks to the target.", examples=["http"]
    )
    url: Url | None = Field(
        None,
        description="The base url; required for http and prometheus targets, passed to command targets as "
        "STAGEHOLD_TARGET_URL. Never with a credential in it (refused): those come from STAGEHOLD_TARGET_AUTH.",
        examples=["https://router.payments.internal"],
    )
    description: str | None = Field(
        None, description="What the target is, for people.", examples=["payments traffic router"]
    )
    socket: Annotated[str, Field(pattern=r"^(/[^\s]+|tcp://[^\s/]+:\d{1,5})$", max_length=500)] | None = Field(
        default=None,
        description="For `kind: haproxy`: the Runtime API stats socket, a UNIX socket path or `tcp://HOST:PORT` "
        "(declared with `level admin` in haproxy.cfg). Example: `socket: /run/haproxy/admin.sock`.",
        examples=["/run/haproxy/admin.sock"],
    )
    headers: Annotated[Headers, AfterValidator(_check_target_headers)] = Field(
        default_factory=dict,
        description="Headers sent with every request to this target that are not secret, such as a "
        "Mimir/Cortex/Thanos tenant; secret headers come from the STAGEHOLD_TARGET_AUTH setting.",
        examples=[{"X-Scope-OrgID": "payments"}],
    )

    @model_validator(mode="after")
    def _url_when_needed(self) -> Target:
        if self.kind in ("http", "prometheus") and self.url is None:
            raise ValueError(f"a {self.kind} target needs a url, e.g. url: https://router.internal")
        if self.kind == "haproxy" and self.socket is None:
            raise ValueError("a haproxy target needs a socket (a UNIX socket path or tcp://HOST:PORT)")

        return self


class ChangePackage(Strict):
    """The approved, read-only authority to execute: scope, window, approvers, authorities, plan digest."""

    stagehold: Literal[1] = Field(description="The contract version this file is written for.", examples=[1])
    kind: Literal["change-package"] = Field(
        description="Says this file is a change package.", examples=["change-package"]
    )
    id: Name = Field(description="The change's id; one live execution per change at a time.", examples=["CHG-2041"])
    title: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="A one-line title for people.", examples=["Move payment authorization to tokenization service v2"]
    )
    plan: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$")] = Field(
        description="The plan file, relative to this package file.", examples=["plan.yaml"]
    )
    plan_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="The SHA-256 of the plan file's bytes as approved (`stagehold digest PLAN`). Rule 1: any "
        "changed byte of the plan, a comment included, refuses the change.",
        examples=["bd2d1f13464eddfd5c0ed5bf3da647e57fe5a6894d3748f6e82bf5bd87e9f75d"],
    )
    window: Window = Field(
        description="When the change may run.",
        examples=[{"opens": "2026-11-28T22:00:00Z", "closes": "2026-11-29T02:00:00Z"}],
    )
    channel: Annotated[str, Field(pattern=r"^[CG][A-Z0-9]{2,30}$")] = Field(
        description="The Slack channel id where the execution's thread and hold cards are posted.",
        examples=["C0CHANGES"],
    )
    scope: Scope = Field(
        description="The targets the plan may change, its protected boundaries and its maximum blast radius.",
        examples=[{"targets": ["payments-router"], "protected": ["settlement-batch"], "max_blast_radius": 100}],
    )
    approved_by: Annotated[list[Approval], Field(min_length=1)] = Field(
        description="Who approved the change.",
        examples=[[{"user": "U01DANA", "role": "change-authority", "at": "2026-11-27T16:02:00Z"}]],
    )
    approvals: ApprovalPolicy | None = Field(
        None,
        description="How many signed approvals (`stagehold approve`) a live run needs and from which roles. "
        "Without it, every person in `approved_by` must sign in the role listed there.",
        examples=[{"require": [{"role": "change-advisory-board", "count": 2}]}],
    )
    authorities: Authorities = Field(
        description="Who may start, release, roll back and hold.",
        examples=[
            {
                "initiate": {"users": ["U05OPS"]},
                "release": {"users": ["U01DANA", "U02LEE"]},
                "rollback": {"users": ["U03RESP"]},
            }
        ],
    )
    targets: Annotated[dict[Name, Target], Field(min_length=1)] = Field(
        description="The systems the plan may name, by name.",
        examples=[{"payments-router": {"kind": "http", "url": "https://router.payments.internal"}}],
    )


MODELS: dict[str, type[ChangePackage] | type[Plan]] = {"package": ChangePackage, "plan": Plan}
