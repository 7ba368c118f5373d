"""The adapters the engine's shell is given: one object that reads signals and runs actions.

It dispatches on which spec kind a signal, action or read-back sets (``prometheus``, ``http``,
``command`` or ``haproxy``) and adds nothing of its own, so every rule of the adapters it wraps still holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx

from execution.adapters.command import CommandRunner
from execution.adapters.haproxy import HaproxyRuntime
from execution.adapters.http import HttpTargets
from execution.adapters.prometheus import PrometheusReader
from execution.contract.models import Action, Confirm, Signal, Target
from execution.model import ActionResult, Clock, Credentials, Evidence, ReadbackResult, Role


class LiveTargets:
    """``SignalReader`` and ``ActionRunner`` over the targets of one change package."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        credentials: Credentials,
        client: httpx.Client,
        clock: Clock,
        *,
        read_timeout_s: float = 10.0,
        sensitive_fields: Iterable[str] = (),
        command_env: Mapping[str, str] | None = None,
    ) -> None:
        sensitive = tuple(sensitive_fields)
        self.http = HttpTargets(
            targets, credentials, client, clock, read_timeout_s=read_timeout_s, sensitive_fields=sensitive
        )
        self.prometheus = PrometheusReader(
            targets, credentials, client, clock, read_timeout_s=read_timeout_s, sensitive_fields=sensitive
        )
        self.command = CommandRunner(targets, credentials, clock, base_env=command_env, sensitive_fields=sensitive)
        self.haproxy = HaproxyRuntime(targets)

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        if signal.prometheus is not None:
            return self.prometheus.read(name, signal, role)
        if signal.http is not None:
            return self.http.read(name, signal, role)
        if signal.command is not None:
            return self.command.read(name, signal, role)
        return Evidence(name, None, None, "unknown", error="the signal names no source")

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        if action.http is not None:
            return self.http.apply(action, idempotency_key, role, timeout_s)
        if action.command is not None:
            return self.command.apply(action, idempotency_key, role, timeout_s)
        if action.haproxy is not None:
            return self.haproxy.apply(action, idempotency_key, role, timeout_s)
        return ActionResult("rejected", "the action names no kind; nothing was sent")

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        if confirm.http is not None:
            return self.http.read_back(confirm, role, timeout_s)
        if confirm.command is not None:
            return self.command.read_back(confirm, role, timeout_s)
        if confirm.haproxy is not None:
            return self.haproxy.read_back(confirm, role, timeout_s)
        return ReadbackResult(None, None, "the read-back names no kind")
