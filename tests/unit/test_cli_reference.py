"""The README's command table, its exit-code table and ``stagehold --help`` say the same thing.

Every command in ``--help`` has a row in the README's "Command line" table and every row names a
real command; each row lists exactly that command's options and positional arguments; every
option has help text; the exit-code table matches ``bot.exits``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bot import exits
from bot.cli import build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _leaf_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    """Every runnable command ("ledger verify", "status", ...) and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: dict[str, argparse.ArgumentParser] = {}
            for name, sub in action.choices.items():
                found.update(_leaf_parsers(sub, (*prefix, name)))
            return found
    return {" ".join(prefix): parser}


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]


def _help_words(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(option names, positional metavars) a parser accepts, as ``--help`` shows them."""
    options = {a.option_strings[-1] for a in _visible(parser) if a.option_strings}
    positionals = {str(a.metavar or a.dest) for a in _visible(parser) if not a.option_strings}
    return options, positionals


def _readme_rows() -> dict[str, tuple[set[str], set[str]]]:
    """Command -> (options, positional metavars) from each row's `stagehold ...` code span."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in _section("Command line").splitlines():
        if not line.startswith("| `stagehold "):
            continue
        usage = line.split("`")[1].replace("\\|", "|")  # a | inside a table cell is written \|
        words = usage.split()[1:]
        command = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            command.append(word)
        rest = " ".join(words[len(command) :])
        options = set(re.findall(r"--[a-z][a-z-]*", rest))
        # Drop each option with its value (``[--db URL]``, ``--as USER``, ``[--fault NAME[@STAGE]]...``);
        # what is left are the positional arguments.
        leftover = re.sub(r"\[?--[a-z][a-z-]*(?: (?!--)[A-Z][A-Z_@\[\]]*)?\]*(?:\.\.\.)?", " ", rest)
        positionals = {re.sub(r"[\[\]]", "", w) for w in leftover.split()}
        assert " ".join(command) not in rows, f"README lists {' '.join(command)!r} twice"
        rows[" ".join(command)] = (options, positionals)
    return rows


def test_every_command_in_help_is_in_the_readme_table_and_back() -> None:
    in_help = set(_leaf_parsers(build_parser()))
    in_readme = set(_readme_rows())
    assert in_help - in_readme == set(), (
        "in `stagehold --help` but not in the README's command table (add a row "
        "| `stagehold COMMAND ARGS [--option VALUE]` | what it does |)"
    )
    assert in_readme - in_help == set(), "in the README's command table but not a stagehold command"


@pytest.mark.parametrize("command", sorted(_leaf_parsers(build_parser())))
def test_each_readme_row_lists_exactly_the_commands_options(command: str) -> None:
    rows = _readme_rows()
    if command not in rows:
        pytest.fail(f"{command!r} has no row in the README's command table")
    options, positionals = _help_words(_leaf_parsers(build_parser())[command])
    readme_options, readme_positionals = rows[command]
    assert readme_options == options, f"README row for {command!r}: options differ from --help"
    assert readme_positionals == positionals, f"README row for {command!r}: arguments differ from --help"


@pytest.mark.parametrize("command", sorted(_leaf_parsers(build_parser())))
def test_every_argument_and_option_has_help_text(command: str) -> None:
    parser = _leaf_parsers(build_parser())[command]
    missing = [a.option_strings[-1] if a.option_strings else a.dest for a in _visible(parser) if not a.help]
    assert missing == [], f"stagehold {command}: no help text for {missing}"
    assert parser.description or _has_summary(command), f"stagehold {command}: no one-line summary"


def _has_summary(command: str) -> bool:
    parser = build_parser()
    *parents, last = command.split()
    for name in parents:
        parser = _leaf_parent(parser, name)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return any(c.dest == last and c.help for c in action._choices_actions)
    return False


def _leaf_parent(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(name)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"stagehold \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_the_readme_exit_code_table_is_bot_exits() -> None:
    table = {}
    for line in _section("Command line").splitlines():
        found = re.match(r"\| (\d+) \| (.+) \|$", line)
        if found:
            table[int(found.group(1))] = found.group(2)
    assert set(table) == set(exits.ALL), "README exit codes differ from bot.exits"
    assert list(table) == sorted(table)
    # The help epilogue names every code too.
    epilog = build_parser().epilog or ""
    for code in exits.ALL:
        assert re.search(rf"\b{code} ", epilog), f"exit code {code} missing from `stagehold --help`"
