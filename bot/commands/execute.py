"""``stagehold rehearse | run | resume | release | rollback | hold | abandon``.

Releases, rollbacks, holds and abandoning from the command line are for rehearsals only: a live
execution takes them from authenticated Slack users, because a terminal cannot prove who is typing.
Every command here verifies the execution's chain before it appends (exit 1 if it does not).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import exits
from bot.clock import utc_now
from bot.commands.arguments import db_option, execution_argument, reason_text, user_id
from execution.sandbox_faults import FAULTS, MODES
from ledger.chain import export_line
from ledger.entry import Entry
from ledger.store import Lease

if TYPE_CHECKING:
    from bot.bootstrap import Runtime
    from execution.approvals import ApprovalReport
    from execution.contract import LoadedChange
    from execution.contract.models import Plan
    from execution.model import Credentials
    from execution.project import State
    from execution.sandbox import Sandbox
    from execution.service import CommandOutcome, Engine

# Rehearsal speed: each bundled example finishes within a minute at this compression.
DEFAULT_SPEED = 120.0
FAULT_HELP = f"one of: {', '.join(FAULTS)}, or signal:NAME={'|'.join(MODES)}"
LIVE_ONLY = "a live execution takes releases, rollbacks and holds from authenticated Slack users; the command line cannot prove who is typing"
ABANDON_LIVE = (
    "a live execution is not abandoned from the command line: the command line cannot prove who is typing, "
    "and abandoning leaves the live system exactly as it is. Roll it back or hold it from Slack, where the "
    "person is authenticated"
)


def _out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help="write state.json, ledger.jsonl and, when stopped, packet.json/md here")


def _fault_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT[@STAGE]",
        help=f"switch a sandbox fault on now, or just before STAGE (repeatable): {FAULT_HELP}",
    )


def _auto_release_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--auto-release",
        action="store_true",
        help="release routine protected holds whose evidence all passes, as the authorities would",
    )


def _quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="print only the summary, not the run log")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("rehearse", help="run a package's plan against the sandbox target")
    r.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    r.add_argument("--sandbox", metavar="URL", help="a running sandbox (default: start a private one on loopback)")
    _auto_release_arg(r)
    _fault_arg(r)
    db_option(r)
    _out_arg(r)
    r.add_argument(
        "--speed",
        type=float,
        default=DEFAULT_SPEED,
        metavar="N",
        help=f"compress plan durations (default {DEFAULT_SPEED:g})",
    )
    r.add_argument(
        "--as", dest="as_user", type=user_id, metavar="USER", help="initiator (default: the first initiate user)"
    )
    r.add_argument("--execution-id", help=argparse.SUPPRESS)
    _quiet_arg(r)
    r.set_defaults(handler=cmd_rehearse)

    run = sub.add_parser("run", help="drive a live execution against the package's real targets")
    run.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    run.add_argument(
        "--as", dest="as_user", type=user_id, required=True, metavar="USER", help="the authorised initiator"
    )
    db_option(run)
    _out_arg(run)
    run.set_defaults(handler=cmd_run)

    res = sub.add_parser("resume", help="reconcile an execution against live state and drive it on")
    execution_argument(res)
    res.add_argument("--sandbox", metavar="URL", help="for a rehearsal: the running sandbox it ran against")
    _auto_release_arg(res)
    _fault_arg(res)
    db_option(res)
    _out_arg(res)
    _quiet_arg(res)
    res.set_defaults(handler=cmd_resume)

    rel = sub.add_parser("release", help="release the open hold of a rehearsal (live: from Slack)")
    execution_argument(rel)
    rel.add_argument(
        "--as", dest="as_user", type=user_id, required=True, metavar="USER", help="the releasing authority"
    )
    rel.add_argument("--hold", metavar="HOLD", help="hold id, e.g. H2 (default: the open hold)")
    rel.add_argument(
        "--evidence-version",
        dest="version",
        type=int,
        metavar="N",
        help="the evidence version the release is bound to (default: the hold's current one)",
    )
    db_option(rel)
    rel.set_defaults(handler=cmd_release)

    for name, what, handler in (
        ("rollback", "order a rollback of a rehearsal (live: from Slack)", cmd_rollback),
        ("hold", "place a manual hold on a rehearsal (live: from Slack)", cmd_hold),
        ("abandon", "end a rehearsal nobody will finish, with a reason; frees its change", cmd_abandon),
    ):
        p = sub.add_parser(name, help=what)
        execution_argument(p)
        p.add_argument("--as", dest="as_user", type=user_id, required=True, metavar="USER", help="who is asking")
        p.add_argument("--reason", type=reason_text, required=True, metavar="TEXT", help="why, recorded in the ledger")
        db_option(p)
        p.set_defaults(handler=handler)


# ---------------------------------------------------------------- helpers


def _parse_faults(
    specs: list[str], change_stages: list[str], plan: Plan | None = None
) -> tuple[set[str], dict[str, set[str]]]:
    from execution.sandbox_world import World

    now: set[str] = set()
    later: dict[str, set[str]] = {}
    world = World()
    if plan is not None:
        world.learn(plan)
    for spec in specs:
        name, _, stage = spec.partition("@")
        if name.startswith("signal:"):
            signal, _, mode = name.removeprefix("signal:").partition("=")
            if not mode:
                why: str | None = f"expected signal:NAME=MODE with MODE one of {', '.join(MODES)}"
            elif plan is not None and signal not in plan.signals:
                why = f"the plan has no signal '{signal}' (signals: {', '.join(sorted(plan.signals))})"
            else:
                why = world.refuses(signal, mode) if plan is not None else None
            if why:
                raise ValueError(f"fault '{spec}': {why}")
        elif name not in FAULTS:
            raise ValueError(f"unknown fault '{name}'; known: {', '.join(FAULTS)}, signal:NAME=MODE")
        if stage:
            if stage not in change_stages:
                raise ValueError(
                    f"fault '{spec}': the plan has no stage '{stage}' (stages: {', '.join(change_stages)})"
                )
            later.setdefault(stage, set()).add(name)
        else:
            now.add(name)
    return now, later


class FaultSchedule:
    """Switch faults on when the execution is about to enter a named stage."""

    def __init__(self, sandbox_faults: Any, later: dict[str, set[str]], stages: list[str]) -> None:
        self.set = sandbox_faults
        self.later = later
        self.stages = stages
        self.done: set[str] = set()

    def __call__(self, execution_id: str, entries: list[Entry] | Any) -> None:
        for entry in entries:
            if entry.kind == "execution.started":
                self._arm(self.stages[0])
            elif entry.kind == "stage.passed":
                index = int(entry.body["index"]) + 1
                if index < len(self.stages):
                    self._arm(self.stages[index])

    def catch_up(self, state: State) -> None:
        """Switch on now what a resumed rehearsal is already past the moment for.

        The process that entered (or is about to enter) the stage in focus may have died before it
        switched that stage's faults on, or between two of them; a resume only hears of stages that
        pass from now on, so without this the rest of the rehearsal would run without them.
        """
        for index, stage in enumerate(self.stages):
            if index <= state.current:
                self._arm(stage)

    def _arm(self, stage: str) -> None:
        if stage in self.later and stage not in self.done:
            self.done.add(stage)
            for name in sorted(self.later[stage]):
                self.set(name)


def _post_fault(url: str, client: Any) -> Any:
    def add(name: str) -> None:
        client.post(f"{url}/faults", json={"add": [name]}, timeout=5.0)

    return add


def write_outputs(out: str, state: State, entries: list[Entry]) -> list[Path]:
    from execution.outputs import intervention_packet, state_record
    from templates import render

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    record = directory / "state.json"
    record.write_text(json.dumps(state_record(state, entries), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(record)
    ledger = directory / "ledger.jsonl"
    with ledger.open("w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(export_line(entry))
    written.append(ledger)
    packet = intervention_packet(state, entries)
    for stale in ("packet.json", "packet.md"):
        with suppress(FileNotFoundError):
            (directory / stale).unlink()
    if packet is not None:
        pj = directory / "packet.json"
        pj.write_text(json.dumps(packet, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        pm = directory / "packet.md"
        pm.write_text(render("packet.md.j2", packet=packet), encoding="utf-8")
        written += [pj, pm]
    return written


def _summary(state: State, code: int, written: list[Path]) -> None:
    from execution.hold_kinds import meaning

    stages = ", ".join(f"{s.id}={s.status}" for s in state.stages)
    print(f"\n{state.execution_id}: {state.status().upper()} (exit {code})")
    print(f"  stages: {stages}")
    if state.hold is not None:
        print(f"  open hold {state.hold.id} ({state.hold.kind}: {meaning(state.hold.kind)}): {state.hold.reason}")
    elif state.outcome_reason:
        print(f"  reason: {state.outcome_reason}")
    if written:
        print("  outputs:")
        labels = {
            "state.json": "checkpointed execution state record",
            "ledger.jsonl": "verification and rollback ledger",
            "packet.json": "intervention packet (JSON)",
            "packet.md": "intervention packet (Markdown)",
        }
        for path in written:
            print(f"    {labels.get(path.name, path.name):<38} {path}")


@contextmanager
def _rehearsal_target(url: str | None) -> Iterator[tuple[str, Credentials, Sandbox | None]]:
    from execution.model import Credentials, Role
    from execution.sandbox import Sandbox

    if url:
        yield url.rstrip("/"), Credentials({}), None
        return
    import secrets

    tokens = {role: secrets.token_urlsafe(16) for role in ("executor", "rollback", "preflight", "verifier")}
    sandbox = Sandbox(tokens=tokens).start()
    creds = Credentials(
        {
            Role.EXECUTOR: tokens["executor"],
            Role.ROLLBACK: tokens["rollback"],
            Role.PREFLIGHT: tokens["preflight"],
            Role.VERIFIER: tokens["verifier"],
        }
    )
    try:
        yield sandbox.url, creds, sandbox
    finally:
        sandbox.stop()


def _load(path: str) -> LoadedChange | None:
    from execution.contract import InvalidChange, load_change

    try:
        return load_change(path)
    except InvalidChange as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _approvals(change: LoadedChange, keyring: str | None) -> ApprovalReport | None:
    """The package's signed approvals against the keyring (None: no keyring). Raises ``InvalidChange``."""
    from bot.keys import approvals_checker

    return approvals_checker(keyring, utc_now)(change)


