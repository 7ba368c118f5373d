"""Change packages and plans: the bundled examples are valid; every rule refuses a broken variant.

Each broken variant is derived from a bundled example by a small text edit, and the package's
``plan_sha256`` is recomputed unless the test is about the digest, so exactly one rule is broken.
Every case checks the file, the path and the line named in the message.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.cli import main
from execution.contract import InvalidChange, LoadedChange, Problem, load_change

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "package.yaml").is_file())
PAYMENTS, TREASURY, SORTER = "payments-cutover", "treasury-promotion", "sorter-routing"


@dataclass(frozen=True)
class Edit:
    file: str  # "plan" or "package"
    old: str
    new: str
    nth: int = 0  # which occurrence of ``old`` to replace


@dataclass(frozen=True)
class Expect:
    file: str  # "plan" or "package"
    path: str
    message: str  # a substring of the message
    line_text: str  # the expected line is the one holding this text in the edited file...
    line_nth: int = 0  # ...at this occurrence


@dataclass(frozen=True)
class Case:
    example: str
    edits: tuple[Edit, ...]
    expect: Expect
    not_in_message: tuple[str, ...] = field(default=())


def replace_nth(text: str, old: str, new: str, nth: int) -> str:
    start = -1
    for _ in range(nth + 1):
        start = text.find(old, start + 1)
        assert start >= 0, f"edit target {old!r} (occurrence {nth}) not in the example"
    return text[:start] + new + text[start + len(old) :]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    start = -1
    for _ in range(nth + 1):
        start = text.find(needle, start + 1)
        assert start >= 0, f"{needle!r} (occurrence {nth}) not in the edited file"
    return text.count("\n", 0, start) + 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_digest(package_text: str, digest: str) -> str:
    out, n = re.subn(r'plan_sha256: "[0-9a-f]*"', f'plan_sha256: "{digest}"', package_text)
    assert n == 1
    return out


@dataclass
class Variant:
    dir: Path
    package: Path
    plan: Path

    def text(self, which: str) -> str:
        return (self.package if which == "package" else self.plan).read_text(encoding="utf-8")

    def shown(self, which: str) -> str:
        # load_change names the package as given and the plan relative to the package's folder.
        return str(self.package if which == "package" else self.dir / "plan.yaml")


def make_variant(tmp_path: Path, example: str, edits: tuple[Edit, ...] = (), *, fix_digest: bool = True) -> Variant:
    target = tmp_path / example
    shutil.copytree(EXAMPLES / example, target)
    texts = {w: (target / f"{w}.yaml").read_text(encoding="utf-8") for w in ("package", "plan")}
    for e in edits:
        texts[e.file] = replace_nth(texts[e.file], e.old, e.new, e.nth)
    if fix_digest:
        texts["package"] = set_digest(texts["package"], sha256(texts["plan"].encode("utf-8")))
    for which, text in texts.items():
        (target / f"{which}.yaml").write_text(text, encoding="utf-8")
    return Variant(target, target / "package.yaml", target / "plan.yaml")


def problems_of(v: Variant) -> list[Problem]:
    with pytest.raises(InvalidChange) as caught:
        load_change(v.package)
    assert caught.value.problems, "InvalidChange must carry at least one problem"
    return caught.value.problems


def find(problems: list[Problem], path: str, message: str) -> Problem:
    matches = [p for p in problems if p.path == path and message in p.message]
    assert matches, f"no problem at {path!r} containing {message!r}; got:\n" + "\n".join(map(str, problems))
    return matches[0]


def check(v: Variant, expect: Expect, not_in_message: tuple[str, ...] = ()) -> Problem:
    problem = find(problems_of(v), expect.path, expect.message)
    line = line_of(v.text(expect.file), expect.line_text, expect.line_nth)
    assert problem.file == v.shown(expect.file)
    assert problem.line == line, f"{problem} (expected line {line})"
    assert str(problem).startswith(f"{v.shown(expect.file)}:{line}: {expect.path}: ")
    for text in not_in_message:
        assert text not in problem.message
    return problem


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_bundled_example_is_valid(example: str) -> None:
    loaded = load_change(EXAMPLES / example / "package.yaml")
    assert isinstance(loaded, LoadedChange)
    assert loaded.plan_sha256 == sha256((EXAMPLES / example / "plan.yaml").read_bytes())
    assert loaded.package.plan_sha256 == loaded.plan_sha256


def test_all_three_examples_are_bundled() -> None:
    assert set(EXAMPLE_NAMES) >= {PAYMENTS, TREASURY, SORTER}


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_validate_command_accepts_examples(
    example: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = load_change(EXAMPLES / example / "package.yaml").package.window.opens
    monkeypatch.setattr("bot.commands.validate.utc_now", lambda: opens)  # inside the window: no warning
    assert main(["validate", str(EXAMPLES / example / "package.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("valid: ")
    assert "(matches approval)" in out
    # Advice (a rate window longer than the initial delay) may be printed; never a problem.
    assert all(line.startswith("warning: ") for line in err.splitlines())


# ---------------------------------------------------------------- rule 1: the approved digest


def test_one_byte_of_the_plan_changed_after_approval(tmp_path: Path) -> None:
    approved = sha256((EXAMPLES / PAYMENTS / "plan.yaml").read_bytes())
    v = make_variant(tmp_path, PAYMENTS, (Edit("plan", "version: 7", "version: 8"),), fix_digest=False)
    actual = sha256(v.plan.read_bytes())
    assert approved != actual
    problem = check(v, Expect("package", "plan_sha256", "plan changed after approval", "plan_sha256:"))
    assert approved in problem.message and actual in problem.message


@pytest.mark.parametrize(
    "edit",
    [
        Edit("plan", "stagehold: 1", "stagehold: 1 "),  # invisible trailing space
        Edit("plan", "# Payments", "#Payments"),  # a comment is part of what was approved
        Edit("plan", "tokenizer: 5, legacy: 95}}}", "tokenizer: 50, legacy: 50}}}"),
    ],
)
def test_any_byte_of_the_plan_counts(tmp_path: Path, edit: Edit) -> None:
    v = make_variant(tmp_path, PAYMENTS, (edit,), fix_digest=False)
    check(v, Expect("package", "plan_sha256", "plan changed after approval", "plan_sha256:"))


def test_plan_digest_must_be_lowercase_hex(tmp_path: Path) -> None:
    v = make_variant(tmp_path, PAYMENTS, fix_digest=False)
    v.package.write_text(set_digest(v.text("package"), "").replace('plan_sha256: ""', 'plan_sha256: "XYZ"'))
    check(v, Expect("package", "plan_sha256", "expected a SHA-256 digest of 64 lowercase hex digits", "plan_sha256:"))


# ---------------------------------------------------------------- rules 2-8 and model constraints

ACTION_5 = "action: {http: {target: payments-router, method: PUT, path: /weights, json: {tokenizer: 5, legacy: 95}}}"
CONFIRM_5 = "confirm: {http: {target: payments-router, path: /weights, expect: {tokenizer: 5, legacy: 95}}}"
RB_ACTION_0 = (
    "action: {http: {target: payments-router, method: PUT, path: /weights, json: {tokenizer: 0, legacy: 100}}}"
)
RB_CONFIRM_0 = "confirm: {http: {target: payments-router, path: /weights, expect: {tokenizer: 0, legacy: 100}}}"
RETIRE_ON = "      on: {fail: hold}\n"
EXTRA_STAGE = """
  - id: post-check
    blast_radius: 100
    action: {http: {target: payments-router, method: PUT, path: /audit, json: {done: true}}}
    confirm: {http: {target: payments-router, path: /audit, expect: {done: true}}}
    verify:
      bake: 5m
      every: 30s
      checks:
        - {signal: error_rate, pass: "< 0.01"}
    rollback:
      action: {http: {target: payments-router, method: PUT, path: /audit, json: {done: false}}}
      confirm: {http: {target: payments-router, path: /audit, expect: {done: false}}}
