"""``stagehold status | packet | list | watch``: read-only views of executions.

Rules: these commands never append. Each verifies an execution's chain before saying anything
about it (TAMPERED, exit 1, otherwise). ``watch`` exits with the code of where the execution
stands once it stops moving — terminal, held, or with nothing driving it — or 124 when its
``--timeout`` passes first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot import exits
from bot.clock import utc_now
from bot.commands.arguments import db_option, execution_argument
from ledger.store import Lease

if TYPE_CHECKING:
    from bot.commands.reading import Execution, Tampered
    from bot.lifecycle import View
    from ledger.store import LedgerReader

# A stop that is not final (held, or nothing driving it) must last this long before a watch exits
# on it: a hold released a moment later by another process (--auto-release, a Slack click) or a
# `resume` started just after the watch is followed, not reported as a stop.
SETTLE_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("status", help="where an execution stands, the next step and who may take it")
    execution_argument(s)
    s.add_argument("--json", action="store_true", help="print the state record as JSON, with a 'standing' object")
    db_option(s)
    s.set_defaults(handler=cmd_status)

    p = sub.add_parser("packet", help="the intervention packet of an execution that stopped")
    execution_argument(p)
    p.add_argument("--json", action="store_true", help="print the packet as JSON instead of Markdown")
    db_option(p)
    p.set_defaults(handler=cmd_packet)

    ls = sub.add_parser("list", help="executions in the ledger: state, stage, age")
    ls.add_argument("--active", action="store_true", help="only executions that have not ended")
    ls.add_argument("--json", action="store_true", help="print one JSON object per execution, as a list")
    db_option(ls)
    ls.set_defaults(handler=cmd_list)

    w = sub.add_parser(
        "watch",
        help="follow an execution as it moves; exit with its code once it stops",
        description="Follow an execution: a line per stage transition, bake progress, each hold and its why. "
        "Exits when it stops moving (completed 0, held or nothing driving it 3, rolled back 4, needs a "
        "human 5, abandoned 6) or, with --timeout, 124 when the deadline passes first.",
    )
    execution_argument(w)
    w.add_argument(
        "--timeout",
        metavar="DURATION",
        type=_duration,
        help="give up after this long (30s, 10m, 2h) and exit 124; default: no deadline",
    )
    w.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_positive,
        default=1.0,
        help="how often to read the ledger (default 1)",
    )
    w.add_argument(
        "--through-holds",
        action="store_true",
        help="keep following while held (until it ends or the deadline passes), for holds released elsewhere",
    )
    db_option(w)
    w.set_defaults(handler=cmd_watch)


def _duration(text: str) -> float:
    from execution.conditions import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration such as 30s, 10m or 2h") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be greater than zero")
    return seconds


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError("the interval must be more than 0 and at most 3600 seconds")
    return value


# ---------------------------------------------------------------- helpers


def _store(args: argparse.Namespace) -> LedgerReader | None:
    from bot.commands.reading import open_ledger
    from bot.settings_error import SettingsError

    try:
        return open_ledger(args)
    except SettingsError as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return None


def _known(store: LedgerReader, execution_id: str) -> Execution | Tampered | None:
    from bot.commands.reading import Execution, read_execution

    read = read_execution(store, execution_id)
    if isinstance(read, Execution) and read.state.plan is None:
        print(f"stagehold: no execution {execution_id!r} in the ledger (see 'stagehold list')", file=sys.stderr)
        return None
    return read


def _report_tampered(found: Tampered, as_json: bool) -> int:
    from bot.lifecycle import tampered

    seen = tampered(found.execution_id, found.where)
    if as_json:
        print(json.dumps({"execution": found.execution_id, "standing": _standing(seen, None)}, indent=2))
    else:
        print(f"{found.execution_id}  TAMPERED: the ledger does not verify at {found.where}")
        print(f"  next: {seen.next_step}")
        print(f"  who:  {seen.who}")
    return exits.TAMPERED


def _standing(seen: View, now: datetime | None) -> dict[str, Any]:
    from templates import format_time

    return {
        "word": seen.word,
        "exit_code": seen.code,
        "stage": seen.stage,
        "driven": seen.driver.driven if seen.driver else None,
        "driver": seen.driver.detail if seen.driver else None,
        "hold": list(seen.hold_lines),
        "next": seen.next_step,
        "who": seen.who,
        "as_of": format_time(now) if now else None,
    }


# ---------------------------------------------------------------- status and packet


def _read(args: argparse.Namespace) -> tuple[Execution, Lease | None] | int:
    """The execution named by ``args``, verified and folded, with its lease; or the exit code why not."""
    from bot.commands.reading import Tampered

    store = _store(args)
    if store is None:
        return exits.INVALID
    try:
        read = _known(store, args.execution)
        if read is None:
            return exits.INVALID
        if isinstance(read, Tampered):
            return _report_tampered(read, args.json)
        return read, store.lease(args.execution)
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    from bot.console import stage_table
    from bot.lifecycle import view
    from execution.outputs import state_record
    from templates import format_age, format_time

    found = _read(args)
    if isinstance(found, int):
        return found
    read, lease = found
    now = utc_now()
    state = read.state
    seen = view(state, lease, now)
    record = state_record(state, read.entries)
    if args.json:
        record["standing"] = _standing(seen, now)
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return exits.OK
    assert state.package is not None and state.started_at is not None and state.last_ts is not None
    mode = "live" if state.mode == "live" else f"{state.mode} ×{state.speed:g}"
    print(f"{state.execution_id} · {state.package.id} · {seen.word} · {mode}")
    print(f"  {state.package.title}")
    print(
        f"  started {format_time(state.started_at)} by {state.initiator} "
        f"({format_age((now - state.started_at).total_seconds())} ago) · last entry #{state.seq} "
        f"{format_time(state.last_ts)} ({format_age((now - state.last_ts).total_seconds())} ago)"
    )
    for line in stage_table(state):
        print(f"  {line}")
    if seen.hold_lines:
        print(f"  {seen.hold_lines[0]}")
        for line in seen.hold_lines[1:]:
            print(f"    {line}")
    elif record["reason"]:
        print(f"  {record['reason']}")
    if seen.driver is not None:
        print(f"  driver: {seen.driver.detail}")
    print(f"  next: {seen.next_step}")
    print(f"  who:  {seen.who}")
    return exits.OK


def cmd_packet(args: argparse.Namespace) -> int:
    from execution.outputs import intervention_packet
    from templates import render

    found = _read(args)
    if isinstance(found, int):
        return found
    read, _ = found
    state = read.state
    packet = intervention_packet(state, read.entries)
    if packet is None:
        print(f"{state.execution_id} is {state.status()}: no intervention packet")
        return exits.OK
    print(json.dumps(packet, indent=2, ensure_ascii=False) if args.json else render("packet.md.j2", packet=packet))
    return exits.OK


# ---------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    from bot.commands.reading import Tampered, read_execution
    from bot.lifecycle import stage_in_focus, view
    from templates import format_age, format_time

    store = _store(args)
    if store is None:
        return exits.INVALID
    rows: list[dict[str, Any]] = []
    code = exits.OK
    now = utc_now()
    try:
        for execution_id in store.executions():
            read = read_execution(store, execution_id)
            if isinstance(read, Tampered):
                code = exits.TAMPERED
                rows.append({"execution": execution_id, "change": "?", "mode": "?", "state": "TAMPERED"})
                continue
            state = read.state
            if state.plan is None or state.package is None or (args.active and state.terminal):
                continue
            seen = view(state, store.lease(execution_id), now)
            assert state.started_at is not None and state.last_ts is not None
            rows.append(
                {
                    "execution": execution_id,
                    "change": state.package.id,
                    "mode": state.mode,
                    "state": seen.word,
                    "stage": stage_in_focus(state),
                    "hold": state.open_hold,
                    "started_at": format_time(state.started_at),
                    "age_s": round((now - state.started_at).total_seconds()),
                    "updated_s": round((now - state.last_ts).total_seconds()),
                }
            )
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return code
    if not rows:
        print("no active executions" if args.active else "no executions in the ledger")
        return code
    table = [("EXECUTION", "CHANGE", "MODE", "STATE", "STAGE", "AGE", "UPDATED")]
    for r in rows:
        table.append(
            (
                r["execution"],
                r["change"],
                r["mode"],
                r["state"] + (f" {r['hold']}" if r.get("hold") else ""),
                r.get("stage") or "—",
                format_age(r["age_s"]) if "age_s" in r else "—",
                f"{format_age(r['updated_s'])} ago" if "updated_s" in r else "—",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return code


# ---------------------------------------------------------------- watch


def cmd_watch(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return exits.INVALID
    try:
        return watch(
            store,
            args.execution,
            timeout_s=args.timeout,
            interval_s=args.interval,
            through_holds=args.through_holds,
            settle_s=SETTLE_S,
        )
    finally:
        store.close()


def watch(
    store: LedgerReader,
    execution_id: str,
    *,
    timeout_s: float | None = None,
    interval_s: float = 1.0,
    through_holds: bool = False,
    settle_s: float = SETTLE_S,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    out: Any = None,
) -> int:
    """Follow ``execution_id`` until it stops moving; return the exit code of where it stands."""
    from bot.commands.reading import Tampered, read_execution
    from bot.console import progress
    from bot.lifecycle import view
    from templates import format_age

    out = out or sys.stdout
    read = _known(store, execution_id)
    if read is None:
        return exits.INVALID
    if isinstance(read, Tampered):
        return _report_tampered(read, False)
    started = clock()
    deadline = started.timestamp() + timeout_s if timeout_s is not None else None
    state = read.state
    assert state.package is not None
    print(f"watching {execution_id} ({state.package.id}, {state.mode}); {len(read.entries)} entries so far", file=out)
    for entry in read.entries:
        for line in progress(entry, state, history=True):
            print(line, file=out, flush=True)
    waiting_since: tuple[tuple[str, str | None], float] | None = None  # a stop that may not be final, since
    while True:
        now = clock()
        seen = view(read.state, store.lease(execution_id), now)
        stopped = seen.code is not None and not (through_holds and seen.word in ("HELD", "NARROWED"))
        if stopped and not read.state.terminal:
            key = (seen.word, read.state.open_hold)
            if waiting_since is None or waiting_since[0] != key:
                waiting_since = (key, now.timestamp())
            stopped = now.timestamp() - waiting_since[1] >= settle_s
        else:
            waiting_since = None
        if stopped:
            assert seen.code is not None
            print(f"{execution_id}: {seen.word} (exit {seen.code})", file=out)
            if seen.driver is not None and not seen.driver.driven:
                print(f"  driver: {seen.driver.detail}", file=out)
            print(f"  next: {seen.next_step}", file=out)
            print(f"  who:  {seen.who}", file=out, flush=True)
            return seen.code
        if deadline is not None and now.timestamp() >= deadline:
            print(
                f"{execution_id}: still {seen.word} at {seen.stage or '—'} after {format_age(timeout_s or 0)} (exit "
                f"{exits.TIMED_OUT})",
                file=out,
                flush=True,
            )
            return exits.TIMED_OUT
        wait = interval_s if deadline is None else max(0.0, min(interval_s, deadline - now.timestamp()))
        sleep(wait)
        newer = read_execution(store, execution_id, after=read)
        if isinstance(newer, Tampered):
            return _report_tampered(newer, False)
        for entry in newer.entries[len(read.entries) :]:
            for line in progress(entry, newer.state):
                print(line, file=out, flush=True)
        read = newer
