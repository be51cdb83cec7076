"""Record validators: per entity, the plan of its members (fields, links, owner, pipeline), built
once per model.

``build_validators(model)`` returns ``{entity name: RecordValidator}``, cached by the model's
hash, so the plans are made once per model version and never per record. Each member has a
coercer (metacrm.validation.values, .links: the input value -> the stored value, or Invalid
naming the value) and, when it is required, a check refusing an empty value. A record is
validated by calling them directly, member by member in declaration order: every bad value is
collected (one issue per member, the value as given), then one ValidationError names them all.
(The members used to be the fields of a generated pydantic model of ``Any`` values each run
through its coercer; pydantic added nothing but its own cost per value, about a third of a
bulk create's validation, and its model's generation on the first write.)
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from ..errors import FieldIssue, ValidationError
from ..model.checks import SYSTEM_COLUMNS
from ..model.metamodel import Entity, Field, Model
from ..model.suggest import did_you_mean, listing
from .links import LinkFieldInvalid, link_coercer, owner_coercer, pipeline_coercer
from .values import Coercer, Invalid, field_coercer, html_text, show, type_name, unstorable_text

# Keys a caller may never give: the database or the runtime sets them.
SET_BY_SYSTEM = SYSTEM_COLUMNS - {"owner", "pipeline", "stage"}

def _required(value):
    if value is None:
        raise Invalid("is required")
    return value


def _required_choices(value):
    if not value:
        raise Invalid("is required; choose at least one option")
    return value


def _required_user(value):
    if value is None:
        raise Invalid("is required; give a user's login")
    return value


def _required_users(value):
    if not value:
        raise Invalid("is required; give at least one user's login")
    return value


def _required_link(what: str) -> Callable:
    def check(value):
        if value is None:
            raise Invalid(f"is required; give the id of {what}")
        return value

    return check


def _owner_kept(value):
    if value is None:
        raise Invalid("cannot be cleared; give a user login")
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _default(f: Field, coerce: Coercer) -> tuple[object, Callable[[], object] | None]:
    """``(value, factory)``: a field's declared default, coerced once, or the function giving
    it per record ("today"/"now", and a fresh copy of a list or mapping)."""
    value = f.default
    if value is None:
        return None, None
    if f.type == "date" and value == "today":
        return None, dt.date.today
    if f.type == "datetime" and value == "now":
        return None, _now
    try:
        value = coerce(value)
    except Invalid:
        pass  # the model checks report a bad default; keep it as declared
    if isinstance(value, list | dict):
        frozen = value
        return None, lambda: copy.deepcopy(frozen)
    return value, None


class _Member:
    """One key a record may carry: a field, a link, ``owner`` or ``pipeline``."""

    __slots__ = ("name", "run", "kind", "checks", "default", "factory", "patch_checks")

    def __init__(self, name, coerce, kind, checks=(), default=(None, None), patch_checks=None):
        self.name = name
        self.run = _guarded(coerce)  # the coercer, anything unforeseen said as Invalid
        self.kind = kind  # field, link, owner, pipeline
        self.checks = tuple(checks)  # run on the coerced value of a new record
        self.patch_checks = self.checks if patch_checks is None else tuple(patch_checks)
        self.default, self.factory = default  # a value left out of a new record


_NO_TEXT = frozenset((int, float, bool, type(None), Decimal, dt.date, dt.datetime))  # nothing to check


def _guarded(coerce: Coercer) -> Coercer:
    """The coercer, turning an exception it did not foresee (an odd object) into Invalid."""

    def run(value):
        kind = type(value)
        if kind is str:
            if "\x00" in value or not value.isascii():  # the usual ASCII text needs no more
                bad = unstorable_text(value)
                if bad is not None:
                    raise Invalid(bad)
        elif kind not in _NO_TEXT:
            bad = unstorable_text(value)
            if bad is not None:
                raise Invalid(bad)
        try:
            return coerce(value)
        except Invalid:
            raise
        except Exception as exc:
            raise Invalid(f"{show(value)} cannot be read ({type_name(value)}): {exc}") from exc

    return run


FILE_FIELD = (
    "is a file field: attach a file with `metacrm attach ENTITY ID FILE --field NAME` (crm.attach, "
    "POST .../files) and empty it with detach"
)


class RecordValidator:
    """Validates and coerces the records of one entity (see the package docstring)."""

    def __init__(self, model: Model, entity: Entity) -> None:
        self.entity = entity
        self.name: str = entity.name
        members: list[_Member] = []
        for f in entity.fields.values():
            coerce = field_coercer(f, region=model.region or None, zone=model.timezone)
            checks = ()
            if f.required:
                checks = (
                    _required_users
                    if f.type == "users"
                    else _required_choices
                    if f.type == "multichoice"
                    else _required_user
                    if f.type == "user"
                    else _required,
                )
            members.append(_Member(f.name, coerce, "field", checks, _default(f, coerce)))
        for link in entity.links.values():
            checks = ()
            if link.required and not link.many:
                what = " or ".join(f"a{'n' if t[:1] in 'aeiou' else ''} {t} record" for t in link.targets)
                checks = (_required_link(what),)
            coerce = link_coercer(link, region=model.region or None, zone=model.timezone)
            members.append(_Member(link.name, coerce, "link", checks))
        if entity.owner:
            members.append(_Member("owner", owner_coercer, "owner", (), (None, None), (_owner_kept,)))
        if entity.has_stages:
            members.append(_Member("pipeline", pipeline_coercer(entity), "pipeline"))
        self._members = {m.name: m for m in members}
        # computed and roll-up fields: stored, never given (create() still returns them as None)
        self._derived = {f.name: f.derived for f in entity.fields.values() if f.derived}
        # the plain text of each rich_text field, kept with its HTML (model/builder.py)
        self._texts = tuple((f.text_of, f.name) for f in entity.fields.values() if f.text_of)
        self._derived.update((text, f"the HTML of {html}") for html, text in self._texts)
        # file and image fields: set by attach and detach only (runtime/files.py)
        self._files = frozenset(f.name for f in entity.file_fields)
        self._create_keys = frozenset(self._members) - set(self._derived) - self._files
        self._patch_keys = self._create_keys - {"pipeline"}
        self._members_list = tuple(members)
        self._patch_members = tuple(m for m in members if m.name in self._patch_keys)

    def __repr__(self) -> str:
        return f"<RecordValidator {self.name}>"

    # ------------------------------------------------------------------ public

    def create(self, data: Mapping[str, Any], *, index: int | None = None) -> dict[str, Any]:
        """A new record: every field (declared default or None), plus the links, owner and
        pipeline given. Raises ValidationError listing every bad value."""
        data, issues = self._prepare(data, index, self._create_keys, patch=False)
        record: dict[str, Any] = {}
        for m in self._members_list:
            name = m.name
            if name in data:
                value = data[name]
            elif m.kind != "field":  # a link, owner or pipeline left out: not in the record
                if m.checks:  # but a required link is said to be missing
                    self._run(m, m.checks, None, issues, index)
                continue
            else:
                value = m.default if m.factory is None else m.factory()
                if not m.checks:  # a default is taken as declared (coerced once, when built)
                    record[name] = value
                    continue
            value = self._run(m, m.checks, value, issues, index)
            if m.kind == "field" or value is not None or m.kind == "link":
                record[name] = value
        if issues:
            raise ValidationError(_summary(issues), issues)
        for html, text in self._texts:
            record[text] = html_text(record.get(html))
        return record

    def patch(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The changes to a record: only the keys given, validated and coerced."""
        data, issues = self._prepare(data, None, self._patch_keys, patch=True)
        values = {}
        for m in self._patch_members:  # in declaration order, as the issues are listed
            if m.name in data:
                values[m.name] = self._run(m, m.patch_checks, data[m.name], issues, None)
        if issues:
            raise ValidationError(_summary(issues), issues)
        changes = {name: values[name] for name in data}
        for html, text in self._texts:
            if html in changes:
                changes[text] = html_text(changes[html])
        return changes

    def create_many(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validates every record; raises one ValidationError naming every bad one by index."""
        out: list[dict] = []
        issues: list[FieldIssue] = []
        for index, data in enumerate(records):
            try:
                out.append(self.create(data, index=index))
            except ValidationError as exc:
                issues.extend(exc.issues)
        if issues:
            raise ValidationError(_summary(issues), issues)
        return out

    # ------------------------------------------------------------------ internals

    def _prepare(self, data, index, keys: frozenset, *, patch: bool) -> tuple[dict, list]:
        if type(data) is not dict:
            if not isinstance(data, Mapping):
                issue = FieldIssue(
                    self.name,
                    None,
                    f"a record must be a mapping of field names to values, not {type_name(data)}",
                    data,
                    index,
                )
                raise ValidationError(issue.format(), [issue])
            data = dict(data)
        spread_issues: list[FieldIssue] = []
        if self.entity.composites and not self.entity.composites.keys().isdisjoint(data):
            data, spread_issues = self._spread(data, index)
        if keys.issuperset(data):
            return data, spread_issues
        issues = [self._key_issue(key, data[key], index, keys, patch) for key in data if key not in keys]
        return {key: value for key, value in data.items() if key in keys}, spread_issues + issues

    def _spread(self, data: dict, index) -> tuple[dict, list[FieldIssue]]:
        """A composite field given as a mapping of its parts (``{"address": {"city": ...}}``)
        becomes its part fields; the mapping is the whole value (a part left out is emptied,
        None empties them all)."""
        out: dict = {}
        issues: list[FieldIssue] = []
        for key, value in data.items():
            composite = self.entity.composites.get(key) if isinstance(key, str) else None
            if composite is None:
                out[key] = value
                continue
            settable = [(part, name) for part, name in composite.parts if name not in self._derived]
            parts = ", ".join(part for part, _ in settable)
            if value is None:
                out.update((name, None) for _, name in settable)
            elif not isinstance(value, Mapping):
                what = "text" if isinstance(value, str) else type_name(value)
                message = f"a {composite.type} is a mapping of its parts ({parts}), not {what}"
                issues.append(FieldIssue(self.name, key, message, value, index))
            else:
                known = dict(settable)
                unknown = [k for k in value if k not in known]
                if unknown:
                    hint = did_you_mean(str(unknown[0]), list(known))
                    message = f"unknown part {show(unknown[0])}" + (f" ({hint})" if hint else "") + f"; parts: {parts}"
                    issues.append(FieldIssue(self.name, key, message, value, index))
                out.update((name, value.get(part)) for part, name in settable)
        return out, issues

    def _key_issue(self, key, value, index, keys: frozenset, patch: bool) -> FieldIssue:
        entity = self.entity
        if key in self._derived:
            return FieldIssue(self.name, key, f"is computed from {self._derived[key]}; it cannot be set", value, index)
        if key in SET_BY_SYSTEM:
            return FieldIssue(self.name, key, "is set by the system; leave it out", value, index)
        if key in self._files:
            return FieldIssue(self.name, key, FILE_FIELD, value, index)
        if key == "stage" and entity.has_stages:
            return FieldIssue(self.name, key, "changes only through move (metacrm move / crm.move)", value, index)
        if key == "pipeline" and entity.has_stages and patch:
            return FieldIssue(self.name, key, "is chosen when the record is created and cannot change", value, index)
        names = [name for name in self._members if name in keys]
        if key == "owner":
            reason = f"{self.name} has no owner (the model does not declare owner: true)"
        elif key == "pipeline":
            reason = f"{self.name} has no stages"
        elif isinstance(key, str) and key in entity.inverses:
            inverse = entity.inverses[key]
            reason = f"it is the other side of {inverse.source}.{inverse.link}; set the link there"
        else:
            reason = did_you_mean(key, names)
        message = f"unknown field {show(key)}" + (f" ({reason})" if reason else "") + f"; fields: {listing(names)}"
        return FieldIssue(self.name, None, message, value, index)

    def _run(self, member: _Member, checks: tuple, value, issues: list, index):
        """``value`` coerced and checked; a refusal is added to ``issues`` (naming the value as
        given, and ``deal.products.qty`` for a link's field) and None returned."""
        try:
            got = member.run(value)
            for check in checks:
                got = check(got)
        except Invalid as exc:
            name = member.name
            if isinstance(exc, LinkFieldInvalid):  # deal.products.qty
                name = f"{name}.{exc.field}"
            issues.append(FieldIssue(self.name, name, str(exc), value, index))
            return None
        return got


def _summary(issues: list[FieldIssue]) -> str:
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return issues[0].format() + more


_CACHE: OrderedDict[str, Mapping[str, RecordValidator]] = OrderedDict()
_CACHE_SIZE = 32
_LOCK = threading.Lock()


class _Validators(Mapping[str, RecordValidator]):
    """``{entity name: RecordValidator}``, each built on first use (thread-safe): a command
    on one entity builds that entity's validator only."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._built: dict[str, RecordValidator] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> RecordValidator:
        validator = self._built.get(name)
        if validator is None:
            entity = self._model.entities[name]
            with self._lock:
                validator = self._built.get(name)
                if validator is None:
                    validator = self._built[name] = RecordValidator(self._model, entity)
        return validator

    def __iter__(self):
        return iter(self._model.entities)

    def __len__(self) -> int:
        return len(self._model.entities)


def build_validators(model: Model) -> Mapping[str, RecordValidator]:
    """``{entity name: RecordValidator}`` for a model, one mapping per model hash (``sha256``);
    each validator (and each of its pydantic models) is generated on first use.

    The mapping is read-only and shared: the same object comes back for the same model.
    """
    key = model.sha256
    with _LOCK:
        if key and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        validators = _Validators(model)
        if key:
            _CACHE[key] = validators
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return validators


__all__ = ["RecordValidator", "SET_BY_SYSTEM", "build_validators"]
