"""The ports the engine's shell drives. Implementations live beside this module."""

from __future__ import annotations

from typing import Protocol

from execution.contract.models import Action, Confirm, Signal
from execution.model import ActionResult, Evidence, ReadbackResult, Role


class SignalReader(Protocol):
    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        """Read one signal now, with ``role``'s credential."""
        ...


class ActionRunner(Protocol):
    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        """Send one control-plane action with its idempotency key."""
        ...

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        """Read the target's live state and compare it with ``confirm.expect``."""
        ...


class Connection(SignalReader, ActionRunner, Protocol):
    """Both ports over one change package's targets."""