def _refused_unapproved(change: LoadedChange, report: ApprovalReport | None) -> bool:
    """Print why a live run may not start on these approvals; False when it may."""
    from execution.approvals import refusal

    why = refusal(report)
    if why is None:
        return False
    print(f"stagehold: refused: {change.package.id} {why}", file=sys.stderr)
    for s in report.signatures if report is not None else ():
        if s.status != "valid":
            print(f"  {s.describe()}", file=sys.stderr)
    print(
        "  a live run needs its signed approvals (stagehold validate shows them); a rehearsal may run unsigned",
        file=sys.stderr,
    )
    return True


# ---------------------------------------------------------------- commands


def cmd_rehearse(args: argparse.Namespace) -> int:
    from bot.bootstrap import open_runtime
    from bot.commands.reading import database_url
    from bot.console import ConsolePrinter
    from bot.driver import drive
    from bot.settings import SettingsError, load_settings
    from execution.adapters.sandboxed import teach
    from execution.commands import StartRefused
    from execution.contract import InvalidChange

    change = _load(args.package)
    if change is None:
        return exits.INVALID
    if not args.speed > 0:
        print("stagehold: --speed must be greater than zero", file=sys.stderr)
        return exits.INVALID
    stages = [s.id for s in change.plan.stages]
    try:
        now_faults, later = _parse_faults(args.fault, stages, change.plan)
        runtime = open_runtime(database_url(args))
    except (ValueError, SettingsError) as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    try:
        report = _approvals(change, load_settings().keyring)
    except (InvalidChange, SettingsError) as exc:
        runtime.close()
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    initiator = args.as_user or (change.package.authorities.initiate.users or ["U0REHEARSAL"])[0]
    groups = (
        ()
        if args.as_user or change.package.authorities.initiate.users
        else tuple(change.package.authorities.initiate.groups[:1])
    )
    with runtime, _rehearsal_target(args.sandbox) as (url, creds, sandbox):
        client = runtime.client
        if sandbox is not None:
            sandbox.learn(change.plan)
        elif (refused := teach(client, url, change.plan)) is not None:
            print(f"stagehold: the sandbox at {url} did not take the plan: {refused}", file=sys.stderr)
            return exits.INVALID
        add_fault = sandbox.add_fault if sandbox is not None else _post_fault(url, client)
        for name in sorted(now_faults):
            add_fault(name)
        listeners: list[Any] = [FaultSchedule(add_fault, later, stages)]
        if not args.quiet:
            listeners.insert(0, ConsolePrinter())
        engine = runtime.engine(runtime.connector(creds, url), listeners=listeners)
        print(f"rehearsal of {change.package.id} against the sandbox at {url} (durations compressed x{args.speed:g})")
        try:
            state = engine.start(
                change,
                initiator,
                groups,
                mode="rehearsal",
                speed=args.speed,
                execution_id=args.execution_id,
                exclusive=sandbox is None,  # a private sandbox shares nothing with other rehearsals
                approvals=report.record() if report is not None else None,
            )
        except StartRefused as exc:
            print(f"stagehold: refused: {exc}", file=sys.stderr)
            return exits.INVALID
        state = drive(engine, state.execution_id, auto_release=args.auto_release)
        return _finish(engine, state, args.out)


