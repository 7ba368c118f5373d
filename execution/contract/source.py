"""Read a YAML document into plain data, remembering the line of every value.

Rules: input is UTF-8 text of at most ``MAX_BYTES``; a single document; anchors/aliases and merge
keys are refused (they are how "billion laughs" documents multiply); duplicate keys are refused
(YAML would silently keep the last one); nesting deeper than ``MAX_DEPTH`` is refused. Every
failure is a ``SourceError`` carrying the line, never an exception from the parser.

Scalars follow the YAML 1.2 core schema, not PyYAML's default YAML 1.1: only ``true``/``false``
(``True``, ``TRUE``, ``False``, ``FALSE``) are booleans, so ``two_person: no`` is the text "no"
(which the model then refuses) and a stage may be called ``off``; ``012`` is twelve, not octal;
timestamps stay text for the model to parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
import yamlcore  # type: ignore[import-untyped,unused-ignore]

MAX_BYTES = 1_048_576
MAX_DEPTH = 40
MAX_NODES = 50_000

PathKey = tuple[str | int, ...]

# ``pass: >= 0.99`` written without quotes: YAML reads '>' as a folded block and '=' as an error.
_UNQUOTED_CONDITION = re.compile(r"(?:^|[\s{,])[\w-]+:\s+(?:[<>]=?|==|!=)\s*[-+.\w]")

# yamlcore's loader is PyYAML's C composer (fast, same marks) with the core schema's resolvers
# and constructors; it needs PyYAML built with libyaml, as every PyYAML wheel is.
_Loader: Any = yamlcore.CCoreLoader


class SourceError(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Document:
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


class _Builder:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.lines: dict[PathKey, int] = {}
        self.seen: set[int] = set()
        self.count = 0

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        line = node.start_mark.line + 1
        if id(node) in self.seen:
            raise SourceError("YAML anchors and aliases are not allowed", line)
        self.seen.add(id(node))
        self.count += 1
        if self.count > MAX_NODES:
            raise SourceError(f"document has more than {MAX_NODES} values", line)
        if depth > MAX_DEPTH:
            raise SourceError(f"document is nested deeper than {MAX_DEPTH} levels", line)
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise SourceError("YAML merge keys (<<) are not allowed", key_line)
                if not isinstance(key_node, yaml.ScalarNode):
                    raise SourceError("mapping keys must be plain text", key_line)
                key = key_node.value
                if key in out:
                    raise SourceError(f"duplicate key '{key}'", key_line)
                out[key] = self.build(value_node, (*path, key), depth + 1)
                self.lines[(*path, key)] = key_line
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise SourceError(f"cannot read value: {getattr(exc, 'problem', exc)}", line) from None
            except (ValueError, OverflowError, LookupError):
                # An explicit tag the value does not fit (``!!int x``, ``!!bool no``).
                raise SourceError(f"cannot read value: {node.value!r} does not fit its tag {node.tag}", line) from None
        raise SourceError("unsupported YAML node", line)  # pragma: no cover


def parse_yaml(raw: bytes) -> Document:
    if len(raw) > MAX_BYTES:
        raise SourceError(f"file is {len(raw)} bytes; the limit is {MAX_BYTES}")
    if b"\x00" in raw:
        raise SourceError("file is binary (contains NUL bytes), not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError("file is not UTF-8 text", raw[: exc.start].count(b"\n") + 1) from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SourceError("file is empty", 1)
        builder = _Builder(loader)
        data = builder.build(root, (), 0)
        return Document(data, builder.lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = mark.line + 1 if mark is not None else None
        lines = text.splitlines()
        hint = ""
        if mark is not None and mark.line < len(lines) and _UNQUOTED_CONDITION.search(lines[mark.line]):
            hint = '; quote conditions, e.g. pass: ">= 0.99" (unquoted, a leading > or = is YAML syntax)'
        raise SourceError(f"not valid YAML: {exc.problem or exc.context}{hint}", where) from None
    except yaml.reader.ReaderError as exc:
        # The reader reports a character position, not a mark, and its own text runs over two
        # lines ("...\n  in <unicode string>, position N"): give the line and one line of text,
        # or the problem cannot be printed as ``file:line: path: message``.
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        line = text.count("\n", 0, max(0, exc.position)) + 1
        raise SourceError(f"not valid YAML: character #x{code:04x} is not allowed ({exc.reason})", line) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"not valid YAML: {first}") from None
    except RecursionError:
        raise SourceError(f"document is nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