"""
RETIRE_ROLLBACK = """    rollback:
      action: {http: {target: payments-router, method: PUT, path: /backends/legacy/state, json: {retired: false}}}
      confirm: {http: {target: payments-router, path: /backends/legacy/state, expect: {retired: false}}}
"""


def _touch(position: str, old: str, target: str, what: str, why: str) -> Case:
    new = old.replace("payments-router", target)
    return Case(
        PAYMENTS,
        (Edit("plan", old, new),),
        Expect("plan", f"stages[0].{position}.http.target", f"{what} touches '{target}', which {why}", new),
    )


TOUCHES = {
    f"{what}-{kind}": _touch(position, old, target, what, why)
    for position, old, what in [
        ("action", ACTION_5, "action"),
        ("confirm", CONFIRM_5, "read-back"),
        ("rollback.action", RB_ACTION_0, "rollback"),
        ("rollback.confirm", RB_CONFIRM_0, "rollback read-back"),
    ]
    for kind, target, why in [
        ("protected", "settlement-batch", "the package protects"),
        ("out-of-scope", "metrics", "is outside the package scope"),
        ("undefined", "nowhere", "is outside the package scope"),
    ]
}

CASES: dict[str, Case] = {
    # rule 2: blast radius
    "blast-radius-over-maximum": Case(
        PAYMENTS,
        (Edit("package", "max_blast_radius: 100", "max_blast_radius: 50"),),
        Expect(
            "plan", "stages[2].blast_radius", "blast radius 100 exceeds the package maximum 50", "blast_radius: 100"
        ),
    ),
    "blast-radius-of-first-stage-over-maximum": Case(
        SORTER,
        (Edit("plan", "blast_radius: 1\n", "blast_radius: 9\n"),),
        Expect("plan", "stages[0].blast_radius", "blast radius 9 exceeds the package maximum 8", "blast_radius: 9"),
    ),
    # rule 3: scope, protection, targets
    **TOUCHES,
    "scope-target-in-scope-but-undefined": Case(
        PAYMENTS,
        (
            Edit("package", "targets: [payments-router]", "targets: [payments-router, ghost-router]"),
            Edit("plan", ACTION_5, ACTION_5.replace("payments-router", "ghost-router")),
        ),
        Expect(
            "plan",
            "stages[0].action.http.target",
            "target 'ghost-router' is not defined in the package",
            "ghost-router",
        ),
    ),
    "scope-names-undefined-target": Case(
        PAYMENTS,
        (Edit("package", "targets: [payments-router]", "targets: [payments-router, ghost-router]"),),
        Expect(
            "package", "scope.targets[1]", "scope target 'ghost-router' is not defined under targets", "ghost-router"
        ),
    ),
    "scope-target-also-protected": Case(
        PAYMENTS,
        (Edit("package", "protected: [settlement-batch]", "protected: [settlement-batch, payments-router]"),),
        Expect("package", "scope.targets[0]", "target 'payments-router' is both in scope and protected", "targets: ["),
    ),
    "signal-unknown-target": Case(
        PAYMENTS,
        (
            Edit(
                "plan",
                "http: {target: payments-router, path: /dependencies",
                "http: {target: nowhere, path: /dependencies",
            ),
        ),
        Expect(
            "plan", "signals.vault_healthy.http.target", "target 'nowhere' is not defined in the package", "nowhere"
        ),
    ),
    "prometheus-signal-on-http-target": Case(
        PAYMENTS,
        (Edit("plan", "target: metrics", "target: payments-router"),),
        Expect(
            "plan",
            "signals.error_rate.prometheus.target",
            "target 'payments-router' is not a prometheus target",
            "target: payments-router",
        ),
    ),
    # rule 4: protection
    "unprotected-expansion": Case(
        PAYMENTS,
        (Edit("plan", "    hold_before: true\n", ""),),
        Expect(
            "plan",
            "stages[1].hold_before",
            "stage 'canary-25' expands the blast radius from 5 to 25 but is not protected; set hold_before: true",
            "- id: canary-25",
        ),
    ),
    "unprotected-promotion": Case(
        TREASURY,
        (Edit("plan", "blast_radius: 50\n    hold_before: true\n", "blast_radius: 0\n"),),
        Expect(
            "plan",
            "stages[1].hold_before",
            "stage 'primary-flip' promotes authoritative state but is not protected",
            "- id: primary-flip",
        ),
        not_in_message=("expands",),
    ),
    "unprotected-fallback-retirement": Case(
        PAYMENTS,
        (Edit("plan", "    hold_before: true\n    retires_fallback: true\n", "    retires_fallback: true\n"),),
        Expect(
            "plan",
            "stages[3].hold_before",
            "stage 'retire-legacy' retires the fallback path but is not protected",
            "- id: retire-legacy",
        ),
        not_in_message=("expands", "promotes"),
    ),
    # rule 5: irreversibility
    "retire-without-irreversible": Case(
        PAYMENTS,
        (Edit("plan", "    irreversible: true\n", ""),),
        Expect(
            "plan",
            "stages[3].irreversible",
            "stage 'retire-legacy' retires the fallback, so it is irreversible; set irreversible: true",
            "- id: retire-legacy",
        ),
    ),
    "irreversible-with-single-releaser": Case(
        PAYMENTS,
        (Edit("package", "release: {users: [U01DANA, U02LEE], groups: [S0CAB]}", "release: {users: [U01DANA]}"),),
        Expect(
            "package",
            "authorities.release",
            "irreversible stage 'retire-legacy' needs two distinct releasers",
            "release: {users: [U01DANA]}",
        ),
    ),
    "irreversible-with-one-releaser-named-twice": Case(
        TREASURY,
        (Edit("package", "release: {users: [U10CFO, U13TREAS]}", "release: {users: [U10CFO, U10CFO]}"),),
        Expect("package", "authorities.release", "needs two distinct releasers", "release:"),
    ),
    "irreversible-naming-a-rollback": Case(
        PAYMENTS,
        (Edit("plan", RETIRE_ON, RETIRE_ON + RETIRE_ROLLBACK),),
        Expect(
            "plan",
            "stages[3].rollback",
            "stage 'retire-legacy' is irreversible and cannot name a rollback",
            "    rollback:\n",
            3,
        ),
    ),
    "rollback-reaction-on-irreversible-stage": Case(
        PAYMENTS,
        (Edit("plan", "on: {fail: hold}", "on: {fail: rollback}"),),
        Expect(
            "plan",
            "stages[3].verify.on.fail",
            "'rollback' is impossible from stage 'retire-legacy': irreversible stage 'retire-legacy'",
            "on: {fail: rollback}",
        ),
    ),
    "narrow-reaction-on-irreversible-stage": Case(
        TREASURY,
        (Edit("plan", "on: {fail: hold}", "on: {fail: hold, stale: narrow}"),),
        Expect("plan", "stages[3].verify.on.stale", "'narrow' is impossible", "stale: narrow"),
    ),
    "irreversible-stage-relying-on-default-reactions": Case(
        PAYMENTS,
        (Edit("plan", RETIRE_ON, ""),),
        Expect("plan", "stages[3].verify.on.fail", "'rollback' is impossible", "verify:", 3),
    ),
    "rollback-reaction-after-an-irreversible-stage": Case(
        PAYMENTS,
        (Edit("plan", RETIRE_ON, RETIRE_ON + EXTRA_STAGE),),
        Expect(
            "plan",
            "stages[4].verify.on.fail",
            "'rollback' is impossible from stage 'post-check': irreversible stage 'retire-legacy' leaves no automated way back",
            "verify:",
            4,
        ),
    ),
    "reversible-stage-without-rollback": Case(
        PAYMENTS,
        (Edit("plan", f"    rollback:\n      {RB_ACTION_0}\n      {RB_CONFIRM_0}\n", ""),),
        Expect("plan", "stages[0]", "reversible stage 'canary-5' names no rollback", "- id: canary-5"),
    ),
    # rule 6: references
    "unknown-signal-in-check": Case(
        PAYMENTS,
        (Edit("plan", "{signal: error_rate, pass:", "{signal: err_rate, pass:"),),
        Expect(
            "plan", "stages[0].verify.checks[0].signal", "signal 'err_rate' is not defined under signals", "err_rate"
        ),
    ),
    "unknown-signal-in-preflight": Case(
        PAYMENTS,
        (Edit("plan", "{signal: vault_healthy, pass:", "{signal: vault_ok, pass:"),),
        Expect("plan", "stages[0].preflight[0].signal", "signal 'vault_ok' is not defined under signals", "vault_ok"),
    ),
    "unknown-signal-in-rollback-readiness": Case(
        SORTER,
        (Edit("plan", "{signal: previous_profile_ok,", "{signal: previous_ok,"),),
        Expect(
            "plan", "rollback_readiness[0].signal", "signal 'previous_ok' is not defined under signals", "previous_ok"
        ),
    ),
    "rollback-to-unknown-stage": Case(
        PAYMENTS,
        (Edit("plan", "version: 7\n", "version: 7\nrollback_to: nowhere\n"),),
        Expect(
            "plan", "rollback_to", "rollback_to names stage 'nowhere', which the plan does not have", "rollback_to:"
        ),
    ),
    "duplicate-stage-id": Case(
        PAYMENTS,
        (Edit("plan", "- id: canary-25", "- id: canary-5"),),
        Expect("plan", "stages[1].id", "stage id 'canary-5' is used twice", "- id: canary-5", 1),
    ),
    # thresholds and durations (model grammar)
    "bad-pass-threshold": Case(
        PAYMENTS,
        (Edit("plan", 'pass: "< 0.01"', 'pass: "<< 0.01"'),),
        Expect("plan", "stages[0].verify.checks[0].pass", "'<< 0.01' is not a condition", "<< 0.01"),
    ),
    "bad-hold-threshold": Case(
        PAYMENTS,
        (Edit("plan", 'hold: "< 0.02"', 'hold: "between 2 and 1"'),),
        Expect("plan", "stages[0].verify.checks[0].hold", "lower bound 2 is above upper bound 1", "between 2 and 1"),
    ),
    "bad-preflight-threshold": Case(
        PAYMENTS,
        (Edit("plan", '{signal: vault_healthy, pass: "== true"}', '{signal: vault_healthy, pass: "== yes"}'),),
        Expect("plan", "stages[0].preflight[0].pass", "'== yes' is not a condition", "== yes"),
    ),
    "boolean-ordering-threshold": Case(
        PAYMENTS,
        (Edit("plan", '{signal: legacy_healthy, pass: "== true"}', '{signal: legacy_healthy, pass: "> true"}'),),
        Expect("plan", "rollback_readiness[0].pass", "booleans compare only with == or !=", "> true"),
    ),
    "threshold-not-text": Case(
        PAYMENTS,
        (Edit("plan", 'pass: "< 3600"', "pass: 3600"),),
        Expect("plan", "rollback_readiness[1].pass", "expected a condition such as '< 0.01'", "pass: 3600"),
    ),
    "bad-bake-duration": Case(
        PAYMENTS,
        (Edit("plan", "bake: 5m", "bake: 5 minutes"),),
        Expect("plan", "stages[0].verify.bake", "'5 minutes' is not a duration", "bake: 5 minutes"),
    ),
    "bad-interval-duration": Case(
        SORTER,
        (Edit("plan", "every: 1m", "every: soon"),),
        Expect("plan", "stages[0].verify.every", "'soon' is not a duration", "every: soon"),
    ),
    "zero-max-age": Case(
        PAYMENTS,
        (Edit("plan", "max_age: 60s", "max_age: 0s"),),
        Expect("plan", "signals.error_rate.max_age", "'0s': a duration must be greater than zero", "max_age: 0s"),
    ),
    "bad-hold-expiry": Case(
        PAYMENTS,
        (Edit("plan", "expiry: 2h", "expiry: 2 hours"),),
        Expect("plan", "holds.expiry", "'2 hours' is not a duration", "holds:"),
    ),
    # rule 7: timing
    "bake-shorter-than-interval": Case(
        PAYMENTS,
        (Edit("plan", "bake: 5m", "bake: 10s"),),
        Expect("plan", "stages[0].verify.bake", "the bake must be at least one interval ('every') long", "bake: 10s"),
    ),
    "reminder-after-expiry": Case(
        TREASURY,
        (Edit("plan", "remind_before: 30m", "remind_before: 5h"),),
        Expect("plan", "holds.remind_before", "the reminder must come before the hold expires", "holds:"),
    ),
    # rule 8: window and authorities
    "window-closes-before-it-opens": Case(
        PAYMENTS,
        (Edit("package", 'closes: "2026-11-29T02:00:00Z"', 'closes: "2026-11-28T21:00:00Z"'),),
        Expect("package", "window.closes", "the window must close after it opens", "window:"),
    ),
    "window-closes-when-it-opens": Case(
        SORTER,
        (Edit("package", 'closes: "2026-12-01T06:00:00Z"', 'closes: "2026-12-01T04:00:00Z"'),),
        Expect("package", "window.closes", "the window must close after it opens", "window:"),
    ),
    "window-without-time-zone": Case(
        PAYMENTS,
        (Edit("package", 'opens: "2026-11-28T22:00:00Z"', 'opens: "2026-11-28T22:00:00"'),),
        Expect("package", "window.opens", "timestamp needs a time zone", "window:"),
    ),
    "empty-initiate-authority": Case(
        PAYMENTS,
        (Edit("package", "initiate: {users: [U05OPS]}", "initiate: {users: []}"),),
        Expect("package", "authorities.initiate", "initiate authority names no users or groups", "initiate:"),
    ),
    "empty-release-authority": Case(
        SORTER,
        (Edit("package", "release: {users: [U20SITE, U22SHIFT]}", "release: {}"),),
        Expect("package", "authorities.release", "release authority names no users or groups", "release:"),
    ),
    "empty-rollback-authority": Case(
        TREASURY,
        (Edit("package", "rollback: {users: [U14ONCALL, U11RISK]}", "rollback: {users: [], groups: []}"),),
        Expect("package", "authorities.rollback", "rollback authority names no users or groups", "rollback:"),
    ),
    # unknown fields
    "unknown-stage-field": Case(
        PAYMENTS,
        (Edit("plan", "  - id: canary-5\n", "  - id: canary-5\n    colour: blue\n"),),
        Expect(
            "plan", "stages[0].colour", "unknown field 'colour'; the fields here are id, description,", "colour: blue"
        ),
    ),
    "misspelt-protection": Case(
        PAYMENTS,
        (Edit("plan", "    hold_before: true\n", "    hold_befor: true\n"),),
        Expect("plan", "stages[1].hold_befor", "unknown field 'hold_befor'; did you mean 'hold_before'?", "hold_befor"),
    ),
    "unknown-package-field": Case(
        PAYMENTS,
        (Edit("package", "channel: C0CHANGES\n", "channel: C0CHANGES\nescalate_to: everyone\n"),),
        Expect("package", "escalate_to", "unknown field", "escalate_to"),
    ),
    "unknown-target-field": Case(
        PAYMENTS,
        (
            Edit(
                "package",
                '{kind: http, url: "https://router.payments.internal"}',
                '{kind: http, url: "https://r.internal", token: x}',
            ),
        ),
        Expect("package", "targets.payments-router.token", "unknown field", "token: x"),
    ),
    # wrong types and shapes
    "blast-radius-not-a-number": Case(
        PAYMENTS,
        (Edit("plan", "blast_radius: 5\n", "blast_radius: five\n"),),
        Expect(
            "plan",
            "stages[0].blast_radius",
            "expected a number ≥ 0, e.g. `blast_radius: 5`; got the text 'five'",
            "blast_radius: five",
        ),
    ),
    "negative-blast-radius": Case(
        PAYMENTS,
        (Edit("plan", "blast_radius: 5\n", "blast_radius: -5\n"),),
        Expect(
            "plan",
            "stages[0].blast_radius",
            "expected a number ≥ 0, e.g. `blast_radius: 5`; got the number -5",
            "blast_radius: -5",
        ),
    ),
    "version-not-an-integer": Case(
        PAYMENTS,
        (Edit("plan", "version: 7", "version: seven"),),
        Expect("plan", "version", "expected a whole number ≥ 1, e.g. `version: 7`", "version: seven"),
    ),
    "hold-before-not-a-boolean": Case(
        PAYMENTS,
        (Edit("plan", "    hold_before: true\n", "    hold_before: [true]\n"),),
        Expect(
            "plan",
            "stages[1].hold_before",
            "expected true or false, e.g. `hold_before: true`; got a list",
            "hold_before: [true]",
        ),
    ),
    "users-not-a-list": Case(
        PAYMENTS,
        (Edit("package", "initiate: {users: [U05OPS]}", "initiate: {users: U05OPS}"),),
        Expect("package", "authorities.initiate.users", "expected a list, each item a Slack id", "initiate:"),
    ),
    "max-blast-radius-not-a-number": Case(
        PAYMENTS,
        (Edit("package", "max_blast_radius: 100", 'max_blast_radius: "all"'),),
        Expect(
            "package",
            "scope.max_blast_radius",
            "expected a number ≥ 0, e.g. `max_blast_radius: 100`",
            "max_blast_radius",
        ),
    ),
    "unsupported-contract-version": Case(
        PAYMENTS,
        (Edit("plan", "stagehold: 1", "stagehold: 2"),),
        Expect("plan", "stagehold", "expected exactly 1, e.g. `stagehold: 1`; got the number 2", "stagehold: 2"),
    ),
    "plan-of-the-wrong-kind": Case(
        PAYMENTS,
        (Edit("plan", "kind: execution-plan", "kind: change-package"),),
        Expect("plan", "kind", "this is a change package, not an execution plan", "kind: change-package"),
    ),
    "channel-not-a-slack-id": Case(
        PAYMENTS,
        (Edit("package", "channel: C0CHANGES", 'channel: "#changes"'),),
        Expect("package", "channel", "expected a Slack channel id, like C0CHANGES", "channel:"),
    ),
    "method-not-allowed": Case(
        PAYMENTS,
        (Edit("plan", "method: PUT", "method: GET"),),
        Expect("plan", "stages[0].action.http.method", "expected one of POST, PUT, PATCH, DELETE", "method: GET"),
    ),
    "reaction-continue": Case(
        PAYMENTS,
        (Edit("plan", "fail: rollback,", "fail: continue,"),),
        Expect("plan", "stages[0].verify.on.fail", "expected one of hold, rollback, narrow", "fail: continue"),
    ),
    "min-samples-zero": Case(
        PAYMENTS,
        (Edit("plan", "min_samples: 20", "min_samples: 0"),),
        Expect("plan", "stages[0].verify.checks[0].min_samples", "expected a whole number ≥ 1", "min_samples: 0"),
    ),
    "signal-with-two-sources": Case(
        PAYMENTS,
        (Edit("plan", "  vault_healthy:\n", "  vault_healthy:\n    prometheus: {target: metrics, query: up}\n"),),
        Expect("plan", "signals.vault_healthy", "give exactly one of: prometheus, http, command", "vault_healthy:"),
    ),
    "http-target-without-url": Case(
        PAYMENTS,
        (Edit("package", '{kind: http, url: "https://router.payments.internal"}', "{kind: http}"),),
        Expect("package", "targets.payments-router", "a http target needs a url", "payments-router: {kind: http}"),
    ),
    "missing-required-field": Case(
        PAYMENTS,
        (Edit("package", "title: Move payment authorization to tokenization service v2\n", ""),),
        Expect("package", "title", "required field is missing; expected text, e.g. `title: ", "stagehold: 1"),
    ),
    "missing-stage-verify": Case(
        SORTER,
        (Edit("plan", "    verify:\n      bake: 15m\n      every: 1m\n", "    verify:\n      bake: 15m\n", 1),),
        Expect(
            "plan",
            "stages[1].verify.every",
            "required field is missing; expected a duration such as '30s'",
            "verify:",
            1,
        ),
    ),
    "approval-time-not-a-time": Case(
        TREASURY,
        (Edit("package", 'at: "2026-11-26T09:30:00Z"', 'at: "yesterday"'),),
        Expect("package", "approved_by[0].at", "expected a timestamp with a time zone", "yesterday"),
    ),
    "promql-syntax-error": Case(
        PAYMENTS,
        (
            Edit(
                "plan",
                'sum(rate(authz_errors_total{svc="tokenizer"}[1m]))',
                'sum(rate(authz_errors_total{svc="tokenizer"}[1m])',
            ),
        ),
        Expect("plan", "signals.error_rate.prometheus.query", "PromQL does not parse", "query: 'sum(rate(authz_errors"),
    ),
    "promql-wrong-argument-type": Case(
        SORTER,
        (
            Edit(
                "plan",
                'sum(rate(sorter_misroutes_total{profile="v42"}[5m]))',
                'sum(rate(sorter_misroutes_total{profile="v42"}))',
            ),
        ),
        Expect("plan", "signals.misroute_ratio.prometheus.query", "expected type matrix", "sorter_misroutes_total"),
    ),
    "promql-reads-no-current-series": Case(
        TREASURY,
        (Edit("plan", 'max(abs(forecast_variance_ratio{engine="v2"}))', "vector(0)"),),
        Expect("plan", "signals.forecast_variance.prometheus.query", "reads no series", "vector(0)"),
    ),
    "promql-samples-query-syntax-error": Case(
        PAYMENTS,
        (Edit("plan", "samples: 'sum(increase(", "samples: 'sum(increase(("),),
        Expect("plan", "signals.error_rate.prometheus.samples", "PromQL does not parse", "samples: 'sum(increase(("),
    ),
    "reduce-unknown": Case(
        PAYMENTS,
        (Edit("plan", "      samples: 'sum(increase(", "      reduce: median\n      samples: 'sum(increase("),),
        Expect(
            "plan",
            "signals.error_rate.prometheus.reduce",
            "expected one of all, any, max, min, avg, sum",
            "reduce: median",
        ),
    ),
    "failure-limit-negative": Case(
        PAYMENTS,
        (Edit("plan", "min_samples: 20}", "min_samples: 20, consecutive_failure_limit: -1}"),),
        Expect(
            "plan",
            "stages[0].verify.checks[0].consecutive_failure_limit",
            "expected a whole number ≥ 0",
            "consecutive_failure_limit: -1",
        ),
    ),
    "initial-delay-not-a-duration": Case(
        PAYMENTS,
        (Edit("plan", "      bake: 5m\n", "      bake: 5m\n      initial_delay: soon\n"),),
        Expect("plan", "stages[0].verify.initial_delay", "not a duration", "initial_delay: soon"),
    ),
    "password-in-a-target-url": Case(
        PAYMENTS,
        (
            Edit(
                "package",
                "https://prometheus.payments.internal",
                "https://stagehold:hunter2@prometheus.payments.internal",
            ),
        ),
        Expect("package", "targets.metrics.url", "STAGEHOLD_TARGET_AUTH", "hunter2"),
        not_in_message=("hunter2",),
    ),
    "token-in-a-target-url": Case(
        PAYMENTS,
        (
            Edit(
                "package",
                "https://prometheus.payments.internal",
                "https://prometheus.payments.internal/?access_token=abc123",
            ),
        ),
        Expect("package", "targets.metrics.url", "carries a credential", "access_token"),
        not_in_message=("abc123",),
    ),
    "secret-header-in-the-package": Case(
        PAYMENTS,
        (
            Edit(
                "package",
                'metrics: {kind: prometheus, url: "https://prometheus.payments.internal"}',
                'metrics: {kind: prometheus, url: "https://prometheus.payments.internal", headers: {X-Api-Key: k-123456}}',
            ),
        ),
        Expect("package", "targets.metrics.headers", "looks secret", "X-Api-Key"),
        not_in_message=("k-123456",),
    ),
    "top-level-not-a-mapping": Case(
        PAYMENTS,
        (Edit("plan", "stagehold: 1\n", "- stagehold: 1\n"),),
        Expect("plan", "(document)", "not valid YAML", "kind: execution-plan"),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_broken_variant_is_refused(tmp_path: Path, case: Case) -> None:
    v = make_variant(tmp_path, case.example, case.edits)
    check(v, case.expect, case.not_in_message)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    v = make_variant(
        tmp_path,
        PAYMENTS,
        (
            Edit("plan", "bake: 5m", "bake: 10s"),
            Edit("plan", "- id: canary-25", "- id: canary-5"),
            Edit("plan", "{signal: error_rate, pass:", "{signal: err_rate, pass:"),
            Edit("package", "max_blast_radius: 100", "max_blast_radius: 50"),
        ),
    )
    paths = {p.path for p in problems_of(v)}
    assert {
        "stages[0].verify.bake",
        "stages[1].id",
        "stages[0].verify.checks[0].signal",
        "stages[2].blast_radius",
    } <= paths


def test_plan_that_is_not_a_mapping(tmp_path: Path) -> None:
    v = make_variant(tmp_path, PAYMENTS)
    v.plan.write_text("- just\n- a list\n")
    v.package.write_text(set_digest(v.text("package"), sha256(v.plan.read_bytes())))
    problem = find(problems_of(v), "(document)", "expected a mapping of fields at the top level")
    assert (problem.file, problem.line) == (v.shown("plan"), 1)


def test_missing_plan_file_is_reported_on_the_package_line(tmp_path: Path) -> None:
    v = make_variant(tmp_path, PAYMENTS)
    v.plan.unlink()
    problem = find(problems_of(v), "plan", "file not found")
    assert problem.file == v.shown("package")
    assert problem.line == line_of(v.text("package"), "plan: plan.yaml")


def test_missing_package_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidChange) as caught:
        load_change(tmp_path / "nope.yaml")
    [problem] = caught.value.problems
    assert (problem.path, problem.message) == ("(file)", "file not found")


# ---------------------------------------------------------------- the validate command


def test_validate_command_reports_problems_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = make_variant(
        tmp_path,
        PAYMENTS,
        (Edit("plan", "bake: 5m", "bake: 10s"), Edit("plan", "- id: canary-25", "- id: canary-5")),
    )
    assert main(["validate", str(v.package)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    bake = line_of(v.text("plan"), "bake: 10s")
    dup = line_of(v.text("plan"), "- id: canary-5", 1)
    assert (
        f"{v.shown('plan')}:{bake}: stages[0].verify.bake: the bake must be at least one interval ('every') long: "
        "bake 10s, every 30s" in lines
    )
    assert (
        f"{v.shown('plan')}:{dup}: stages[1].id: stage id 'canary-5' is used twice; give each stage its own id" in lines
    )
    assert lines[-1] == "invalid: 2 problems"


def test_validate_command_on_a_changed_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = make_variant(tmp_path, SORTER, (Edit("plan", "version: 2", "version: 3"),), fix_digest=False)
    assert main(["validate", str(v.package)]) == 2
    _, err = capsys.readouterr()
    line = line_of(v.text("package"), "plan_sha256")
    assert err.startswith(f"{v.package}:{line}: plan_sha256: plan changed after approval: approved sha256 ")
    assert err.splitlines()[-1] == "invalid: 1 problem"


def test_validate_command_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    _, err = capsys.readouterr()
    assert f"{tmp_path / 'missing.yaml'}: (file): file not found" in err


def test_validate_command_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == 2
    assert "stagehold:" in capsys.readouterr().err


def test_digest_command_matches_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for example in EXAMPLE_NAMES:
        assert main(["digest", str(EXAMPLES / example / "plan.yaml")]) == 0
        out, _ = capsys.readouterr()
        assert out.strip() == load_change(EXAMPLES / example / "package.yaml").package.plan_sha256


def test_validate_warns_when_a_query_window_outruns_the_initial_delay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(EXAMPLES / PAYMENTS / "package.yaml")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "stages[0].verify.checks[0]: signal 'error_rate' reads a 1m window" in err
    v = make_variant(
        tmp_path, PAYMENTS, (Edit("plan", "      bake: 5m\n", "      bake: 5m\n      initial_delay: 1m\n"),)
    )
    assert main(["validate", str(v.package)]) == 0
    err = capsys.readouterr().err
    assert "stages[0].verify" not in err and "stages[1].verify.checks[0]" in err


def test_every_yes_no_field_takes_only_true_or_false() -> None:
    """A yes/no field added to any contract model must be a YesNo, or YAML's "no" would slip in."""
    import typing

    from pydantic import BeforeValidator

    import execution.contract.keyring  # noqa: F401  (its models are contract models too)
    from execution.contract.models import ChangePackage, Strict, YesNo

    (check,) = (m for m in typing.get_args(YesNo)[1:] if isinstance(m, BeforeValidator))
    models, seen = list(Strict.__subclasses__()), set()
    while models:
        model = models.pop()
        seen.add(model)
        models += [m for m in model.__subclasses__() if m not in seen]
    flags = {
        f"{model.__name__}.{name}": field
        for model in seen
        for name, field in model.model_fields.items()
        if bool in (field.annotation, *typing.get_args(field.annotation))
    }
    assert "Authorities.two_person" in flags and "Stage.hold_before" in flags
    assert [name for name, field in flags.items() if check not in field.metadata] == []
    with pytest.raises(ValueError, match="expected true or false"):
        ChangePackage.model_validate({"authorities": {"two_person": "no"}})
