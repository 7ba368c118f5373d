"""Load a change package and the plan it pins; report every problem with file, path and line.

``load_change(path)`` returns a ``LoadedChange`` or raises ``InvalidChange`` holding every
``Problem`` found. Nothing a file can contain makes it raise anything else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from execution.contract.models import MODELS, ChangePackage, Plan
from execution.contract.rules import Finding, check_digest, check_package, check_plan, check_window, plan_warnings
from execution.contract.source import Document, SourceError, format_path, parse_yaml


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return _one_line(f"{where}: {self.path}: {self.message}")


# Characters ``str.splitlines`` breaks on, plus the other C0 controls: a key or value written with
# them in a hostile file must not split one problem over several lines of output.
_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """One problem, one line: control characters are shown escaped (``\\r``, ``\\x1c``)."""
    return _BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


class InvalidChange(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedChange:
    package: ChangePackage
    plan: Plan
    package_path: str
    plan_path: str
    plan_sha256: str
    # Worth saying but not refusing (a window that has closed): ``validate`` prints them and exits 0.
    warnings: tuple[Problem, ...] = ()
    # The exact bytes validated: signed approvals are checked against these, never a second read.
    package_raw: bytes = field(default=b"", repr=False, compare=False)

    def package_data(self) -> dict[str, Any]:
        return self.package.model_dump(mode="json", by_alias=True, exclude_none=True)

    def plan_data(self) -> dict[str, Any]:
        return self.plan.model_dump(mode="json", by_alias=True, exclude_none=True)


def _read(path: Path, shown: str) -> tuple[bytes | None, list[Problem]]:
    try:
        if path.is_dir():
            return None, [Problem(shown, None, "(file)", "is a directory, not a file")]
        with path.open("rb") as fh:
            raw = fh.read(4 * 1024 * 1024 + 1)
        return raw, []
    except FileNotFoundError:
        return None, [Problem(shown, None, "(file)", "file not found")]
    except OSError as exc:
        return None, [Problem(shown, None, "(file)", f"cannot read: {exc.strerror or exc}")]
    except ValueError as exc:  # e.g. a NUL byte in the path
        return None, [Problem(shown, None, "(file)", f"not a usable path: {exc}")]


def _parse(raw: bytes, shown: str) -> tuple[Document | None, list[Problem]]:
    try:
        return parse_yaml(raw), []
    except SourceError as exc:
        return None, [Problem(shown, exc.line, "(document)", exc.message)]


# A file of the other kind, given where this kind belongs: say so once instead of listing every
# field that does not fit.
_WRONG_KIND = {
    "package": {
        "execution-plan": "this is an execution plan; validate the package that pins it "
        "(the change package whose `plan:` names this file)",
    },
    "plan": {
        "change-package": "this is a change package, not an execution plan; the package's `plan:` "
        "must name the plan file it pins",
    },
}


def _validate(which: str, doc: Document, shown: str) -> tuple[Any, list[Problem]]:
    if not isinstance(doc.data, dict):
        return None, [
            Problem(
                shown,
                doc.line_of(()),
                "(document)",
                "expected a mapping of fields at the top level, e.g. `stagehold: 1`",
            )
        ]
    wrong = _WRONG_KIND[which].get(str(doc.data.get("kind")))
    if wrong is not None:
        return None, [Problem(shown, doc.line_of(("kind",)), "kind", wrong)]
    try:
        return MODELS[which].model_validate(doc.data), []
    except ValidationError as exc:
        # Only an invalid file needs the JSON Schema (examples and expected values in messages):
        # generating it costs more than validating a package, so a valid one never pays for it.
        from execution.contract.messages import explain
        from execution.contract.schema import cached_schema

        root = cached_schema(which)
        problems = []
        for err in exc.errors(include_url=False):
            loc, message = explain(err, root)
            problems.append(Problem(shown, doc.line_of(loc), format_path(loc), message))
        return None, problems


def _findings(findings: list[Finding], docs: dict[str, tuple[Document, str]]) -> list[Problem]:
    out = []
    for which, path, message in findings:
        doc, shown = docs[which]
        out.append(Problem(shown, doc.line_of(path), format_path(path), message))
    return out


def load_change(package_file: str | Path, now: datetime | None = None) -> LoadedChange:
    """Load and check a package and its plan; with ``now``, also warn about what time has made moot."""
    pkg_path = Path(package_file)
    pkg_shown = str(package_file)
    raw, problems = _read(pkg_path, pkg_shown)
    if raw is None:
        raise InvalidChange(problems)
    pkg_doc, problems = _parse(raw, pkg_shown)
    if pkg_doc is None:
        raise InvalidChange(problems)
    package, problems = _validate("package", pkg_doc, pkg_shown)
    if package is None:
        raise InvalidChange(problems)
    problems = _findings(list(check_package(package)), {"package": (pkg_doc, pkg_shown)})

    # The plan is read relative to the package file (an absolute path is taken as written).
    plan_path = pkg_path.parent / package.plan if not Path(package.plan).is_absolute() else Path(package.plan)
    plan_shown = str(pkg_path.parent / package.plan) if not Path(package.plan).is_absolute() else package.plan
    plan_raw, read_problems = _read(plan_path, plan_shown)
    if plan_raw is None:
        line = pkg_doc.line_of(("plan",))
        raise InvalidChange(
            [
                *problems,
                *(Problem(pkg_shown, line, "plan", f"{plan_shown}: {p.message}") for p in read_problems),
            ]
        )
    digest = hashlib.sha256(plan_raw).hexdigest()
    problems += _findings(list(check_digest(package, digest)), {"package": (pkg_doc, pkg_shown)})
    plan_doc, parse_problems = _parse(plan_raw, plan_shown)
    if plan_doc is None:
        raise InvalidChange(problems + parse_problems)
    plan, model_problems = _validate("plan", plan_doc, plan_shown)
    if plan is None:
        raise InvalidChange(problems + model_problems)
    problems += _findings(
        list(check_plan(package, plan)), {"package": (pkg_doc, pkg_shown), "plan": (plan_doc, plan_shown)}
    )
    if problems:
        raise InvalidChange(problems)
    warnings = [] if now is None else _findings(list(check_window(package, now)), {"package": (pkg_doc, pkg_shown)})
    warnings += _findings(list(plan_warnings(plan)), {"plan": (plan_doc, plan_shown)})
    return LoadedChange(package, plan, pkg_shown, plan_shown, digest, tuple(warnings), package_raw=raw)
