"""Cross-field rules of a change package and its plan. Each returns every problem it finds.

Rules (the numbers match the README's list):

1. The package pins the approved plan by the SHA-256 of the plan file's bytes.
2. Every stage's blast radius is within the package's maximum.
3. No action, read-back or rollback touches a target outside the package's scope or inside its
   protected boundaries; every referenced target is defined.
4. A stage that expands the blast radius beyond what earlier stages reached, promotes
   authoritative state, or retires the fallback path must be protected (``hold_before``). The
   first stage is exempt from the expansion rule only: it is entered by the initiator's start.
5. A stage that retires the fallback is irreversible; an irreversible stage needs two distinct
   possible releasers. Every reversible stage names its rollback; an irreversible one cannot, and
   from it on no verification outcome may react with rollback or narrowing.
6. Every referenced signal exists; ``rollback_to`` names a stage; stage ids are unique.
7. A bake is at least one interval long.
8. The window opens before it closes; initiate, release and rollback authorities are non-empty.

Warnings (``check_window``, given ``now``) do not refuse a change: a window that has closed.
A reference to something undefined suggests the closest defined name ("did you mean").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from execution.conditions import parse_duration
from execution.contract.messages import did_you_mean
from execution.contract.models import ChangePackage, Plan
from execution.contract.source import PathKey
from execution.promql import analyse

Finding = tuple[str, PathKey, str]  # (which document: "package" | "plan", path, message)


def check_digest(pkg: ChangePackage, actual: str) -> Iterator[Finding]:
    if pkg.plan_sha256 != actual:
        yield (
            "package",
            ("plan_sha256",),
            f"plan changed after approval: approved sha256 {pkg.plan_sha256}, plan file has {actual}",
        )


def check_package(pkg: ChangePackage) -> Iterator[Finding]:
    if pkg.window.opens >= pkg.window.closes:
        yield (
            "package",
            ("window", "closes"),
            f"the window must close after it opens ({pkg.window.opens.strftime('%Y-%m-%dT%H:%M:%SZ')}), "
            'e.g. `window: {opens: "2026-11-28T22:00:00Z", closes: "2026-11-29T02:00:00Z"}`',
        )
    for name in ("initiate", "release", "rollback"):
        if getattr(pkg.authorities, name).empty:
            yield (
                "package",
                ("authorities", name),
                f"{name} authority names no users or groups, e.g. `{name}: {{users: [U01DANA], groups: [S0CAB]}}`",
            )
    for i, t in enumerate(pkg.scope.targets):
        if t not in pkg.targets:
            yield (
                "package",
                ("scope", "targets", i),
                f"scope target '{t}' is not defined under targets{did_you_mean(t, pkg.targets)}",
            )
        if t in pkg.scope.protected:
            yield (
                "package",
                ("scope", "targets", i),
                f"target '{t}' is both in scope and protected; keep it in only one of the two lists",
            )


def check_window(pkg: ChangePackage, now: datetime) -> Iterator[Finding]:
    """Warn when the window has closed: a live run would be refused; a rehearsal re-bases the window.

    Worked example: closes 2026-11-29T02:00:00Z, now 2026-11-29T21:56:00Z -> "the window closed at
    2026-11-29T02:00:00Z (19h56m ago) ...".
    """
    closes = pkg.window.closes
    if now >= closes:
        minutes = int((now - closes).total_seconds() // 60)
        days, rest = divmod(minutes, 24 * 60)
        ago = (f"{days}d" if days else "") + f"{rest // 60}h{rest % 60:02d}m"
        yield (
            "package",
            ("window", "closes"),
            f"the window closed at {closes.strftime('%Y-%m-%dT%H:%M:%SZ')} ({ago} ago): a live run of this "
            "package will not start (rehearsals still run; they re-base the window); for a live run, have a "
            "package with a new window approved",
        )


def check_plan(pkg: ChangePackage, plan: Plan) -> Iterator[Finding]:
    yield from _references(pkg, plan)
    yield from _scope(pkg, plan)
    yield from _protection(pkg, plan)
    yield from _timing(plan)


def _references(pkg: ChangePackage, plan: Plan) -> Iterator[Finding]:
    for name, signal in plan.signals.items():
        target = signal.source.target
        if target not in pkg.targets:
            yield (
                "plan",
                ("signals", name, _source_key(signal), "target"),
                f"target '{target}' is not defined in the package{did_you_mean(target, pkg.targets)}",
            )
        elif signal.prometheus and pkg.targets[target].kind != "prometheus":
            yield (
                "plan",
                ("signals", name, "prometheus", "target"),
                f"target '{target}' is not a prometheus target",
            )
    for i, gate in enumerate(plan.rollback_readiness):
        if gate.signal not in plan.signals:
            yield (
                "plan",
                ("rollback_readiness", i, "signal"),
                f"signal '{gate.signal}' is not defined under signals{did_you_mean(gate.signal, plan.signals)}",
            )
    seen: set[str] = set()
    for i, stage in enumerate(plan.stages):
        if stage.id in seen:
            yield ("plan", ("stages", i, "id"), f"stage id '{stage.id}' is used twice; give each stage its own id")
        seen.add(stage.id)
        for j, gate in enumerate(stage.preflight):
            if gate.signal not in plan.signals:
                yield (
                    "plan",
                    ("stages", i, "preflight", j, "signal"),
                    f"signal '{gate.signal}' is not defined under signals{did_you_mean(gate.signal, plan.signals)}",
                )
        for j, check in enumerate(stage.verify.checks):
            if check.signal not in plan.signals:
                yield (
                    "plan",
                    ("stages", i, "verify", "checks", j, "signal"),
                    f"signal '{check.signal}' is not defined under signals{did_you_mean(check.signal, plan.signals)}",
                )
    if plan.rollback_to is not None and plan.rollback_to not in seen:
        yield (
            "plan",
            ("rollback_to",),
            f"rollback_to names stage '{plan.rollback_to}', which the plan does not have"
            + did_you_mean(plan.rollback_to, seen),
        )


def _source_key(signal: object) -> str:
    for key in ("prometheus", "http", "command"):
        if getattr(signal, key, None) is not None:
            return key
    return "source"  # pragma: no cover


def _scope(pkg: ChangePackage, plan: Plan) -> Iterator[Finding]:
    limit = pkg.scope.max_blast_radius
    for i, stage in enumerate(plan.stages):
        if stage.blast_radius > limit:
            yield (
                "plan",
                ("stages", i, "blast_radius"),
                f"blast radius {stage.blast_radius:g} exceeds the package maximum {limit:g}",
            )
        touched: list[tuple[PathKey, str, str]] = [
            (("stages", i, "action"), stage.action.target, "action"),
            (("stages", i, "confirm"), stage.confirm.target, "read-back"),
        ]
        if stage.rollback is not None:
            touched.append((("stages", i, "rollback", "action"), stage.rollback.action.target, "rollback"))
            touched.append((("stages", i, "rollback", "confirm"), stage.rollback.confirm.target, "rollback read-back"))
        for path, target, what in touched:
            kind = _kind(stage, path)
            full = (*path, kind, "target")
            if target in pkg.targets and kind == "haproxy" and pkg.targets[target].kind != "haproxy":
                yield ("plan", full, f"target '{target}' is not a haproxy target")
            if target in pkg.scope.protected:
                yield ("plan", full, f"{what} touches '{target}', which the package protects")
            elif target not in pkg.scope.targets:
                hint = did_you_mean(target, pkg.scope.targets)
                yield ("plan", full, f"{what} touches '{target}', which is outside the package scope{hint}")
            elif target not in pkg.targets:
                yield ("plan", full, f"target '{target}' is not defined in the package")


def _kind(stage: object, path: PathKey) -> str:
    """Which kind (``http``, ``command``, ``haproxy``) the action or read-back at ``path`` uses."""
    node: object = stage
    for part in path[2:]:
        node = getattr(node, str(part))
    return str(getattr(node, "kind", "http"))


def _protection(pkg: ChangePackage, plan: Plan) -> Iterator[Finding]:
    reached = 0.0
    releasers = len(set(pkg.authorities.release.users)) + (2 if pkg.authorities.release.groups else 0)
    for i, stage in enumerate(plan.stages):
        reasons: list[str] = []
        if i > 0 and stage.blast_radius > reached:
            reasons.append(f"expands the blast radius from {reached:g} to {stage.blast_radius:g}")
        if stage.promotes:
            reasons.append("promotes authoritative state")
        if stage.retires_fallback:
            reasons.append("retires the fallback path")
        if reasons and not stage.hold_before:
            yield (
                "plan",
                ("stages", i, "hold_before"),
                f"stage '{stage.id}' {' and '.join(reasons)} but is not protected; set hold_before: true",
            )
        if stage.retires_fallback and not stage.irreversible:
            yield (
                "plan",
                ("stages", i, "irreversible"),
                f"stage '{stage.id}' retires the fallback, so it is irreversible; set irreversible: true",
            )
        if stage.irreversible:
            if stage.rollback is not None:
                yield (
                    "plan",
                    ("stages", i, "rollback"),
                    f"stage '{stage.id}' is irreversible and cannot name a rollback",
                )
            if releasers < 2:
                yield (
                    "package",
                    ("authorities", "release"),
                    f"irreversible stage '{stage.id}' needs two distinct releasers; the release authority names fewer",
                )
        elif stage.rollback is None:
            yield (
                "plan",
                ("stages", i),
                f"reversible stage '{stage.id}' names no rollback; add `rollback: {{action: ..., confirm: ...}}` "
                "(the action that undoes it and its read-back), or mark it `irreversible: true`",
            )
        reached = max(reached, stage.blast_radius)
    yield from _no_way_back(plan)


def _no_way_back(plan: Plan) -> Iterator[Finding]:
    """From an irreversible stage on there is no automated way back: nothing may react by rolling back."""
    point_of_no_return: str | None = None
    for i, stage in enumerate(plan.stages):
        if stage.irreversible and point_of_no_return is None:
            point_of_no_return = stage.id
        if point_of_no_return is None:
            continue
        for outcome, reaction in stage.verify.on.model_dump().items():
            if reaction in ("rollback", "narrow"):
                yield (
                    "plan",
                    ("stages", i, "verify", "on", outcome),
                    f"'{reaction}' is impossible from stage '{stage.id}': irreversible stage "
                    f"'{point_of_no_return}' leaves no automated way back; use hold",
                )


def _timing(plan: Plan) -> Iterator[Finding]:
    for i, stage in enumerate(plan.stages):
        if parse_duration(stage.verify.bake) < parse_duration(stage.verify.every):
            yield (
                "plan",
                ("stages", i, "verify", "bake"),
                f"the bake must be at least one interval ('every') long: bake {stage.verify.bake}, "
                f"every {stage.verify.every}",
            )
    if parse_duration(plan.holds.remind_before) >= parse_duration(plan.holds.expiry):
        yield (
            "plan",
            ("holds", "remind_before"),
            f"the reminder must come before the hold expires: remind_before {plan.holds.remind_before} is not "
            f"shorter than expiry {plan.holds.expiry}, e.g. `holds: {{expiry: 2h, remind_before: 15m}}`",
        )


def plan_warnings(plan: Plan) -> Iterator[Finding]:
    """Advice that does not make a plan invalid: a check whose query window reaches back further
    than the stage waits before its first sample reads pre-change data for a while (DESIGN rule
    11); those samples may hold or fail but never count toward the bake."""
    for i, stage in enumerate(plan.stages):
        delay = parse_duration(stage.verify.initial_delay) if stage.verify.initial_delay else 0.0
        for j, check in enumerate(stage.verify.checks):
            signal = plan.signals.get(check.signal)
            spec = signal.prometheus if signal is not None else None
            if spec is None:
                continue
            window = analyse(spec.query).window_s + (parse_duration(spec.range.window) if spec.range else 0.0)
            if window > delay:
                yield (
                    "plan",
                    ("stages", i, "verify", "checks", j),
                    f"signal '{check.signal}' reads a {_span(window)} window but stage '{stage.id}' waits "
                    f"{_span(delay)} (initial_delay) before its first sample: for the first "
                    f"{_span(window - delay)} after the change, samples also read pre-change data and do not "
                    "count toward the bake; "
                    f"set initial_delay: {_span(window)} to wait instead",
                )


def _span(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
