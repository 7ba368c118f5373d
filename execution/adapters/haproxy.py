"""HAProxy adapter: server weights and states through the Runtime API, and their read-back.

The Runtime API is a text protocol on HAProxy's stats socket (a UNIX socket or TCP, declared with
``stats socket ... level admin``): one connection per command, the command and a newline in, the
answer until the connection closes.

Rules:
* Before it changes anything, an action reads ``show servers state BACKEND``: an unknown backend
  or server, or an unreachable socket, is ``rejected`` with nothing sent.
* Each server's change is its own command. HAProxy answers a successful ``set`` with an empty line
  and a refusal with its reason. A refusal of the first command is ``rejected``; a refusal or a lost
  answer after an earlier command was applied is ``ambiguous`` (part of it is live), and so is a
  lost answer to any command: only the read-back can tell.
* ``set weight`` and ``set server ... state`` are absolute, so re-sending a whole action after an
  ambiguous outcome is safe: it converges on the same state.
* The read-back's document is one object per server, built from ``show servers state``:
  ``weight``, ``initial_weight``, ``state`` (``ready``, ``drain``, ``maint``), ``operational``
  (``stopped``, ``starting``, ``running``, ``stopping``), ``address`` and ``port``.
* Nothing raises into the engine.

Worked example: ``weights: {canary: 25, stable: 75}`` on backend ``app`` sends
``set weight app/canary 25`` and then ``set weight app/stable 75``; the read-back
``expect: {canary.weight: 25, stable.weight: 75}`` matches ``show servers state app`` once both
are live.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from execution.adapters.http import compare_expected
from execution.contract.models import Action, Confirm, Target
from execution.model import JSON, ActionResult, ReadbackResult, Role

_MAX_ANSWER = 4 * 1024 * 1024
# srv_admin_state bits (HAProxy's enum srv_admin): any maintenance flag, any drain flag.
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20
_ADMIN_DRAIN = 0x08 | 0x10
_OPERATIONAL = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}


class SocketError(Exception):
    """The socket could not be reached (``sent`` False) or its answer was lost (``sent`` True)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class Address:
    family: int
    where: str | tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> Address:
        if text.startswith("tcp://"):
            host, _, port = text.removeprefix("tcp://").rpartition(":")
            return cls(socket.AF_INET6 if ":" in host else socket.AF_INET, (host.strip("[]"), int(port)))
        return cls(socket.AF_UNIX, text)


def runtime_command(address: Address, command: str, timeout_s: float) -> str:
    """Send one Runtime API command and return its whole answer."""
    deadline = time.monotonic() + timeout_s
    conn = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            conn.connect(address.where)
        except OSError as exc:
            raise SocketError(f"cannot reach the Runtime API at {_shown(address)}: {exc}", sent=False) from None
        try:
            conn.sendall(command.encode() + b"\n")
        except OSError as exc:
            raise SocketError(f"'{command}' may not have been sent whole: {exc}", sent=True) from None
        chunks: list[bytes] = []
        size = 0
        while True:
            conn.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except OSError as exc:
                raise SocketError(f"no answer to '{command}': {exc}", sent=True) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_ANSWER:
                raise SocketError(f"the answer to '{command}' is larger than {_MAX_ANSWER} bytes", sent=True)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        conn.close()


def _shown(address: Address) -> str:
    if isinstance(address.where, tuple):
        return f"tcp://{address.where[0]}:{address.where[1]}"
    return address.where


