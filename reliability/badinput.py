"""Family 5: bad input — generated packages, plans, slash-command texts and interaction payloads.

Packages and plans start from the bundled examples and the trial drill and are broken at random:
keys deleted, renamed or added, values of the wrong type or out of range, thresholds and durations
outside the grammar, references to stages, signals and targets that do not exist, reversed
windows, empty authorities; and at the text and file level: duplicate keys, anchors and aliases,
deep nesting, tabs, truncation, stray bytes, invalid UTF-8, binary and oversized files, a
directory or nothing where a file should be. A changed plan is usually re-pinned, so the rules
behind the digest check are reached too. Each goes through ``execution.contract.load_change``, and
one in ten also through ``stagehold validate`` in-process.

Slash-command texts go through ``handlers.parse.parse_command`` and the help card it leads to is
checked against Block Kit's limits; button and modal payloads go through ``parse_click`` and
``parse_rollback_submission``.

Invariants: nothing raises except the documented refusals; every refused package names each
problem as ``file[:line]: path: message``; ``validate`` exits 0 or 2 and never prints a traceback;
every malformed command is answered with help that says what was wrong; every payload that is not
a stagehold button is answered with the reason and binds to nothing.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import random
import re
import string
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from bot.cli import main as cli_main
from execution.contract import InvalidChange, load_change
from reliability import plans
from reliability.harness import ROOT, FamilyResult, Recorder, Size

INVARIANTS = [
    "no traceback or unexpected exception",
    "every refused package names each problem as file[:line]: path: message",
    "stagehold validate exits 0 or 2",
    "a malformed slash command is answered with help saying what was wrong (valid Block Kit)",
    "a payload stagehold did not issue is refused with a reason and binds to nothing",
]

_PROBLEM = re.compile(r"^(?P<file>[^\n]+?)(?::(?P<line>\d+))?: (?P<path>[^\n]+?): (?P<message>\S[^\n]*)$")

_WEIRD: list[Any] = [
    None,
    "",
    " ",
    0,
    -1,
    1e309,
    -5.5,
    10**30,
    True,
    [],
    {},
    [1, 2],
    {"a": 1},
    "x" * 5000,
    "é🙂\u202e",
    "< 0.01",
    "between 2 and 1",
    "5 m",
    "-3s",
    "1.5.2",
    "== maybe",
    "true",
    "null",
    "2026-13-45T99:99:99Z",
    "2026-11-28T22:00:00",
    "${HOME}",
    "{{ 7*7 }}",
    "'; DROP TABLE stagehold_ledger; --",
    "../../etc/passwd",
    "U01DANA",
    "http://",
    "javascript:alert(1)",
    "\x00\x01",
]
_BAD_THRESHOLDS = ["< ", "<<1", "== 1 2", "between 1", "between a and b", "> 1e400", "=< 3", "in [1,2]", "~1", "!"]
_BAD_DURATIONS = ["5", "m", "5 minutes", "-5m", "1e3s", "5mm", "0.5.5s", "∞", "1y", "5M"]
_REFERENCE_KEYS = ("signal", "target", "rollback_to", "plan")


def _examples() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for pkg_path in sorted((ROOT / "examples").glob("*/package.yaml")):
        pkg = yaml.safe_load(pkg_path.read_text(encoding="utf-8"))
        plan = yaml.safe_load((pkg_path.parent / pkg["plan"]).read_text(encoding="utf-8"))
        out.append((pkg, plan))
    out.append((plans.package("CHG-CRASH"), plans.crash_drill()))
    return out


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


def _mutate(doc: dict[str, Any], rng: random.Random) -> str:
    paths = _paths(doc)
    path = rng.choice(paths)
    parent, last = _parent(doc, path), path[-1]
    op = rng.choice(["delete", "weird", "weird", "unknown", "rename", "threshold", "duration", "reference", "type"])
    if op == "delete":
        del parent[last]
    elif op == "weird":
        parent[last] = copy.deepcopy(rng.choice(_WEIRD))
    elif op == "unknown" and isinstance(parent, dict):
        parent[rng.choice(["extra", "Stages", "hold_befor", "evil", "__class__"])] = rng.choice(_WEIRD[:8])
    elif op == "rename" and isinstance(parent, dict):
        parent[str(last) + rng.choice(["_", "s", "X"])] = parent.pop(last)
    elif op == "threshold":
        parent[last] = rng.choice(_BAD_THRESHOLDS)
    elif op == "duration":
        parent[last] = rng.choice(_BAD_DURATIONS)
    elif op == "reference":
        refs = [p for p in paths if p and p[-1] in _REFERENCE_KEYS]
        if refs:
            path = rng.choice(refs)
            _parent(doc, path)[path[-1]] = rng.choice(["missing", "nope", "s9", "payments-router", "settlement-batch"])
    else:
        value = parent[last]
        parent[last] = [value] if not isinstance(value, list) else {"v": value}
    return f"{op} {'.'.join(map(str, path))}"[:120]


def _semantic_breaks(pkg: dict[str, Any], rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        w = pkg.setdefault("window", {})
        w["opens"], w["closes"] = w.get("closes"), w.get("opens")
        return "window reversed"
    if choice == 1:
        pkg.setdefault("authorities", {})[rng.choice(["initiate", "release", "rollback"])] = {"users": [], "groups": []}
        return "empty authority"
    if choice == 2:
        pkg["plan_sha256"] = hashlib.sha256(b"another plan").hexdigest()
        return "digest of another plan"
    if choice == 3:
        pkg.setdefault("scope", {})["max_blast_radius"] = rng.choice([0, 1, 4])
        return "blast radius limit below the stages"
    if choice == 4:
        scope = pkg.setdefault("scope", {})
        targets = scope.get("targets") or ["x"]
        scope["protected"] = list(targets)
        return "every target protected"
    pkg["plan"] = rng.choice(["missing.yaml", "package.yaml", "/dev/null", ".", "../plan.yaml"])
    return "plan path changed"


def _text_breaks(text: str, rng: random.Random) -> tuple[bytes, str]:
    lines = text.splitlines()
    choice = rng.randrange(10)
    if choice == 0 and lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return "\n".join(lines).encode(), "line duplicated (duplicate key)"
    if choice == 1:
        return (text + "\nanchor: &a {x: 1}\nalias: *a\n").encode(), "anchor and alias"
    if choice == 2:
        depth = rng.choice([41, 60, 500])
        return (text + "\ndeep: " + "[" * depth + "]" * depth + "\n").encode(), f"nesting {depth} deep"
    if choice == 3:
        return text.replace("  ", "\t", 3).encode(), "tabs for indentation"
    if choice == 4:
        return text[: rng.randrange(max(1, len(text)))].encode(), "truncated"
    if choice == 5:
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 5)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw), "stray bytes"
    if choice == 6:
        return b"\xff\xfe" + text.encode("utf-16-le"), "UTF-16"
    if choice == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))), "binary"
    if choice == 8:
        return (text + "\n# " + "x" * (1024 * 1024 + 10) + "\n").encode(), "over 1 MiB"
    return rng.choice([b"", b"---\n", b"[]\n", b"42\n", b"~\n", b"'just a string'\n"]), "not a mapping"


class _Generator:
    def __init__(self, rng: random.Random, workdir: Path) -> None:
        self.rng = rng
        self.workdir = workdir
        self.examples = _examples()

    def change(self, n: int) -> tuple[Path, str]:
        rng = self.rng
        pkg, plan = copy.deepcopy(rng.choice(self.examples))
        directory = self.workdir / f"c{n % 64}"
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            if stale.is_file():
                stale.unlink()
            else:
                stale.rmdir()
        kind = rng.choices(
            ["plan", "package", "semantic", "text-plan", "text-package", "file"], [30, 20, 15, 15, 10, 10]
        )[0]
        what = kind
        plan_bytes = plans.dump(plan).encode()
        repin = rng.random() < 0.85
        if kind == "plan":
            what = "; ".join(_mutate(plan, rng) for _ in range(rng.randint(1, 3)))
            plan_bytes = plans.dump(plan).encode()
        elif kind == "text-plan":
            plan_bytes, what = _text_breaks(plans.dump(plan), rng)
        pkg["plan"] = "plan.yaml"
        if repin or kind not in ("plan", "text-plan"):
            pkg["plan_sha256"] = hashlib.sha256(plan_bytes).hexdigest()
        if kind == "package":
            what = "; ".join(_mutate(pkg, rng) for _ in range(rng.randint(1, 3)))
        elif kind == "semantic":
            what = _semantic_breaks(pkg, rng)
        pkg_bytes = plans.dump(pkg).encode()
        if kind == "text-package":
            pkg_bytes, what = _text_breaks(plans.dump(pkg), rng)
        (directory / "plan.yaml").write_bytes(plan_bytes)
        package = directory / "package.yaml"
        if kind == "file":
            case = rng.randrange(4)
            if case == 0:
                package.mkdir()
                what = "a directory"
            elif case == 1:
                what = "no file"
            elif case == 2:
                (directory / "plan.yaml").unlink()
                package.write_bytes(pkg_bytes)
                what = "plan file missing"
            else:
                package.write_bytes(b"x" * (4 * 1024 * 1024 + 100))
                what = "over 4 MiB"
        else:
            package.write_bytes(pkg_bytes)
        return package, f"{kind}: {what}"


def _check_change(path: Path, what: str, name: str, rec: Recorder, counts: dict[str, int], via_cli: bool) -> None:
    try:
        load_change(path)
        counts["accepted"] += 1
    except InvalidChange as exc:
        counts["refused"] += 1
        if not exc.problems:
            rec.add(name, "problems named", f"{what}: refused without naming a problem")
        for p in exc.problems:
            line = str(p)
            if "\n" in line or not _PROBLEM.match(line) or len(p.message.strip()) < 3:
                rec.add(name, "problems named", f"{what}: unclear problem line {line[:200]!r}")
    except Exception as exc:
        rec.add(name, "no traceback", f"{what}: {type(exc).__name__}: {exc}"[:300] + " " + _where(exc))
    if via_cli:
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(["validate", str(path)])
        except SystemExit as exc:
            code = int(exc.code or 0)
        except Exception as exc:
            rec.add(name, "no traceback", f"validate {what}: {type(exc).__name__}: {exc}"[:300])
            return
        counts["through stagehold validate"] += 1
        text = out.getvalue() + err.getvalue()
        if code not in (0, 2) or "Traceback" in text or "internal error" in text:
            rec.add(name, "validate exits 0 or 2", f"{what}: exit {code}: {text[-300:]!r}")
        elif code == 2 and not err.getvalue().strip():
            rec.add(name, "problems named", f"{what}: validate exited 2 without saying why")


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


# ---------------------------------------------------------------- Slack texts and payloads


_VERBS = [
    "start",
    "status",
    "hold",
    "rollback",
    "ledger",
    "help",
    "release",
    "STATUS",
    "Hold",
    "",
    "rm",
    "--help",
    "sudo",
]
_IDS = ["CHG-2041", "chg-1", "CHG 2041", "-CHG", "C" * 70, "CHG-2041/../x", "<@U01DANA>", "*CHG*", "CHG-é", "`x`", "42"]
_WORDS = ["parity", "drift", "<!channel>", "<@U02LEE>", "`rm -rf`", "*bold*", "🙂", "\u202e", "a" * 600, "\t", "public"]


def _slash_text(rng: random.Random) -> str:
    parts = [rng.choice(_VERBS)]
    for _ in range(rng.randint(0, 4)):
        parts.append(rng.choice(_IDS + _WORDS + ["".join(rng.choices(string.printable, k=rng.randint(1, 30)))]))
    sep = rng.choice([" ", "  ", "\n", "\t"])
    return sep.join(parts)


def _check_slash(text: str, name: str, rec: Recorder, counts: dict[str, int]) -> None:
    from handlers import blockkit, cards
    from handlers.parse import USAGE, Help, parse_command

    try:
        command = parse_command(text)
    except Exception as exc:
        rec.add(name, "no traceback", f"parse_command({text[:80]!r}): {type(exc).__name__}: {exc} {_where(exc)}")
        return
    words = text.split()
    if isinstance(command, Help):
        asked_for_help = not words or words[0].lower() == "help"
        if not asked_for_help and not (command.note and command.note.strip()):
            rec.add(name, "malformed command answered", f"{text[:80]!r} answered with bare help")
        counts["slash texts answered with help"] += 1
        try:
            card = cards.help_card(command.note, USAGE)
            problems = blockkit.message_problems(card.blocks, card.text)
            if problems:
                rec.add(name, "malformed command answered", f"help card for {text[:60]!r}: {problems[0]}")
        except Exception as exc:
            rec.add(name, "no traceback", f"help card for {text[:60]!r}: {type(exc).__name__}: {exc} {_where(exc)}")
    else:
        counts["slash texts parsed to a command"] += 1


def _value(rng: random.Random) -> Any:
    good = {"e": "CHG-2041-20261128T220000Z", "h": "H2", "s": "canary-25", "v": 1}
    choice = rng.randrange(8)
    if choice == 0:
        return json.dumps(good, separators=(",", ":"), sort_keys=True)  # a genuine value: must bind
    if choice == 1:
        bad = dict(good)
        bad[rng.choice(list(bad))] = rng.choice(_WEIRD)
        return json.dumps(bad)
    if choice == 2:
        bad = dict(good)
        bad["x"] = 1
        return json.dumps(bad)
    if choice == 3:
        return json.dumps({**good, "v": rng.choice([True, 0, -1, 10**7, 1.0, "1"])})
    if choice == 4:
        return rng.choice(_WEIRD)
    if choice == 5:
        return "".join(rng.choices(string.printable, k=rng.randint(0, 3000)))
    if choice == 6:
        return json.dumps([good])
    return json.dumps({**good, "h": rng.choice(["H0", "h2", "H2 ", "H1234567890", "", "H-1"])})


def _payload(rng: random.Random) -> tuple[str, dict[str, Any]]:
    from handlers import ids

    kind = rng.choice(["click", "click", "submission"])
    user: Any = (
        {"id": "U01DANA"}
        if rng.random() < 0.7
        else rng.choice([{"id": ""}, {}, None, "U01DANA", {"id": 7}, {"id": "U0" + "X" * 40}])
    )
    if kind == "click":
        action: Any = {
            "action_id": rng.choice([ids.RELEASE_ACTION, ids.ROLLBACK_ACTION, "other", None, 3]),
            "value": _value(rng),
        }
        body: dict[str, Any] = {
            "user": user,
            "actions": rng.choice([[action], [], None, action, [None], [action, action]]),
            "container": rng.choice([{"message_ts": "1.2", "channel_id": "C1"}, None, {"message_ts": 5}, "x"]),
            "channel": rng.choice([{"id": "C0CHANGES"}, None, []]),
            "trigger_id": rng.choice(["1.2.3", None, 5]),
            "response_url": rng.choice(["https://hooks.slack.com/x", None, {}]),
        }
    else:
        ref = '{"e":"CHG-2041-20261128T220000Z","h":"H2","s":"canary-25","v":1}'
        meta = rng.choice(
            [
                json.dumps({"b": json.loads(ref), "c": "C0CHANGES", "t": "1700000000.000100"}),
                json.dumps({"b": json.loads(ref), "c": "#general", "t": None}),
                json.dumps({"b": "x", "c": None, "t": None}),
                _value(rng),
                None,
            ]
        )
        reason = rng.choice(["parity drift", "", " ", "x" * 600, None, 5, "<!channel>"])
        body = {
            "user": user,
            "view": rng.choice(
                [
                    {
                        "private_metadata": meta,
                        "state": {"values": {ids.REASON_BLOCK: {ids.REASON_INPUT: {"value": reason}}}},
                    },
                    {"private_metadata": meta},
                    None,
                    "view",
                ]
            ),
        }
    for key in list(body):
        if key != "user" and rng.random() < 0.08:
            del body[key]
    return kind, body


def _check_payload(kind: str, body: dict[str, Any], name: str, rec: Recorder, counts: dict[str, int]) -> None:
    from handlers.parse import MalformedPayload, parse_click, parse_rollback_submission

    try:
        if kind == "click":
            click = parse_click(body)
            genuine = click.action in ("release", "rollback") and click.ref is not None
            if genuine:
                counts["payloads bound to a hold"] += 1
                if click.problem:
                    rec.add(name, "refused with a reason", f"a bound click also reports {click.problem!r}")
            else:
                counts["payloads refused with a reason"] += 1
                if click.ref is not None or not (click.problem and click.problem.strip()):
                    rec.add(name, "refused with a reason", f"click {json.dumps(body, default=str)[:200]} -> {click}")
        else:
            sub = parse_rollback_submission(body)
            if sub.problem is None:
                counts["payloads bound to a hold"] += 1
                if sub.context is None or not sub.reason.strip():
                    rec.add(name, "refused with a reason", f"submission accepted without context or reason: {sub}")
            else:
                counts["payloads refused with a reason"] += 1
    except MalformedPayload as exc:
        counts["payloads naming no user (refused, nobody to answer)"] += 1
        if not str(exc).strip():
            rec.add(name, "refused with a reason", "MalformedPayload without a message")
    except Exception as exc:
        rec.add(
            name,
            "no traceback",
            f"{kind} {json.dumps(body, default=str)[:160]}: {type(exc).__name__}: {exc} {_where(exc)}",
        )


class _Counts(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(size.seed)
    rec = Recorder()
    counts: dict[str, int] = _Counts()
    gen = _Generator(rng, workdir)
    n_changes = size.pick(300, 6_000)
    n_slash = size.pick(100, 2_000)
    n_payloads = size.pick(100, 2_000)
    for n in range(n_changes):
        path, what = gen.change(n)
        _check_change(path, what, f"change-{n + 1}", rec, counts, via_cli=n % 10 == 0)
        rec.trial_done()
    for n in range(n_slash):
        _check_slash(_slash_text(rng), f"slash-{n + 1}", rec, counts)
        rec.trial_done()
    for n in range(n_payloads):
        kind, body = _payload(rng)
        _check_payload(kind, body, f"payload-{n + 1}", rec, counts)
        rec.trial_done()
    notes = [
        f"{n_changes:,} packages and plans: {counts['refused']:,} refused with named problems, "
        f"{counts['accepted']:,} still valid after the change (accepted), "
        f"{counts['through stagehold validate']:,} also through `stagehold validate`",
        f"{n_slash:,} slash-command texts: {counts['slash texts answered with help']:,} answered with help, "
        f"{counts['slash texts parsed to a command']:,} parsed to a command",
        f"{n_payloads:,} interaction payloads: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k.startswith("payloads")),
    ]
    return [rec.result("bad-input", "Bad input", "inputs", INVARIANTS, notes, size, started)]
