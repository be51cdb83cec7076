"""Load a model: read the YAML files (following ``include:``), validate each against the JSON
Schema, merge them, build the metamodel and run every check. All problems are collected and
raised once, as :class:`metacrm.ModelError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, Problem
from .metamodel import Model

if TYPE_CHECKING:  # pragma: no cover
    from .yaml_source import Source

SECTIONS = ("entities", "roles", "automations", "forms")
SINGULAR = {"entities": "entity", "roles": "role", "automations": "automation", "forms": "form"}


@dataclass
class Locator:
    """Where each part of the merged model document comes from: path -> (file, line, col)."""

    values: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    root_file: str = "<model>"

    def add(self, source: Source, prefix: tuple | None = None) -> None:
        for store, src in ((self.values, source.values), (self.keys, source.keys)):
            for path, (line, col) in src.items():
                if prefix is None or path[: len(prefix)] == prefix:
                    store.setdefault(path, (source.file, line, col))

    def at(self, path, *, key: bool = False) -> tuple[str, int, int]:
        """The location of a path's key (``key=True``) or value, else of its nearest ancestor."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values and not key:
                return self.values[path]
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return (self.root_file, 1, 1)
            path = path[:-1]


def display_path(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def read_model_sources(path: str | os.PathLike) -> tuple[list[Source], list[Problem]]:
    """The root file and every file it includes (depth first, each once), and include problems."""
    from .schema import schema_problems
    from .yaml_source import read_source

    sources: list[Source] = []
    problems: list[Problem] = []
    seen: dict[Path, str] = {}
    folder = Path(path).resolve().parent  # includes stay inside it unless a file says otherwise

    def visit(file: Path, *, fragment: bool, stack: tuple[Path, ...]) -> None:
        source = read_source(file, display=display_path(file))
        source.path = str(file)
        seen[file] = source.file
        sources.append(source)
        problems.extend(source.problems)
        if source.problems:
            return
        problems.extend(schema_problems(source, fragment=fragment))
        data = source.data if isinstance(source.data, dict) else {}
        includes = data.get("include") or []
        if not isinstance(includes, list):
            return
        outside_allowed = data.get("include_outside") is True
        for i, item in enumerate(includes):
            if not isinstance(item, str) or not item:
                continue
            target = (file.parent / item).resolve()
            line, col = source.values.get(("include", i), (1, 1))
            if target in stack or target == file:
                problems.append(
                    Problem(
                        "include.cycle",
                        f"include of '{item}' makes a cycle",
                        source.file,
                        line,
                        col,
                        loc=("include", i),
                    )
                )
            elif not outside_allowed and not target.is_relative_to(folder):
                problems.append(
                    Problem(
                        "include.outside",
                        f"included file '{item}' is outside the model's folder {display_path(folder)}; "
                        f"to allow it, set 'include_outside: true' at the top of {source.file}",
                        source.file,
                        line,
                        col,
                        loc=("include", i),
                    )
                )
            elif target in seen:
                continue  # included twice along different paths: read once
            elif target.exists() and not target.is_file():
                problems.append(
                    Problem(
                        "include.not_a_file",
                        f"included '{item}' is not a regular file",
                        source.file,
                        line,
                        col,
                        loc=("include", i),
                    )
                )
            elif not target.is_file():
                problems.append(
                    Problem(
                        "include.not_found",
                        f"included file '{item}' does not exist",
                        source.file,
                        line,
                        col,
                        loc=("include", i),
                    )
                )
            else:
                visit(target, fragment=True, stack=(*stack, file))

    visit(Path(path).resolve(), fragment=False, stack=())
    return sources, problems


def merge_sources(sources: list[Source]) -> tuple[dict, Locator, list[Problem]]:
    """One document from the root file and its includes; an entity/role/automation declared
    in two files is a problem located at its second declaration."""
    root = sources[0]
    locator = Locator(root_file=root.file)
    problems: list[Problem] = []
    doc: dict = {}
    root_data = root.data if isinstance(root.data, dict) else {}
    for key, value in root_data.items():
        if key not in SECTIONS and key not in ("include", "include_outside"):  # layout, not meaning
            doc[key] = value
    locator.add(root)
    for section in SECTIONS:
        merged: dict = {}
        for source in sources:
            data = source.data if isinstance(source.data, dict) else {}
            part = data.get(section)
            if not isinstance(part, dict):
                continue
            for name, value in part.items():
                if name in merged:
                    first = locator.at((section, name), key=True)
                    _, line, col = (source.file, *source.keys.get((section, name), (1, 1)))
                    problems.append(
                        Problem(
                            f"{SINGULAR[section]}.duplicate",
                            f"{SINGULAR[section]} '{name}' is declared twice (first at {first[0]}:{first[1]})",
                            source.file,
                            line,
                            col,
                            loc=(section, name),
                        )
                    )
                    continue
                merged[name] = value
                if source is not root:
                    locator.add(source, (section, name))
        if merged or section in root_data:
            doc[section] = merged
    return doc, locator, problems


def canonical_json(doc: dict) -> str:
    """The merged declarations as canonical JSON: what a model *is*, whatever its file layout
    (includes, flow or block style, comments). Declaration order is kept, because it means
    something: the first pipeline is the default, stages are shown and counted in order."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def load_model(path: str | os.PathLike[str], *, strict: bool = False, cache: bool = False) -> Model:
    """Load, validate and check a model. Raises ModelError with every problem found.

    Warnings do not fail the load (they are kept in ``model.warnings``) unless ``strict``.
    With ``cache``, a model loaded before from the same unchanged files comes from the
    compiled-model cache (:mod:`metacrm.model.cache`, used by the command line), and a model
    without errors is stored there.
    """
    if cache:
        from .cache import lookup

        hit = lookup(path)
        if hit is not None:
            model, problems = hit
            if strict and problems:
                raise ModelError(problems)
            return model
    problems, model, files = _check(path)
    errors = [p for p in problems if p.is_error or strict]
    if errors or model is None:
        raise ModelError(problems)
    if cache:
        from .cache import store

        store(path, model, problems, files)
    return model


def check_model_file(path: str | os.PathLike) -> tuple[list[Problem], Model | None]:
    """Every problem of a model file and, when it has no errors, the model itself."""
    problems, model, _ = _check(path)
    return problems, model


def _check(path: str | os.PathLike) -> tuple[list[Problem], Model | None, list[str]]:
    """check_model_file, and the resolved paths of the files read (the root first)."""
    from .builder import build_model

    sources, problems = read_model_sources(path)
    files = [s.path for s in sources]
    if any(p.type in ("file.not_found", "file.unreadable") for p in problems) and len(sources) == 1:
        return problems, None, files
    doc, locator, merge_problems = merge_sources(sources)
    problems.extend(merge_problems)
    structural = any(p.is_error for p in problems)
    canonical = canonical_json(doc)
    try:
        model, build_problems = build_model(doc, locator, canonical=canonical, files=tuple(s.file for s in sources))
    except Exception:
        if structural:  # the semantic checks met data the schema already refused
            return _sorted(problems), None, files
        raise
    problems.extend(build_problems)
    if any(p.is_error for p in problems):
        return _sorted(problems), None, files
    return _sorted(problems), model, files


def _sorted(problems: list[Problem]) -> list[Problem]:
    order = {}
    for p in problems:
        order.setdefault(p.file, len(order))
    return sorted(problems, key=lambda p: (order[p.file], p.line, p.col, p.severity != "error"))
