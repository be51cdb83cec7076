"""Read YAML keeping the line and column of every key and value, and refusing duplicate keys.

``read_source(path)`` returns a :class:`Source`: the plain Python data (dicts, lists, scalars)
and a location index from paths inside the document (``("entities", "deal", "fields")``) to
``(line, col)`` of the value and of its key, both 1-based. The C parser of libyaml builds the
node tree when it is available; only the conversion to Python runs here.

Before the tree is built, one pass over the parser's events bounds what a hostile file can
cost: nesting deeper than :data:`MAX_DEPTH` levels (libyaml's composer recurses in C and
would crash the process; the conversion would hit Python's recursion limit) and more than
:data:`MAX_NODES` nodes once aliases are expanded (a "billion laughs" alias bomb: nine lines
that expand to 10**9 nodes) are refused as problems naming the line, in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import Problem

try:  # libyaml's composer is several times faster; the pure-Python one is the fallback
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


Path_ = tuple  # a path inside a document: keys and list indexes

MAX_DEPTH = 100  # nested mappings and sequences; real models stay under 15
MAX_NODES = 200_000  # nodes of a document with every alias expanded; the examples have under 2,000


@dataclass
class Source:
    """One YAML file: its data, and where each part of it stands."""

    file: str
    path: str = ""  # the resolved path it was read from (set by the loader)
    data: object = None
    values: dict = field(default_factory=dict)  # path -> (line, col) of the value
    keys: dict = field(default_factory=dict)  # path -> (line, col) of the mapping key
    problems: list = field(default_factory=list)


class _Constructor(yaml.constructor.SafeConstructor):
    """Builds scalars only; mappings and sequences are walked by :func:`_convert`."""


def read_source(path: str | Path, *, display: str | None = None) -> Source:
    """Read one YAML file. Syntax errors and duplicate keys become problems, never exceptions."""
    display = display or str(path)
    source = Source(file=display)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        source.problems.append(Problem("file.not_found", f"no such file: {display}", display, 1, 1))
        return source
    except UnicodeDecodeError as exc:  # say where, never what: the bytes may be another file's secrets
        reason = f"not UTF-8 text (an undecodable byte at position {exc.start})"
        source.problems.append(Problem("file.unreadable", f"cannot read {display}: {reason}", display, 1, 1))
        return source
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        source.problems.append(Problem("file.unreadable", f"cannot read {display}: {reason}", display, 1, 1))
        return source
    return parse_source(text, display)


def parse_source(text: str, display: str = "<string>") -> Source:
    source = Source(file=display)
    try:
        limit = _over_limits(text, display)
        if limit is not None:
            source.problems.append(limit)
            return source
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        source.problems.append(_syntax_problem(exc, display))
        return source
    except yaml.YAMLError as exc:
        source.problems.append(Problem("yaml.syntax", f"YAML error: {exc}", display, 1, 1))
        return source
    if node is None:
        source.data = None
        return source
    constructor = _Constructor()
    try:
        source.data = _convert(node, (), source, constructor)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        source.problems.append(Problem("yaml.syntax", f"YAML error: {exc.problem or exc}", display, line, col))
    return source


def _over_limits(text: str, display: str) -> Problem | None:
    """A problem when the document nests deeper than MAX_DEPTH, expands (through aliases)
    to more than MAX_NODES nodes or holds an alias to a node that contains it; else None.

    Walks the parser's events (libyaml's parser keeps its own stack: no recursion) keeping,
    per anchor, the size of its node with aliases expanded, so an alias costs one addition
    and a bomb is refused at the first alias that crosses the limit."""
    sizes: dict[str, int] = {}  # anchor -> nodes under it, aliases expanded
    stack: list[list] = []  # open collections: [anchor, nodes so far]
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                return _limit_problem(
                    "yaml.too_deep", f"nesting deeper than {MAX_DEPTH} levels is not allowed", event, display
                )
            stack.append([event.anchor, 1])
            total += 1
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
            if stack:
                stack[-1][1] += size
            continue
        if isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in stack):
                return _limit_problem(
                    "yaml.recursive_alias", f"alias *{event.anchor} refers to a node that contains it", event, display
                )
            size = sizes.get(event.anchor, 1)  # an unknown anchor: the composer reports it
        else:
            continue
        total += size
        if total > MAX_NODES:
            what = f"alias *{event.anchor} expands" if isinstance(event, yaml.AliasEvent) else "nodes expand"
            return _limit_problem(
                "yaml.too_large",
                f"{what} the document beyond {MAX_NODES:,} nodes (a YAML alias bomb?); use fewer or smaller aliases",
                event,
                display,
            )
        if stack:
            stack[-1][1] += size
    return None


def _limit_problem(kind: str, message: str, event, display: str) -> Problem:
    mark = event.start_mark
    return Problem(kind, message, display, mark.line + 1, mark.column + 1)


_UNCLOSED = {
    "while parsing a flow mapping": "'{' is not closed",
    "while parsing a flow sequence": "'[' is not closed",
    "while scanning a quoted scalar": "the quote is not closed",
}


def _syntax_problem(exc: yaml.MarkedYAMLError, display: str) -> Problem:
    """A syntax error located where the user must fix it: an unclosed brace, bracket or quote
    at its opening (libyaml only notices it lines later), anything else where it was found."""
    problem, context = exc.problem_mark, exc.context_mark
    what = exc.problem or "invalid YAML"
    unclosed = _UNCLOSED.get(exc.context or "")
    if unclosed and context is not None:
        found = f" (found at line {problem.line + 1}: {what})" if problem is not None else ""
        return Problem(
            "yaml.syntax", f"YAML syntax error: {unclosed}{found}", display, context.line + 1, context.column + 1
        )
    mark = problem or context
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    where = f" {exc.context}" if exc.context else ""
    return Problem("yaml.syntax", f"YAML syntax error: {what}{where}", display, line, col)


def _mark(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _convert(node, path: tuple, source: Source, constructor: _Constructor):
    source.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)  # resolves `<<:` merge keys
        result: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = _mark(key_node)
                source.problems.append(
                    Problem("yaml.key", "a mapping key must be a plain value", source.file, line, col, loc=path)
                )
                continue
            key = _scalar(key_node, source, constructor)
            if not isinstance(key, str):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            child = (*path, key)
            if key in result:
                line, col = _mark(key_node)
                first_line = source.keys[child][0]
                source.problems.append(
                    Problem(
                        "yaml.duplicate_key",
                        f"duplicate key '{key}' (first defined on line {first_line})",
                        source.file,
                        line,
                        col,
                        loc=child,
                    )
                )
                continue
            source.keys[child] = _mark(key_node)
            result[key] = _convert(value_node, child, source, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), source, constructor) for i, item in enumerate(node.value)]
    return _scalar(node, source, constructor)


def _scalar(node, source: Source, constructor: _Constructor):
    """A scalar's value; one that its tag cannot build (``2020-13-01`` read as a date,
    ``!!int abc``) is a problem at the value, and stays text."""
    try:
        return constructor.construct_object(node)
    except (ValueError, OverflowError) as exc:
        line, col = _mark(node)
        kind = node.tag.rsplit(":", 1)[-1]
        source.problems.append(
            Problem(
                "yaml.syntax",
                f"YAML error: {node.value!r} is not a valid {kind} ({exc}); quote it to keep it as text",
                source.file,
                line,
                col,
            )
        )
        return node.value


__all__ = ["Path_", "Source", "parse_source", "read_source"]