def _finish(engine: Engine, state: State, out: str | None) -> int:
    # A foreground run is over: hand the lease back so `resume` (or the bot) can take the
    # execution over now instead of waiting for the lease to lapse.
    from bot.driver import exit_code

    engine.let_go(state.execution_id)
    code = exit_code(state)
    written = write_outputs(out, state, engine.entries(state.execution_id)) if out else []
    _summary(state, code, written)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from bot.bootstrap import open_runtime
    from bot.console import ConsolePrinter
    from bot.driver import drive
    from bot.settings import SettingsError, load_settings
    from execution.commands import StartRefused
    from execution.contract import InvalidChange

    change = _load(args.package)
    if change is None:
        return exits.INVALID
    try:
        settings = load_settings()
        settings.require(
            "STAGEHOLD_CREDENTIAL_PREFLIGHT",
            "STAGEHOLD_CREDENTIAL_EXECUTOR",
            "STAGEHOLD_CREDENTIAL_VERIFIER",
            "STAGEHOLD_CREDENTIAL_ROLLBACK",
        )
        report = _approvals(change, settings.keyring)
        if _refused_unapproved(change, report):
            return exits.INVALID
        runtime = open_runtime(args.db or settings.database_url, settings.http_timeout_s)
    except (SettingsError, InvalidChange) as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    with runtime:
        engine = runtime.engine(
            runtime.connector(settings.credentials(), read_timeout_s=settings.http_timeout_s),
            listeners=[ConsolePrinter()],
        )
        try:
            assert report is not None
            state = engine.start(change, args.as_user, (), mode="live", approvals=report.record())
        except StartRefused as exc:
            print(f"stagehold: refused: {exc}", file=sys.stderr)
            return exits.INVALID
        state = drive(engine, state.execution_id)
        return _finish(engine, state, args.out)


