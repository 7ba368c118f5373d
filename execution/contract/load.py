"""Load a change package and the plan it pins; report every problem with file, path and line.

``load_change(path)`` returns a ``LoadedChange`` or raises ``InvalidChange`` holding every
``Problem`` found. Nothing a file can contain makes it raise anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from execution.contract.models import ChangePackage, Plan
from execution.contract.rules import Finding, check_digest, check_package, check_plan
from execution.contract.source import Document, PathKey, SourceError, format_path, parse_yaml


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"


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


def _validate(model: type[ChangePackage] | type[Plan], doc: Document, shown: str) -> tuple[Any, list[Problem]]:
    if not isinstance(doc.data, dict):
        return None, [Problem(shown, doc.line_of(()), "(document)", "expected a mapping of fields at the top level")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc: PathKey = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
            # Drop pydantic's internal tags (e.g. "function-after[...]") from paths.
            loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            msg = msg.removeprefix("Value error, ")
            problems.append(Problem(shown, doc.line_of(loc), format_path(loc), msg))
        return None, problems


def _findings(findings: list[Finding], docs: dict[str, tuple[Document, str]]) -> list[Problem]:
    out = []
    for which, path, message in findings:
        doc, shown = docs[which]
        out.append(Problem(shown, doc.line_of(path), format_path(path), message))
    return out


def load_change(package_file: str | Path) -> LoadedChange:
    pkg_path = Path(package_file)
    pkg_shown = str(package_file)
    raw, problems = _read(pkg_path, pkg_shown)
    if raw is None:
        raise InvalidChange(problems)
    pkg_doc, problems = _parse(raw, pkg_shown)
    if pkg_doc is None:
        raise InvalidChange(problems)
    package, problems = _validate(ChangePackage, pkg_doc, pkg_shown)
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
    plan, model_problems = _validate(Plan, plan_doc, plan_shown)
    if plan is None:
        raise InvalidChange(problems + model_problems)
    problems += _findings(
        list(check_plan(package, plan)), {"package": (pkg_doc, pkg_shown), "plan": (plan_doc, plan_shown)}
    )
    if problems:
        raise InvalidChange(problems)
    return LoadedChange(package, plan, pkg_shown, plan_shown, digest)
