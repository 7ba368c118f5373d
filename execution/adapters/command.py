"""Command adapter: signals, actions and read-backs that run a program (never a shell).

Rules:
* ``argv`` runs as given (``shell=False``), with a timeout; on timeout the whole process group is
  killed, so a wrapper script's children cannot keep the run alive.
* Secrets never go on the command line: the role's credential travels in ``STAGEHOLD_CREDENTIAL``,
  with ``STAGEHOLD_ROLE``, ``STAGEHOLD_TARGET``, ``STAGEHOLD_TARGET_URL`` and, for actions,
  ``STAGEHOLD_IDEMPOTENCY_KEY``. The rest of the environment is a small allow-list, not the bot's
  own environment (which holds the Slack and database secrets).
* ``stdin`` (text as given, anything else as JSON) is written to the program's standard input;
  without it standard input is empty.
* stdout is JSON; fields are selected as for HTTP. Exit 0 is ok; any other exit is a refusal, and
  so is output matching the plan's ``error_pattern`` (searched in stdout and stderr). A program
  driven as an action must therefore exit non-zero only when it applied nothing. An action whose
  JSON answer lacks ``expect_answer`` is ``ambiguous``; a timeout leaves an action ``ambiguous``
  (it may have done its work). Nothing raises to the engine.
"""

from __future__ import annotations

import json
import os
import re
import signal as signals
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from execution.adapters.http import Masker, compare_expected, loads, role_name, select_field
from execution.conditions import parse_duration
from execution.contract.models import Action, Confirm, JsonValue, Signal, Target
from execution.model import JSON, ActionResult, Clock, Credentials, Evidence, ReadbackResult, Role

# Inherited from the bot's environment when no base environment is injected.
DEFAULT_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")


@dataclass(frozen=True)
class Completed:
    """How a run ended. ``code`` is None when it timed out or never started (``not_started``)."""

    code: int | None
    stdout: str
    stderr: str
    not_started: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.code is None and self.not_started is None


def stdin_bytes(stdin: JsonValue) -> bytes | None:
    """What a spec's ``stdin`` writes: text as given, a mapping or list as JSON, None for nothing."""
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode()
    return json.dumps(stdin, ensure_ascii=False).encode()


def error_match(pattern: str | None, done: Completed) -> str | None:
    """The first output line that matches the declared error pattern, or None."""
    if pattern is None:
        return None
    compiled = re.compile(pattern, re.MULTILINE)
    for text in (done.stdout, done.stderr):
        found = compiled.search(text)
        if found:
            start = text.rfind("\n", 0, found.start()) + 1
            end = text.find("\n", found.end())
            return text[start : end if end >= 0 else len(text)].strip() or found.group(0)
    return None