def _open(args: argparse.Namespace) -> tuple[Runtime, Engine, State] | int:
    """The runtime, an engine over its ledger and the execution's state, verified; or the exit
    code why not (and then nothing is left open). The caller closes the runtime."""
    from bot.bootstrap import open_runtime
    from bot.commands.reading import Tampered, database_url, read_execution
    from bot.settings import SettingsError
    from execution.model import Credentials

    try:
        runtime = open_runtime(database_url(args))
    except SettingsError as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    read = read_execution(runtime.store, args.execution)
    if isinstance(read, Tampered):
        runtime.close()
        print(
            f"stagehold: refused: the ledger of {args.execution} does not verify at {read.where}; "
            "nothing was appended ('stagehold status' says more)",
            file=sys.stderr,
        )
        return exits.TAMPERED
    if read.state.plan is None:
        runtime.close()
        print(f"stagehold: no execution {args.execution!r} in the ledger (see 'stagehold list')", file=sys.stderr)
        return exits.INVALID
    engine = runtime.engine(runtime.connector(Credentials({})))
    return runtime, engine, engine.load(args.execution)


def cmd_resume(args: argparse.Namespace) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    runtime, engine, state = opened
    with runtime:
        return _resume(args, runtime, engine, state)


def _resume(args: argparse.Namespace, runtime: Runtime, engine: Engine, state: State) -> int:
    from bot.console import ConsolePrinter
    from bot.driver import drive
    from bot.settings import SettingsError, load_settings
    from execution.adapters.sandboxed import teach
    from execution.model import Credentials

    if state.terminal:
        return _finish(engine, state, args.out)
    try:
        settings = load_settings()
        if state.mode == "live":
            if args.sandbox:
                print("stagehold: a live execution cannot be resumed against a sandbox", file=sys.stderr)
                return exits.INVALID
            creds = settings.credentials()
            url = None
        else:
            if not args.sandbox:
                print("stagehold: a rehearsal resumes against a running sandbox: give --sandbox URL", file=sys.stderr)
                return exits.INVALID
            creds, url = Credentials({}), args.sandbox.rstrip("/")
        stages = [s.id for s in state.stages]
        now_faults, later = _parse_faults(args.fault, stages, state.plan)
    except (SettingsError, ValueError) as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    client = runtime.client
    if url and state.plan is not None and (refused := teach(client, url, state.plan)) is not None:
        print(f"stagehold: the sandbox at {url} did not take the plan: {refused}", file=sys.stderr)
        return exits.INVALID
    add_fault = _post_fault(url, client) if url else (lambda name: None)
    for name in sorted(now_faults):
        add_fault(name)
    schedule = FaultSchedule(add_fault, later, stages)
    schedule.catch_up(state)
    listeners: list[Any] = [schedule]
    if not args.quiet:
        listeners.insert(0, ConsolePrinter())
    engine = runtime.engine(runtime.connector(creds, url), listeners=listeners)
    engine.resume(state.execution_id)
    state = drive(engine, state.execution_id, auto_release=args.auto_release)
    return _finish(engine, state, args.out)


