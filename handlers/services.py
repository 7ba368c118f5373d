"""What the Slack listeners work with, built once by the composition root (``bot/app.py``).

Listeners receive this object instead of reading settings or building clients themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from execution.approvals import ApprovalReport
from execution.contract import LoadedChange
from execution.contract.models import ChangePackage
from execution.project import State
from execution.service import Engine
from handlers.directory import Directory
from handlers.repeats import RepeatedClicks
from handlers.review import ReportSettings
from handlers.storage import SlackStore


@dataclass
class Services:
    engine: Engine
    wake: Callable[[str], None]  # bot.scheduler.Driver.wake: drive an execution now
    directory: Directory
    packages_dir: Path
    threads: SlackStore | None = None  # where each execution's thread lives (for ledger exports)
    start_mode: str = "live"  # "rehearsal" when serve drives a sandbox
    start_speed: float = 1.0
    report: ReportSettings = field(default_factory=ReportSettings)
    # The signed approvals of a package (bot.keys.approvals_checker); None: no keyring configured.
    approvals: Callable[[LoadedChange], ApprovalReport | None] = lambda _change: None
    # Collapses a person's repeated Release clicks on one button; None: every click is decided.
    repeats: RepeatedClicks | None = None

    def groups_of(self, user: str, package: ChangePackage) -> tuple[str, ...]:
        """The package's user groups ``user`` belongs to; the engine decides what they allow."""
        auth = package.authorities
        named = [*auth.initiate.groups, *auth.release.groups, *auth.rollback.groups, *auth.operators.groups]
        return self.directory.groups_of(user, named) if named else ()

    def latest(self, change_id: str) -> State | None:
        """The latest execution of a change, or None."""
        found = self.engine.find(change_id)
        return self.engine.load(found[-1]) if found else None
