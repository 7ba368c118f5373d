"""Find a change package by its id in the packages directory (``STAGEHOLD_PACKAGES_DIR``).

Rules:
* Candidates are ``*/package.yaml`` and ``*.yaml`` directly in the directory; a file is the
  package for CHANGE_ID when its top-level ``kind`` is ``change-package`` and its ``id`` matches.
* The match is loaded with ``execution.contract.load_change``, so the package and its pinned plan
  are validated exactly as on the command line; problems come back as ``InvalidChange``.
* Exactly one match is required: two files claiming the same id is an error, not a choice.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from execution.contract import LoadedChange, load_change

MAX_CANDIDATE_BYTES = 4 * 1024 * 1024


class PackageNotFound(Exception):
    """No single package with that id; the message says what was found."""


def _declares(path: Path, change_id: str) -> bool:
    try:
        if path.stat().st_size > MAX_CANDIDATE_BYTES:
            return False
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # not a readable package; it cannot be the one asked for
    return isinstance(data, dict) and data.get("kind") == "change-package" and data.get("id") == change_id


def find_package(directory: str | Path, change_id: str) -> LoadedChange:
    root = Path(directory).resolve()
    if not root.is_dir():
        raise PackageNotFound(f"the packages directory {str(root)!r} does not exist (STAGEHOLD_PACKAGES_DIR)")
    candidates = sorted({*root.glob("*/package.yaml"), *root.glob("*.yaml")})
    matches = [p for p in candidates if p.is_file() and _declares(p, change_id)]
    if not matches:
        raise PackageNotFound(f"no change package with id {change_id} in {root.name}/")
    if len(matches) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in matches)
        raise PackageNotFound(f"more than one package claims id {change_id}: {names}")
    return load_change(matches[0])