def run_argv(argv: Sequence[str], env: Mapping[str, str], timeout_s: float, stdin: bytes | None = None) -> Completed:
    try:
        proc = subprocess.Popen(
            list(argv),
            shell=False,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # its own process group, so a timeout can kill all of it
        )
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Completed(None, "", "", not_started=f"could not start {argv[0]!r}: {reason}")
    try:
        out, err = proc.communicate(input=stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signals.SIGKILL)
        except OSError:
            proc.kill()
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return Completed(None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    return Completed(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class CommandRunner:
    """Runs ``command`` signals, actions and read-backs for targets named in the change package."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        credentials: Credentials,
        clock: Clock,
        *,
        base_env: Mapping[str, str] | None = None,
        sensitive_fields: Iterable[str] = (),
    ) -> None:
        self._targets = targets
        self._credentials = credentials
        self._clock = clock
        if base_env is None:
            base_env = {k: v for k, v in os.environ.items() if k in DEFAULT_ENV_KEYS}
        self._base_env = dict(base_env)
        self._mask = Masker(credentials, sensitive_fields)

    def _env(self, target: str, role: Role, idempotency_key: str | None = None) -> dict[str, str]:
        spec = self._targets.get(target)
        if spec is None:
            raise LookupError(f"target {target!r} is not in the change package")
        env = {k: v for k, v in self._base_env.items() if not k.startswith("STAGEHOLD_")}
        env["STAGEHOLD_TARGET"] = target
        env["STAGEHOLD_ROLE"] = role_name(role)
        if spec.url:
            env["STAGEHOLD_TARGET_URL"] = spec.url
        credential = self._credentials.for_role(role)
        if credential:
            env["STAGEHOLD_CREDENTIAL"] = credential
        if idempotency_key is not None:
            env["STAGEHOLD_IDEMPOTENCY_KEY"] = idempotency_key
        return env

    def _failure(self, what: str, done: Completed, timeout_s: float, error_pattern: str | None = None) -> str | None:
        """Why a run counts as failed (masked), or None when it succeeded."""
        if done.not_started:
            return self._mask.text(f"{what}: {done.not_started}")
        if done.timed_out:
            return self._mask.text(f"{what} timed out after {timeout_s:g}s")
        if done.code != 0:
            return self._mask.text(f"{what} exited {done.code}: {done.stderr.strip() or done.stdout.strip()}")
        matched = error_match(error_pattern, done)
        if matched is not None:
            return self._mask.text(f"{what} reported an error (error_pattern matched): {matched}")
        return None

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        spec = signal.command
        if spec is None:
            return Evidence(name, None, None, "command", error="not a command signal")
        source = self._mask.text(f"command {spec.target} {spec.argv[0]} {spec.field}")
        try:
            timeout_s = parse_duration(spec.timeout)
            done = run_argv(spec.argv, self._env(spec.target, role), timeout_s, stdin_bytes(spec.stdin))
            now = self._clock()
            failed = self._failure(spec.argv[0], done, timeout_s, spec.error_pattern)
            if failed is not None:
                return Evidence(name, None, None, source, error=failed)
            try:
                document = loads(done.stdout)
            except ValueError:
                error = self._mask.text(f"{spec.argv[0]} did not print JSON: {done.stdout.strip()}")
                return Evidence(name, None, None, source, error=error)
            found, value = select_field(document, spec.field)
            if not found:
                return Evidence(name, None, None, source)
            return Evidence(name, self._mask.value(value, spec.field), now, source)
        except Exception as exc:
            error = self._mask.text(f"read failed: {type(exc).__name__}: {exc}")
            return Evidence(name, None, None, source, error=error)

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        spec = action.command
        if spec is None:
            return ActionResult("rejected", "not a command action; nothing was run")
        what = f"{spec.target} {spec.argv[0]}"
        try:
            env = self._env(spec.target, role, idempotency_key)
        except LookupError as exc:
            return ActionResult("rejected", self._mask.text(f"{what} was not run: {exc}"))
        try:
            done = run_argv(spec.argv, env, timeout_s, stdin_bytes(spec.stdin))
        except Exception as exc:
            return ActionResult("ambiguous", self._mask.text(f"{what}: {type(exc).__name__}: {exc}"))
        if done.not_started:
            return ActionResult("rejected", self._mask.text(f"{what} was not run: {done.not_started}"))
        if done.timed_out:
            detail = f"{what} timed out after {timeout_s:g}s and was killed; outcome unknown"
            return ActionResult("ambiguous", self._mask.text(detail), response=self._output(done))
        failed = self._failure(what, done, timeout_s, spec.error_pattern)
        if failed is not None:
            return ActionResult("rejected", failed, response=self._output(done))
        if spec.expect_answer:
            try:
                problems = compare_expected(spec.expect_answer, loads(done.stdout), self._mask.field)
            except ValueError:
                problems = ["it did not print JSON"]
            if problems:
                detail = self._mask.text(f"{what} exited 0, but not that it applied: {'; '.join(problems)}", 2000)
                return ActionResult("ambiguous", detail + "; outcome unknown", response=self._output(done))
        return ActionResult("ok", f"{what} exited 0", response=self._output(done))

    def _output(self, done: Completed) -> JSON:
        text = done.stdout.strip()
        if not text:
            return None
        try:
            return self._mask.body(loads(text))
        except ValueError:
            return self._mask.text(text, limit=2000)

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        spec = confirm.command
        if spec is None:
            return ReadbackResult(None, None, "not a command read-back")
        what = f"{spec.target} {spec.argv[0]}"
        try:
            done = run_argv(spec.argv, self._env(spec.target, role), timeout_s, stdin_bytes(spec.stdin))
            failed = self._failure(what, done, timeout_s, spec.error_pattern)
            if failed is not None:
                return ReadbackResult(None, None, failed)
            try:
                document = loads(done.stdout)
            except ValueError:
                return ReadbackResult(None, None, self._mask.text(f"{what} did not print JSON: {done.stdout}"))
            observed = self._mask.body(document)
            problems = compare_expected(spec.expect, document, self._mask.field)
            if problems:
                return ReadbackResult(False, observed, self._mask.text(f"{what}: " + "; ".join(problems), 2000))
            return ReadbackResult(True, observed, f"{what} matches {len(spec.expect)} field(s)")
        except Exception as exc:
            return ReadbackResult(None, None, self._mask.text(f"read-back failed: {type(exc).__name__}: {exc}"))
