"""The model's automations, compiled once per model version.

Event-driven triggers are indexed by ``(entity, event)`` so that matching a journal entry is a
dict lookup; time-based ones (overdue, sla, at, before) are listed for ``tick``. Templates are
parsed into parts, recipients into kinds, and every link path an automation reads (templates,
``email:`` recipients, ``$record.link.field`` values) is gathered so that one query per link
and batch fetches it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..model.metamodel import Automation, Entity, Model

EVENT_KINDS = ("created", "updated", "deleted", "enters", "leaves")
TIME_KINDS = ("overdue", "sla", "at", "before")
# a journal entry's action -> the event it is (link, unlink and merge change the record too)
ACTION_EVENT = {
    "create": "created",
    "update": "updated",
    "link": "updated",
    "unlink": "updated",
    "merge": "updated",
    "delete": "deleted",
    "archive": "deleted",  # the delete of an entity with archive: true (a purge after it fires nothing)
}
# what a template may show besides the entity's fields and links
SYSTEM_PLACEHOLDERS = ("id", "stage", "pipeline", "owner", "created_at", "updated_at")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RELATIVE = re.compile(r"([+-])\s*((?:[0-9]+\s*[wdhm]\s*)+)")
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60}
TITLE = "_title"  # the linked records' titles, as a field name in link paths


class TemplateError(ValueError):
    """A template that cannot be parsed (an unclosed brace, an empty placeholder)."""


def parse_template(text: str) -> tuple:
    """Parts of a template: ``str`` text, or ``(name,)`` / ``(link, field)`` placeholders.
    ``{{`` and ``}}`` are literal braces."""
    parts: list = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise TemplateError(f"unmatched '{token}' at character {m.start() + 1} (write '{token}{token}' for a brace)")
        else:
            path = tuple(p.strip() for p in m.group(1).split("."))
            if not 1 <= len(path) <= 2 or not all(_NAME.fullmatch(p) for p in path):
                raise TemplateError(f"'{token}' is not a placeholder: write {{field}} or {{link.field}}")
            parts.append(path)
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


def relative_seconds(text: str) -> int | None:
    """Seconds of a relative time such as ``+2d``, ``-1d``, ``+4h``, ``+1d 12h`` (None: not one)."""
    if not isinstance(text, str):
        return None
    m = _RELATIVE.fullmatch(text.strip())
    if m is None:
        return None
    seconds = sum(int(n) * _UNIT[u] for n, u in re.findall(r"([0-9]+)\s*([wdhm])", m.group(2)))
    return seconds if m.group(1) == "+" else -seconds


def recipient_kind(text: str) -> tuple[str, str]:
    """``(kind, value)`` of a ``notify.to`` entry: owner, role, user_link, email_path, email,
    webhook, user."""
    text = text.strip()
    if text == "owner":
        return "owner", ""
    if text.startswith("users:"):
        return "user_link", text[6:].strip()
    if text.startswith("role:"):
        return "role", text[5:].strip()
    if text.startswith("email:"):
        return "email_path", text[6:].strip()
    if text.startswith(("http://", "https://")):
        return "webhook", text
    if "@" in text:
        return "email", text
    return "user", text


@dataclass(frozen=True)
class Rule:
    """One trigger of an automation on its entity."""

    automation: Automation
    event: str  # created updated deleted enters leaves overdue sla at before
    names: frozenset | None = None  # updated: the fields/links; enters/leaves: the stages (None: any)


@dataclass
class Compiled:
    model: Model
    events: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    timed: list[Rule] = field(default_factory=list)
    templates: dict[tuple[str, int, str], tuple] = field(default_factory=dict)  # (auto, action, subject|template)
    paths: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # auto -> link -> fields
    _sql: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def has_events(self) -> bool:
        return bool(self.events)

    def condition_sql(self, storage, auto: Automation):
        """The ``if:`` of an automation as a WHERE clause on its entity's table (cached)."""
        with self._lock:
            cached = self._sql.get(auto.name)
        # the clause holds the storage's Table objects: a storage built again for the same
        # model (after the storage cache was emptied) needs its own clause
        if cached is not None and cached[0] is storage:
            return cached[1]
        from ..expr import compile_sql

        clause = compile_sql(storage, auto.entity, auto.condition, what=f"automation '{auto.name}': if")
        with self._lock:
            self._sql[auto.name] = (storage, clause)
        return clause

    def match(self, entry) -> list[tuple[Rule, str]]:
        """The rules a journal entry triggers, with the event as a text (``enters:contract``)."""
        action = entry["action"]
        entity = entry["entity"]
        out: list[tuple[Rule, str]] = []
        if action == "move":
            source, target = (entry.get("changes") or {}).get("stage", [None, None])
            for rule in self.events.get((entity, "leaves"), ()):
                if rule.names is None or source in rule.names:
                    out.append((rule, f"leaves:{source}"))
            for rule in self.events.get((entity, "enters"), ()):
                if rule.names is None or target in rule.names:
                    out.append((rule, f"enters:{target}"))
            return _first_per_automation(out)
        event = ACTION_EVENT.get(action)
        if event is None:
            return out
        rules = self.events.get((entity, event), ())
        if event == "updated":
            changes = entry.get("changes") or {}
            if not changes:
                return out
            for rule in rules:
                if rule.names is None or any(name in changes for name in rule.names):
                    out.append((rule, "updated"))
            return out
        return [(rule, event) for rule in rules]