def _number(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def parse_servers_state(answer: str) -> dict[str, dict[str, JSON]]:
    """``show servers state`` (format 1) as one object per server name.

    Raises ValueError when the answer is not that table (HAProxy's error text, e.g. for an
    unknown backend, is the message).
    """
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise ValueError(answer.strip() or "an empty answer")
    header: list[str] = []
    servers: dict[str, dict[str, JSON]] = {}
    for line in lines[1:]:
        if line.startswith("#"):
            header = line.lstrip("#").split()
            continue
        row = dict(zip(header, line.split(), strict=False))
        if "srv_name" not in row:
            continue
        admin = int(row.get("srv_admin_state", "0"))
        state = "maint" if admin & _ADMIN_MAINT else "drain" if admin & _ADMIN_DRAIN else "ready"
        servers[row["srv_name"]] = {
            "weight": _number(row.get("srv_uweight", "")),
            "initial_weight": _number(row.get("srv_iweight", "")),
            "state": state,
            "operational": _OPERATIONAL.get(int(row.get("srv_op_state", "-1")), "unknown"),
            "address": row.get("srv_addr"),
            "port": _number(row.get("srv_port", "")),
        }
    return servers


class HaproxyRuntime:
    """Runs ``haproxy`` actions and read-backs against the package's ``kind: haproxy`` targets."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        self._targets = targets

    def _address(self, target: str) -> Address:
        spec = self._targets.get(target)
        if spec is None or spec.socket is None:
            raise LookupError(f"target {target!r} is not in the change package or has no socket")
        return Address.parse(spec.socket)

    def servers(self, target: str, backend: str, timeout_s: float) -> dict[str, dict[str, JSON]]:
        answer = runtime_command(self._address(target), f"show servers state {backend}", timeout_s)
        return parse_servers_state(answer)

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        spec = action.haproxy
        if spec is None:
            return ActionResult("rejected", "not a haproxy action; nothing was sent")
        what = f"haproxy {spec.target} backend {spec.backend}"
        deadline = time.monotonic() + timeout_s
        try:
            address = self._address(spec.target)
            known = self.servers(spec.target, spec.backend, timeout_s)
        except (LookupError, ValueError) as exc:
            return ActionResult("rejected", f"{what}: nothing was sent: {exc}")
        except SocketError as exc:
            # Only a read happened: whatever became of it, nothing was changed.
            return ActionResult("rejected", f"{what}: nothing was sent: {exc}")
        unknown = sorted((set(spec.weights) | set(spec.states)) - set(known))
        if unknown:
            detail = f"{what} has no server(s) {', '.join(unknown)} (it has {', '.join(sorted(known)) or 'none'})"
            return ActionResult("rejected", detail + "; nothing was sent")
        commands = [f"set weight {spec.backend}/{server} {weight}" for server, weight in spec.weights.items()]
        commands += [f"set server {spec.backend}/{server} state {state}" for server, state in spec.states.items()]
        done: list[str] = []
        for command in commands:
            try:
                answer = runtime_command(address, command, max(0.05, deadline - time.monotonic())).strip()
            except SocketError as exc:
                if not exc.sent and not done:
                    return ActionResult("rejected", f"{what}: {exc}; nothing was applied")
                return ActionResult("ambiguous", f"{what}: {exc}; {_progress(done)}; outcome unknown")
            if answer:
                if not done:
                    return ActionResult("rejected", f"{what}: '{command}' refused: {answer}", response=answer)
                detail = f"{what}: '{command}' refused: {answer}; {_progress(done)}; outcome unknown"
                return ActionResult("ambiguous", detail, response=answer)
            done.append(command)
        return ActionResult("ok", f"{what}: {'; '.join(done)}", response={"commands": done})

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        spec = confirm.haproxy
        if spec is None:
            return ReadbackResult(None, None, "not a haproxy read-back")
        what = f"haproxy {spec.target} backend {spec.backend}"
        try:
            observed = self.servers(spec.target, spec.backend, timeout_s)
        except (LookupError, ValueError, SocketError) as exc:
            return ReadbackResult(None, None, f"{what}: read-back failed: {exc}")
        problems = compare_expected(spec.expect, observed)
        if problems:
            return ReadbackResult(False, observed, f"{what}: " + "; ".join(problems))
        return ReadbackResult(True, observed, f"{what} matches {len(spec.expect)} field(s)")


def _progress(done: list[str]) -> str:
    return f"applied before it: {', '.join(done)}" if done else "no earlier command was applied"
