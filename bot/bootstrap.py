"""The one composition root: settings in, wired objects out. Nothing else builds adapters.

``serve``, every command-line command that drives or changes an execution, and the benchmarks
open a ``Runtime`` (the ledger store and the one HTTP client for targets), build their engine
from it, and close both together when they are done.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from bot.clock import utc_now

# Each function imports what it wires, so a command that only reads the ledger (status, ledger
# verify) does not load the HTTP client, the adapters and the engine to open a store.
if TYPE_CHECKING:
    import httpx

    from execution.adapters.base import Connection
    from execution.contract.models import Target
    from execution.model import Clock, Credentials
    from execution.project import State
    from execution.service import Engine, Listener
    from ledger.sql import SqlLedgerStore


def process_owner() -> str:
    """A lease owner name unique to this process (host, pid and a random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def open_store(url: str) -> SqlLedgerStore:
    from bot.settings_error import SettingsError
    from ledger.sql import SqlLedgerStore

    try:
        return SqlLedgerStore(url)
    except Exception as exc:  # the driver's message is the useful part
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(f"cannot open the ledger database {url!r}: {detail}") from None


def http_client(timeout_s: float) -> httpx.Client:
    # Connection pooling across executions; per-request timeouts are set by the adapters. Targets
    # with their own TLS files (STAGEHOLD_TARGET_AUTH) get clients of their own from it. Enough
    # connections kept alive for every signal reader and driver worker at once (httpx keeps 20
    # by default; past that, each read beyond them would open and close a connection of its own).
    import httpx

    from execution.adapters.transport import TargetTransport

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=64)
    return TargetTransport(timeout=timeout_s, follow_redirects=False, limits=limits)


def live_connector(
    credentials: Credentials,
    client: httpx.Client,
    clock: Clock,
    override_url: str | None = None,
    *,
    read_timeout_s: float = 10.0,
) -> Callable[[State], Connection]:
    """Adapters over an execution's package targets; ``override_url`` sends every kind to a sandbox,
    which is taught each plan (once per approved digest) before it is first driven.

    Targets are rebuilt from the package recorded in the ledger, which holds no secret; the
    secrets (role credentials, per-target auth and TLS files) come from ``credentials``, read from
    settings by this process, so they are the same after a restart and never pass the ledger.
    """
    from execution.adapters.live import LiveTargets
    from execution.adapters.sandboxed import SandboxTargets, teach

    taught: set[str] = set()

    def connect(state: State) -> Connection:
        assert state.package is not None and state.plan is not None
        targets: Mapping[str, Target] = state.package.targets
        sensitive = state.plan.sensitive_fields
        if override_url is None:
            return LiveTargets(
                targets, credentials, client, clock, read_timeout_s=read_timeout_s, sensitive_fields=sensitive
            )
        # A sandbox that cannot be taught still answers what it knows; the rehearsal's own
        # evidence (no data, 404) then says what is missing.
        if state.package.plan_sha256 not in taught and teach(client, override_url, state.plan) is None:
            taught.add(state.package.plan_sha256)
        return SandboxTargets(
            override_url,
            targets,
            credentials,
            client,
            clock,
            read_timeout_s=read_timeout_s,
            sensitive_fields=sensitive,
        )

    return connect


def build_engine(
    store: SqlLedgerStore,
    connect: Callable[[State], Connection],
    *,
    listeners: Iterable[Listener] = (),
    clock: Clock = utc_now,
    owner: str | None = None,
    lease_ttl_s: float | None = None,
) -> Engine:
    from execution.service import Engine

    ttl = lease_ttl_s if lease_ttl_s is not None else configured_lease_ttl()
    return Engine(store, connect, clock, owner or process_owner(), listeners=listeners, lease_ttl_s=ttl)


def configured_lease_ttl() -> float:
    """STAGEHOLD_LEASE_TTL for command-line engines (a bad setting is reported by the command itself)."""
    from bot.settings import Settings, SettingsError, load_settings

    try:
        return load_settings().lease_ttl_s
    except SettingsError:
        return Settings.model_fields["lease_ttl_s"].default  # type: ignore[no-any-return]


@dataclass
class Runtime:
    """What a process drives executions with: the ledger store and the HTTP client its target
    adapters share. ``close`` (or leaving the ``with`` block) closes both."""

    store: SqlLedgerStore
    client: httpx.Client

    def connector(
        self,
        credentials: Credentials,
        sandbox_url: str | None = None,
        *,
        clock: Clock = utc_now,
        read_timeout_s: float = 10.0,
    ) -> Callable[[State], Connection]:
        """Adapters for an execution's targets (every kind sent to ``sandbox_url`` when given)."""
        return live_connector(credentials, self.client, clock, sandbox_url, read_timeout_s=read_timeout_s)

    def engine(
        self,
        connect: Callable[[State], Connection],
        *,
        listeners: Iterable[Listener] = (),
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> Engine:
        return build_engine(self.store, connect, listeners=listeners, clock=clock, owner=owner)

    def close(self) -> None:
        self.client.close()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def open_runtime(database_url: str, http_timeout_s: float = 10.0) -> Runtime:
    """Open the ledger (``SettingsError`` naming the database when it cannot be opened) and the client."""
    return Runtime(open_store(database_url), http_client(http_timeout_s))
