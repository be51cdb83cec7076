"""Record validators: per entity, two pydantic models (create and patch) built once per model.

``build_validators(model)`` returns ``{entity name: RecordValidator}``, cached by the model's
hash, so the pydantic models are generated once per model version and never per record.
Every field becomes ``Annotated[Any, BeforeValidator(coercer)]`` (plus an ``AfterValidator``
refusing an empty required value) under an internal attribute name, aliased to the field name,
so a field may be called ``json`` or ``copy`` without shadowing BaseModel.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BeforeValidator, ConfigDict

from ..errors import FieldIssue, MetaCRMError, ValidationError
from ..model.checks import SYSTEM_COLUMNS
from ..model.metamodel import Entity, Field, Model
from ..model.suggest import did_you_mean, listing
from .links import LinkFieldInvalid, link_coercer, owner_coercer, pipeline_coercer
from .values import Coercer, Invalid, field_coercer, html_text, show, type_name, unstorable_text

# Keys a caller may never give: the database or the runtime sets them.
SET_BY_SYSTEM = SYSTEM_COLUMNS - {"owner", "pipeline", "stage"}

_CONFIG = ConfigDict(extra="ignore", protected_namespaces=(), hide_input_in_errors=False)


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


def _default(f: Field, coerce: Coercer) -> dict:
    """The pydantic default of a field: its declared default, coerced once ("today"/"now" per call)."""
    value = f.default
    if value is None:
        return {"default": None}
    if f.type == "date" and value == "today":
        return {"default_factory": dt.date.today}
    if f.type == "datetime" and value == "now":
        return {"default_factory": _now}
    try:
        value = coerce(value)
    except Invalid:
        pass  # the model checks report a bad default; keep it as declared
    if isinstance(value, list | dict):
        frozen = value
        return {"default_factory": lambda: copy.deepcopy(frozen)}
    return {"default": value}


class _Member:
    """One key a record may carry: a field, a link, ``owner`` or ``pipeline``."""

    __slots__ = ("name", "internal", "coerce", "kind", "checks", "default", "patch_checks")

    def __init__(self, name, internal, coerce, kind, checks=(), default=None, patch_checks=None):
        self.name = name
        self.internal = internal
        self.coerce = coerce
        self.kind = kind  # field, link, owner, pipeline
        self.checks = tuple(checks)  # after-validators on create
        self.patch_checks = self.checks if patch_checks is None else tuple(patch_checks)
        self.default = default or {"default": None}


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


def _annotation(member: _Member, checks: tuple) -> object:
    return Annotated[(Any, BeforeValidator(_guarded(member.coerce)), *(AfterValidator(c) for c in checks))]


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
            members.append(_Member(f.name, f"m{len(members)}", coerce, "field", checks, _default(f, coerce)))
        for link in entity.links.values():
            checks = ()
            if link.required and not link.many:
                what = " or ".join(f"a{'n' if t[:1] in 'aeiou' else ''} {t} record" for t in link.targets)
                checks = (_required_link(what),)
            coerce = link_coercer(link, region=model.region or None, zone=model.timezone)
            members.append(_Member(link.name, f"m{len(members)}", coerce, "link", checks))
        if entity.owner:
            members.append(_Member("owner", f"m{len(members)}", owner_coercer, "owner", (), None, (_owner_kept,)))
        if entity.has_stages:
            members.append(_Member("pipeline", f"m{len(members)}", pipeline_coercer(entity), "pipeline"))
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
        self._field_pairs = tuple((m.internal, m.name) for m in members if m.kind == "field")
        self._given_pairs = tuple((m.name, m.internal, m.kind) for m in members if m.kind != "field")
        self._internal = {m.name: m.internal for m in members}
        self._external = {m.internal: m.name for m in members}
        self._members_list = tuple(members)
        self._create_model: type[pydantic.BaseModel] | None = None
        self._patch_model: type[pydantic.BaseModel] | None = None

    @property
    def create_model(self) -> type[pydantic.BaseModel]:
        """The pydantic model of a new record, generated on first use (a command that only
        reads never pays for it)."""
        if self._create_model is None:
            members = self._members_list
            self._create_model = pydantic.create_model(
                f"{self._base}Create",
                __config__=_CONFIG,
                **{
                    m.internal: (
                        _annotation(m, m.checks),
                        pydantic.Field(alias=m.name, validate_default=bool(m.checks), **m.default),
                    )
                    for m in members
                },
            )
        return self._create_model

    @property
    def patch_model(self) -> type[pydantic.BaseModel]:
        """The pydantic model of the changes to a record, generated on first use."""
        if self._patch_model is None:
            self._patch_model = pydantic.create_model(
                f"{self._base}Patch",
                __config__=_CONFIG,
                **{
                    m.internal: (_annotation(m, m.patch_checks), pydantic.Field(default=None, alias=m.name))
                    for m in self._members_list
                    if m.name in self._patch_keys
                },
            )
        return self._patch_model

    @property
    def _base(self) -> str:
        return "".join(part.capitalize() for part in self.entity.name.split("_"))

    def __repr__(self) -> str:
        return f"<RecordValidator {self.name}>"

    # ------------------------------------------------------------------ public

    def create(self, data: Mapping[str, Any], *, index: int | None = None) -> dict[str, Any]:
        """A new record: every field (declared default or None), plus the links, owner and
        pipeline given. Raises ValidationError listing every bad value."""
        data, issues = self._prepare(data, index, self._create_keys, patch=False)
        instance = self._validate(self.create_model, data, issues, index)
        values = instance.__dict__
        record = {name: values[internal] for internal, name in self._field_pairs}
        for name, internal, kind in self._given_pairs:
            if name in data:
                value = values[internal]
                if value is not None or kind == "link":
                    record[name] = value
        for html, text in self._texts:
            record[text] = html_text(record.get(html))
        return record

    def patch(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The changes to a record: only the keys given, validated and coerced."""
        data, issues = self._prepare(data, None, self._patch_keys, patch=True)
        instance = self._validate(self.patch_model, data, issues, None)
        values = instance.__dict__
        internal = self._internal
        changes = {name: values[internal[name]] for name in data}
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

    def _validate(self, model: type[pydantic.BaseModel], data: dict, issues: list, index):
        try:
            instance = model.model_validate(data)
        except pydantic.ValidationError as exc:
            issues.extend(self._translate(exc, index))
            raise ValidationError(_summary(issues), issues) from exc
        except MetaCRMError:
            raise
        except Exception as exc:  # an exotic input a coercer did not foresee: still one clean error
            issues.append(FieldIssue(self.name, None, f"could not validate the record: {exc!r}", None, index))
            raise ValidationError(_summary(issues), issues) from exc
        if issues:
            raise ValidationError(_summary(issues), issues)
        return instance

    def _translate(self, exc: pydantic.ValidationError, index) -> list[FieldIssue]:
        issues = []
        for error in exc.errors(include_url=False):
            loc = error.get("loc") or ()
            name = loc[0] if loc and isinstance(loc[0], str) else None
            name = self._external.get(name, name)  # a missing value is located by attribute name
            cause = (error.get("ctx") or {}).get("error")
            message = str(cause) if isinstance(cause, Invalid) else error.get("msg", "is not valid")
            if isinstance(cause, LinkFieldInvalid):  # deal.products.qty
                name = f"{name}.{cause.field}"
            issues.append(FieldIssue(self.name, name, message, error.get("input"), index))
        return issues


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