def _rehearsal_only(state: State, why: str = LIVE_ONLY) -> bool:
    if state.mode == "live":
        print(f"stagehold: refused: {why}", file=sys.stderr)
        return False
    return True


def _lease(engine: Engine, execution_id: str) -> Lease | None:
    from ledger.sql import SqlLedgerStore

    store = engine.store
    return store.lease(execution_id) if isinstance(store, SqlLedgerStore) else None


def _report(engine: Engine, outcome: CommandOutcome) -> int:
    """What the command recorded, then where the execution stands now and the next step."""
    from bot.lifecycle import view

    for entry in outcome.entries:
        reason = entry.body.get("reason") or ""
        print(f"{entry.kind} by {entry.actor}" + (f": {reason}" if reason else ""))
    state = outcome.state
    if outcome.effective and state.plan is not None:
        seen = view(state, _lease(engine, state.execution_id), utc_now())
        print(f"now: {seen.word}" + (f" — {seen.driver.detail}" if seen.driver and not seen.driver.driven else ""))
        print(f"next: {seen.next_step}")
    return exits.OK if outcome.effective else exits.INVALID


def cmd_release(args: argparse.Namespace) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    runtime, engine, state = opened
    with runtime:
        return _release(args, engine, state)


def _release(args: argparse.Namespace, engine: Engine, state: State) -> int:
    if not _rehearsal_only(state):
        return exits.INVALID
    hold_id = args.hold or state.open_hold
    if hold_id is None:
        print(f"stagehold: {state.execution_id} has no open hold", file=sys.stderr)
        return exits.INVALID
    version = (
        args.version
        if args.version is not None
        else state.holds[hold_id].evidence_version
        if hold_id in state.holds
        else 1
    )
    return _report(engine, engine.release(state.execution_id, hold_id, version, args.as_user))


def _rehearsal_command(
    args: argparse.Namespace, act: Callable[[Engine, State], CommandOutcome | int], why: str = LIVE_ONLY
) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    runtime, engine, state = opened
    with runtime:
        if not _rehearsal_only(state, why):
            return exits.INVALID
        outcome = act(engine, state)
        return outcome if isinstance(outcome, int) else _report(engine, outcome)


def cmd_rollback(args: argparse.Namespace) -> int:
    return _rehearsal_command(
        args, lambda engine, state: engine.rollback(state.execution_id, args.as_user, args.reason)
    )


def cmd_hold(args: argparse.Namespace) -> int:
    return _rehearsal_command(args, lambda engine, state: engine.hold(state.execution_id, args.as_user, args.reason))


def cmd_abandon(args: argparse.Namespace) -> int:
    """A rehearsal nobody will finish: record who ended it and why, and free its change.

    Refused while a process drives it (stop that process first, or hold it), and for live
    executions: the command line cannot prove who is typing, and abandoning leaves the live system
    exactly as it is — a live execution ends by completing, rolling back, or a human taking over.
    """
    from bot.lifecycle import driver

    def act(engine: Engine, state: State) -> CommandOutcome | int:
        drv = driver(state, _lease(engine, state.execution_id), utc_now())
        if drv.driven and not state.terminal:
            print(
                f"stagehold: refused: {state.execution_id} is {drv.detail} now; stop that process first "
                f"(or hold it: stagehold hold {state.execution_id} --as USER --reason TEXT)",
                file=sys.stderr,
            )
            return exits.INVALID
        return engine.abandon(state.execution_id, args.as_user, args.reason)

    return _rehearsal_command(args, act, ABANDON_LIVE)
