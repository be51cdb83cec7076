"""File fields (``type: file`` / ``image``) and ``attachments:``: the ``accept`` and
``max_size`` options and their load-time checks. Pure: no database, no file system.

``max_size`` is a number of bytes or text such as ``"10 MB"`` (KB, MB and GB are 1024-based,
as most file managers count them); ``accept`` lists MIME types (``application/pdf``), type
families (``image/*``) and extensions (``.pdf``), case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .metamodel import Entity, Field, FileSpec

UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*$", re.IGNORECASE)
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")
_EXT = re.compile(r"^\.[a-z0-9][a-z0-9_+-]*(\.[a-z0-9][a-z0-9_+-]*)*$")
# raster images a browser shows without running anything in them (never SVG: it may hold script)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# what a field or attachment option may not be combined with
NOT_FOR_FILES = ("required", "unique", "index", "default", "fill", "formula", "rollup", "readonly", "autonumber")


def parse_size(value) -> int | None:
    """Bytes from ``max_size`` (an integer, or text such as ``"10 MB"``); None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    unit = match.group(2).lower().rstrip("b")
    size = int(float(match.group(1)) * UNITS[unit + "b" if unit else ""])
    return size if size > 0 else None


def show_size(size: int) -> str:
    """``10 MB``, ``512 KB``, ``1.5 MB``, ``300 bytes``."""
    for unit in ("GB", "MB", "KB"):
        scale = UNITS[unit.lower()]
        if size >= scale:
            text = f"{size / scale:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return f"{size} bytes"


def accept_items(value) -> tuple[str, ...]:
    """``accept`` as a tuple of lower-case items (a single text is one item)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(v.strip().lower() for v in value if isinstance(v, str) and v.strip())


def accept_problem(item: str) -> str | None:
    """Why one ``accept`` item is not a MIME type, a family or an extension (None when it is)."""
    if _MIME.match(item) or _EXT.match(item):
        return None
    return f"'{item}' is neither a MIME type ('application/pdf', 'image/*') nor an extension ('.pdf')"


def accepts(spec: FileSpec, name: str, mime: str) -> bool:
    """Whether a file named ``name`` of type ``mime`` is one ``spec`` accepts."""
    if not spec.accept:
        return True
    lowered, mime = name.lower(), mime.lower()
    family = mime.split("/", 1)[0] + "/*"
    return any(item in (mime, family) or (item.startswith(".") and lowered.endswith(item)) for item in spec.accept)


def attachments_spec(value) -> FileSpec | None:
    """``attachments: true`` or ``attachments: {accept, max_size}`` (None: no attachments)."""
    if value is True:
        return FileSpec()
    if isinstance(value, dict):
        return FileSpec(accept_items(value.get("accept")), parse_size(value.get("max_size")))
    return None


def option_problems(owner: str, decl: dict, *, image: bool = False) -> Iterator[tuple[str, str, str]]:
    """(problem type, message, key) for the ``accept`` and ``max_size`` of a file field or of
    the attachments (``owner`` names it: "field 'deal.contract'", "entity 'deal': attachments")."""
    if "max_size" in decl and parse_size(decl["max_size"]) is None:
        yield (
            "file.max_size_invalid",
            f"{owner}: max_size {decl['max_size']!r} must be a positive number of bytes or a size such as '10 MB' "
            "(units B, KB, MB, GB)",
            "max_size",
        )
    if "accept" in decl:
        items = accept_items(decl["accept"])
        if not items:
            yield "file.accept_invalid", f"{owner}: accept must list MIME types or extensions", "accept"
        for item in items:
            why = accept_problem(item)
            if why:
                yield "file.accept_invalid", f"{owner}: accept {why}", "accept"
            elif image and not item.startswith(".") and not (item == "image/*" or item in IMAGE_TYPES):
                yield (
                    "file.accept_invalid",
                    f"{owner}: an image field accepts only {', '.join(IMAGE_TYPES)} (or image/*), not '{item}'",
                    "accept",
                )


def field_problems(entity: Entity, f: Field, decl: dict) -> Iterator[tuple[str, str, str]]:
    """(problem type, message, key) for a file or image field."""
    where = f"field '{entity.name}.{f.name}'"
    for key in NOT_FOR_FILES:
        if key in decl and decl[key] not in (False, None):
            hint = " (a file is attached after the record exists: use a stage's requires)" if key == "required" else ""
            yield "file.option_invalid", f"{where}: a {f.type} field cannot have '{key}'{hint}", key
    yield from option_problems(where, decl, image=f.type == "image")


def entity_problems(entity: Entity, decl: dict) -> Iterator[tuple[str, str, str]]:
    """(problem type, message, key) for an entity's ``attachments:``."""
    value = decl.get("attachments")
    if isinstance(value, dict):
        yield from option_problems(f"entity '{entity.name}': attachments", value)


__all__ = [
    "IMAGE_TYPES",
    "accept_items",
    "accepts",
    "attachments_spec",
    "entity_problems",
    "field_problems",
    "option_problems",
    "parse_size",
    "show_size",
]
