"""Whatever a package or plan file contains, ``stagehold validate`` answers 0 or 2 with a message.

It never raises, never hangs on a YAML bomb and never reads more than it must. Budget: the whole
module runs in well under 30 seconds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "package.yaml").is_file())
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Path_ = tuple[str | int, ...]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def validate(package: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(package)])
    stdout, stderr = out.getvalue(), err.getvalue()
    assert code in (0, 2), (code, stdout, stderr)
    if code == 2:
        lines = stderr.splitlines()
        assert len(lines) >= 2, stderr
        assert re.fullmatch(r"invalid: \d+ problems?", lines[-1]), stderr
        assert all(line.strip() for line in lines), stderr
        assert "Traceback" not in stderr
        assert stdout == ""
    else:
        assert stdout.startswith("valid: ")
    return code, stdout, stderr


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_pair(folder: Path, package_text: str, plan: bytes, *, fix_digest: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fix_digest:
        package_text = re.sub(r'plan_sha256: "[0-9a-f]*"', f'plan_sha256: "{sha256(plan)}"', package_text)
    (folder / "plan.yaml").write_bytes(plan)
    (folder / "package.yaml").write_text(package_text, encoding="utf-8")
    return folder / "package.yaml"


def example_text(name: str, which: str) -> str:
    return (EXAMPLES / name / f"{which}.yaml").read_text(encoding="utf-8")


# ---------------------------------------------------------------- random bytes and text

YAML_TOKENS = [
    *":-[]{},&*!|>'\"%@`#?\n\t ",
    *["stages", "signals", "id", "plan", "true", "null", "~", "1", "0.5", "1e9", "<<", "---", "...", "  "],
]
yamlish = st.lists(st.sampled_from(YAML_TOKENS), max_size=150).map("".join)


@FUZZ
@given(text=yamlish, as_plan=st.booleans())
def test_random_yamlish_text(workdir: Path, text: str, as_plan: bool) -> None:
    if as_plan:
        package = write_pair(workdir / "yamlish-plan", example_text("payments-cutover", "package"), text.encode())
    else:
        package = workdir / "yamlish.yaml"
        package.write_text(text, encoding="utf-8")
    assert validate(package)[0] == 2


@FUZZ
@given(data=st.binary(max_size=2000), as_plan=st.booleans())
def test_binary_junk(workdir: Path, data: bytes, as_plan: bool) -> None:
    if as_plan:
        package = write_pair(workdir / "binary-plan", example_text("sorter-routing", "package"), data)
    else:
        package = workdir / "binary.yaml"
        package.write_bytes(data)
    assert validate(package)[0] == 2


@FUZZ
@given(at=st.integers(min_value=0), junk=st.sampled_from([b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc"]))
def test_nul_bytes_and_invalid_utf8_inside_a_valid_file(workdir: Path, at: int, junk: bytes) -> None:
    for which in ("package", "plan"):
        raw = example_text("treasury-promotion", which).encode()
        pos = at % (len(raw) + 1)
        damaged = raw[:pos] + junk + raw[pos:]
        folder = workdir / f"junk-{which}"
        if which == "plan":
            package = write_pair(folder, example_text("treasury-promotion", "package"), damaged)
        else:
            package = write_pair(folder, "", example_text("treasury-promotion", "plan").encode(), fix_digest=False)
            package.write_bytes(damaged)
        code, _, err = validate(package)
        assert code == 2
        assert "binary" in err or "UTF-8" in err


# ---------------------------------------------------------------- size, depth and bombs


def test_huge_package_over_one_mebibyte(workdir: Path) -> None:
    package = workdir / "huge.yaml"
    package.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\nstagehold: 1\n")
    code, _, err = validate(package)
    assert code == 2 and "the limit is 1048576" in err


def test_huge_plan_over_one_mebibyte(workdir: Path) -> None:
    plan = example_text("payments-cutover", "plan").encode() + b"\n#" + b"y" * (1024 * 1024) + b"\n"
    package = write_pair(workdir / "huge-plan", example_text("payments-cutover", "package"), plan)
    code, _, err = validate(package)
    assert code == 2 and "the limit is 1048576" in err


def test_file_of_many_megabytes_is_not_read_whole(workdir: Path) -> None:
    package = workdir / "bigger.yaml"
    with package.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    code, _, err = validate(package)
    assert code == 2 and ("limit" in err or "binary" in err)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100 + "]" * 100,
        "[" * 200_000 + "]" * 200_000,
        "{a: " * 50_000 + "1" + "}" * 50_000,
        "".join(f"{'  ' * i}k{i}:\n" for i in range(60)) + "  " * 60 + "v\n",
        "- " * 5000 + "x\n",
    ],
    ids=["flow-100", "flow-200k", "mapping-50k", "block-60", "dashes-5000"],
)
def test_deep_nesting(workdir: Path, text: str) -> None:
    package = workdir / "deep.yaml"
    package.write_text(text, encoding="utf-8")
    code, _, err = validate(package)
    assert code == 2
    assert "nest" in err or "not valid YAML" in err


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS,
        "base: &b {x: 1}\nother:\n  <<: *b\n",
        "a: &a [1]\nb: *a\n",
        "stagehold: 1\nkind: &k change-package\nid: *k\n",
        "a: !!python/object/apply:os.system ['echo pwned']\n",
        "a: !!binary aGVsbG8=\n",
        "a: 1\na: 2\n",
        "--- 1\n--- 2\n",
        "",
        "   \n# only a comment\n",
        "? [complex, key]\n: value\n",
        "a: 2026-13-45\n",
        "a: 1e99999\n",
    ],
    ids=[
        "billion-laughs",
        "merge-key",
        "alias",
        "alias-in-package",
        "python-tag",
        "binary-tag",
        "duplicate-key",
        "two-documents",
        "empty",
        "comment-only",
        "complex-key",
        "bad-date",
        "huge-float",
    ],
)
def test_hostile_yaml(workdir: Path, text: str) -> None:
    for which in ("package", "plan"):
        if which == "package":
            package = workdir / "hostile.yaml"
            package.write_text(text, encoding="utf-8")
        else:
            package = write_pair(workdir / "hostile-plan", example_text("payments-cutover", "package"), text.encode())
        assert validate(package)[0] == 2


# ---------------------------------------------------------------- wrong types in every field


def leaves(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from leaves(v, (*path, i))


def replaced(data: Any, path: Path_, value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def wrong_type_for(value: Any) -> Any:
    if isinstance(value, bool):
        return [value]
    if isinstance(value, (int, float)):
        return {"n": value}
    if isinstance(value, str):
        return [value, 1]
    if isinstance(value, list):
        return {"items": value[:1]}
    if isinstance(value, dict):
        return [1, "two"]
    return "?"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Reads like the contract loader: YAML 1.1's ``on``/``yes``/``no`` stay text (``on:`` is a key)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_LOADER: Any = _Loader
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_PARSED: dict[tuple[str, str], Any] = {}


def parsed(name: str, which: str) -> Any:
    key = (name, which)
    if key not in _PARSED:
        _PARSED[key] = yaml.load(example_text(name, which), Loader=_LOADER)
    return _PARSED[key]


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False)


def _fields(name: str, which: str) -> list[Path_]:
    return [p for p, _ in leaves(parsed(name, which)) if p]


def _write_with(folder: Path, name: str, which: str, path: Path_, value: Any) -> Path:
    package_data = parsed(name, "package")
    if which == "plan":
        plan = dump(replaced(parsed(name, "plan"), path, value)).encode()
        # Keep the approval matching so the broken field itself is what gets judged.
        package = dump({**package_data, "plan_sha256": sha256(plan)})
    else:
        plan = dump(parsed(name, "plan")).encode()
        fixed = {**package_data, "plan_sha256": sha256(plan)}
        package = dump(replaced(fixed, path, value))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.yaml").write_bytes(plan)
    (folder / "package.yaml").write_text(package, encoding="utf-8")
    return folder / "package.yaml"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_rewritten_example_is_still_valid(workdir: Path, name: str) -> None:
    """The baseline for the two tests below: only the injected value makes a variant invalid."""
    package_id = parsed(name, "package")["id"]
    code, out, _ = validate(_write_with(workdir / f"baseline-{name}", name, "package", ("id",), package_id))
    assert code == 0, out


@pytest.mark.parametrize("which", ["package", "plan"])
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_wrong_type_in_every_field(workdir: Path, name: str, which: str) -> None:
    originals = dict(leaves(parsed(name, which)))
    folder = workdir / f"types-{name}-{which}"
    refused = 0
    fields = _fields(name, which)
    for path in fields:
        original = originals[path]
        code, _, _ = validate(_write_with(folder, name, which, path, wrong_type_for(original)))
        refused += code == 2
    # Free-form fields (a description, an action's JSON body) may legitimately hold anything.
    assert refused >= len(fields) * 0.6, f"only {refused} of {len(fields)} wrong types were refused"


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(["2026-13-45T99:00:00Z", "between 2 and 1", "0s", "../../../etc/passwd", "/", "\x00", "C0CHANGES"]),
)


@FUZZ
@given(
    data=st.data(), name=st.sampled_from(EXAMPLE_NAMES), which=st.sampled_from(["package", "plan"]), value=odd_values
)
def test_random_value_in_a_random_field(workdir: Path, data: st.DataObject, name: str, which: str, value: Any) -> None:
    path = data.draw(st.sampled_from(_fields(name, which)))
    validate(_write_with(workdir / "random-field", name, which, path, value))


# ---------------------------------------------------------------- random deletions


@FUZZ
@given(
    name=st.sampled_from(EXAMPLE_NAMES),
    which=st.sampled_from(["package", "plan"]),
    doomed=st.sets(st.integers(min_value=0, max_value=200), min_size=1, max_size=8),
    fix_digest=st.booleans(),
)
def test_random_line_deletions(workdir: Path, name: str, which: str, doomed: set[int], fix_digest: bool) -> None:
    texts = {w: example_text(name, w) for w in ("package", "plan")}
    lines = texts[which].splitlines(keepends=True)
    texts[which] = "".join(line for i, line in enumerate(lines) if i % len(lines) not in doomed)
    package = write_pair(workdir / "deletions", texts["package"], texts["plan"].encode(), fix_digest=fix_digest)
    validate(package)


def test_validate_of_a_directory_and_of_a_missing_plan(workdir: Path) -> None:
    folder = workdir / "dir-case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    assert validate(folder)[0] == 2
    package = write_pair(folder / "x", example_text("payments-cutover", "package"), b"")
    (folder / "x" / "plan.yaml").unlink()
    (folder / "x" / "plan.yaml").mkdir()
    code, _, err = validate(package)
    assert code == 2 and "is a directory" in err