def _first_per_automation(matches):
    seen, out = set(), []
    for rule, event in matches:
        if rule.automation.name not in seen:
            seen.add(rule.automation.name)
            out.append((rule, event))
    return out


def _names(value) -> frozenset | None:
    if value is True or value == "*" or value is None:
        return None
    if isinstance(value, str):
        return frozenset([value])
    names = frozenset(str(v) for v in value)
    return None if "*" in names else names


def _add_path(paths: dict, entity: Entity, path: tuple) -> None:
    """Remember a link path an automation reads: ``(link, field)`` or a link alone (its title)."""
    if len(path) == 2:
        paths.setdefault(path[0], set()).add(path[1])
    elif len(path) == 1 and entity.member(path[0]) is not None and path[0] not in entity.fields:
        paths.setdefault(path[0], set()).add(TITLE)


def compile_model(model: Model) -> Compiled:
    compiled = Compiled(model)
    for auto in model.automations.values():
        entity = model.entities.get(auto.entity)
        if entity is None:  # the checks refused such a model already
            continue
        trigger = auto.trigger
        for event in EVENT_KINDS:
            if event in trigger:
                rule = Rule(auto, event, _names(trigger[event]) if event != "created" and event != "deleted" else None)
                compiled.events.setdefault((auto.entity, event), []).append(rule)
        if "before" in trigger:  # with `at`, the schedule only says when the reminder goes out
            compiled.timed.append(Rule(auto, "before"))
        elif "at" in trigger:
            compiled.timed.append(Rule(auto, "at"))
        for event in ("overdue", "sla"):
            if event in trigger:
                compiled.timed.append(Rule(auto, event))
        paths: dict[str, set[str]] = {}
        for index, action in enumerate(auto.actions):
            notify = action.get("notify")
            if isinstance(notify, dict):
                for part in ("template", "subject"):
                    if isinstance(notify.get(part), str):
                        parsed = parse_template(notify[part])
                        compiled.templates[(auto.name, index, part)] = parsed
                        for item in parsed:
                            if isinstance(item, tuple):
                                _add_path(paths, entity, item)
                for to in notify.get("to") or ():
                    kind, value = recipient_kind(str(to))
                    if kind == "email_path" and "." in value:
                        _add_path(paths, entity, tuple(value.split(".", 1)))
            values = action.get("values")
            if values is None and isinstance(action.get("update"), dict):
                values = action["update"].get("values")
            for value in (values or {}).values():
                if isinstance(value, str) and value.startswith("$record."):
                    parts = tuple(value[len("$record.") :].split("."))
                    if len(parts) == 2:
                        _add_path(paths, entity, parts)
        compiled.paths[auto.name] = paths
    return compiled


_CACHE: dict[str, Compiled] = {}
_CACHE_LOCK = threading.Lock()


def compiled_for(model: Model) -> Compiled:
    """The compiled automations of a model version (built once per sha256 and shared)."""
    if not model.sha256:
        return compile_model(model)
    with _CACHE_LOCK:
        compiled = _CACHE.get(model.sha256)
        if compiled is None:
            compiled = compile_model(model)
            if len(_CACHE) > 16:
                _CACHE.clear()
            _CACHE[model.sha256] = compiled
        return compiled
