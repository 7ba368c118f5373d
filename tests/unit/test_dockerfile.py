"""The image installs its dependencies in a layer that a code edit does not invalidate."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("bot", "handlers", "execution", "ledger", "templates", "examples", "README.md")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dependencies_are_installed_from_pyproject_before_any_code_is_copied() -> None:
    steps = instructions()
    copies = [(i, args) for i, (word, args) in enumerate(steps) if word == "COPY"]
    first_index, first = copies[0]
    assert first.split() == ["pyproject.toml", "./"]
    install = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and "-r /tmp/requirements.txt" in args)
    assert first_index < install
    for i, args in copies[1:]:
        assert i > install, f"{args} is copied before the dependency layer"
        assert args.split()[0] in CODE
    final = next(args for word, args in steps if word == "RUN" and "pip install --no-deps ." in args)
    assert final


def test_the_dependency_step_lists_exactly_pyprojects_dependencies(tmp_path: Path) -> None:
    run = next(args for word, args in instructions() if word == "RUN" and "tomllib" in args)
    script = re.search(r'python -c "(.*?)"', run)
    assert script is not None
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    listed = subprocess.run(
        [sys.executable, "-c", script.group(1)], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == wanted
    assert any(d.startswith("prometheus-client") for d in listed)
