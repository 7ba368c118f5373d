"""Where approvals live on disk: one file per signing key beside the package.

``examples/payments-cutover/package.yaml`` is approved by the files in
``examples/payments-cutover/package.yaml.approvals/``, each ``<key id>.sig`` holding one signed
approval (``execution.approvals``): readable text, one file per key so two approvers signing at
the same time never edit the same file, and re-signing a new version replaces the signer's old file.

Reading never raises: an unreadable directory or file becomes a ``Problem``; files that do not end
in ``.sig`` are ignored (a README may sit there).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from execution.approvals import ApprovalReport, check_approvals, policy_of
from execution.contract.keyring import Keyring
from execution.contract.load import LoadedChange, Problem

SUFFIX = ".approvals"
MAX_FILES = 100
MAX_FILE_BYTES = 65_536


def approvals_dir(package_path: str | Path) -> Path:
    path = Path(package_path)
    return path.with_name(path.name + SUFFIX)


def read_signatures(package_path: str | Path) -> tuple[list[tuple[str, bytes]], list[Problem]]:
    """The ``(file name, content)`` of every approval of the package, in name order, and any problem."""
    directory = approvals_dir(package_path)
    shown = str(directory)
    try:
        names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".sig"))
    except FileNotFoundError:
        return [], []
    except (OSError, ValueError) as exc:
        return [], [Problem(shown, None, "(approvals)", f"cannot read: {getattr(exc, 'strerror', None) or exc}")]
    problems = []
    if len(names) > MAX_FILES:
        problems.append(Problem(shown, None, "(approvals)", f"more than {MAX_FILES} signatures; the rest are ignored"))
        names = names[:MAX_FILES]
    out: list[tuple[str, bytes]] = []
    for name in names:
        try:
            with (directory / name).open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            problems.append(Problem(f"{shown}/{name}", None, "(approval)", f"cannot read: {exc.strerror or exc}"))
            continue
        if len(data) > MAX_FILE_BYTES:
            problems.append(Problem(f"{shown}/{name}", None, "(approval)", f"larger than {MAX_FILE_BYTES} bytes"))
            continue
        out.append((name, data))
    return out, problems


def write_signature(package_path: str | Path, key_hex: str, note: str) -> Path:
    """Write (or replace) the approval of key ``key_hex`` atomically; returns its path. Raises ``OSError``."""
    directory = approvals_dir(package_path)
    directory.mkdir(exist_ok=True)
    target = directory / f"{key_hex}.sig"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key_hex}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(note)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def approval_report(change: LoadedChange, keyring: Keyring, now: datetime) -> tuple[ApprovalReport, list[Problem]]:
    """Check the approvals beside ``change``'s package against the bytes that were validated."""
    signatures, problems = read_signatures(change.package_path)
    report = check_approvals(change.package_raw, change.package.id, signatures, keyring, policy_of(change.package), now)
    return report, problems
