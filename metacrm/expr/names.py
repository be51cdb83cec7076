"""Names -> columns: resolving fields, system columns and paths through links, and the types
(with coercion of written values) that comparisons use. Pure: no database, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from .. import dates
from ..errors import ExpressionError
from ..model.metamodel import Entity, Link, Model
from ..model.suggest import did_you_mean, listing
from ..storage import naming

UTC = dt.UTC

# kinds of value a name holds
TEXT, INTEGER, DECIMAL, BOOLEAN, DATE, DATETIME, MULTICHOICE, JSON, REF = (
    "text",
    "integer",
    "decimal",
    "boolean",
    "date",
    "datetime",
    "multichoice",
    "json",
    "ref",
)
ORDERED = frozenset({TEXT, INTEGER, DECIMAL, DATE, DATETIME})
_INT64 = 2**63
MAX_PATH = 8  # names in one dotted path


@dataclass(frozen=True, slots=True)
class ValueType:
    """What a name holds: its kind, how it is stored, and which written values it accepts."""

    kind: str
    label: str  # 'deal.amount', for messages
    type_name: str  # the model's type name ('money'), for messages
    scale: int | None = None  # decimal places (money 2, decimal/percent 6)
    limit: Decimal | None = None  # exclusive bound of the absolute value
    options: tuple[str, ...] | None = None  # allowed values for = and in (choices, stages, pipelines)
    options_word: str = "an option"
    region: str | None = None  # phone fields: the model's region (numbers written without '+')
    zone: str | None = None  # dates and times written without a zone: the model's time zone

    @property
    def storage(self) -> str:
        """Two names compare directly only when they are stored alike (money in cents on SQLite)."""
        return f"{self.kind}:{self.scale}" if self.kind == DECIMAL else self.kind

    def error(self, message: str, pos: int | None) -> ExpressionError:
        return ExpressionError(f"{self.label}: {message}", pos)

    def coerce(self, value, pos: int | None = None):
        """``value`` as the Python type of this column; ExpressionError naming the field if it
        cannot be. None stays None (null)."""
        if value is None:
            return None
        try:
            return self._coerce(value, pos)
        except ArithmeticError:  # decimal overflow and the like: a number far out of range
            raise self.error(f"{show(value)} is out of range", pos) from None

    def _coerce(self, value, pos):
        kind = self.kind
        if kind == TEXT:
            if isinstance(value, str):
                if self.type_name == "phone":  # compared by its stored (E.164) form when it is a phone
                    from ..validation.values import check_phone

                    return check_phone(value.strip(), self.region) or value
                if self.type_name == "country":  # by its stored ISO code: 'fr', 'France' find 'FR'
                    from ..validation.values import check_country

                    return check_country(value) or value
                return value
            hint = f" (write text in quotes: '{value}')" if isinstance(value, int | Decimal) else ""
            raise self.error(f"{show(value)} is not text{hint}", pos)
        if kind == INTEGER:
            if self.type_name == "duration" and isinstance(value, str):  # '1h30m', 'PT2H': seconds
                try:
                    return dates.parse_duration_seconds(value)
                except ValueError as exc:
                    raise self.error(str(exc), pos) from None
            return self._integer(value, pos)
        if kind == DECIMAL:
            return self._decimal(value, pos)
        if kind == BOOLEAN:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise self.error(f"{show(value)} is not true or false", pos)
        if kind == DATE:
            try:
                return dates.parse_date(value)
            except dates.DateError as exc:
                raise self.error(str(exc), pos) from None
        if kind == DATETIME:
            try:
                return dates.parse_datetime(value, self.zone)
            except dates.DateError as exc:
                raise self.error(str(exc), pos) from None
        if kind == MULTICHOICE:  # the value is one option (contains), or one address / number
            if self.type_name == "emails" and isinstance(value, str):
                from ..validation.values import check_email

                return (check_email(value.strip())[0] or value.strip()).lower()  # addresses match in any case
            if self.type_name == "tags" and isinstance(value, str):
                from ..validation.values import normal_tag

                return normal_tag(value)
            if self.type_name == "phones" and isinstance(value, str | int) and not isinstance(value, bool):
                from ..validation.values import check_phone

                return check_phone(str(value).strip(), self.region) or str(value).strip()
            if isinstance(value, str):
                return value
            raise self.error(f"{show(value)} is not {_ONE_OF.get(self.type_name, 'an option')}", pos)
        raise self.error(f"{show(value)} cannot be compared with a {self.type_name} field", pos)

    def _number(self, value, pos) -> Decimal:
        if isinstance(value, bool):
            raise self.error(f"{show(value)} is not a number", pos)
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            value = repr(value)
        if isinstance(value, Decimal | str):
            try:
                number = Decimal(value.strip()) if isinstance(value, str) else value
            except (InvalidOperation, ValueError):
                raise self.error(f"{show(value)} is not a number", pos) from None
            if number.is_finite():
                return number
        raise self.error(f"{show(value)} is not a number", pos)

    def _integer(self, value, pos) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            d = self._number(value, pos)
            if d.copy_abs() >= _INT64:
                raise self.error(f"{show(value)} is out of range", pos)
            if d != d.to_integral_value():
                raise self.error(f"{show(value)} is not a whole number", pos)
            number = int(d)
        if not -_INT64 <= number < _INT64:
            raise self.error(f"{show(value)} is out of range", pos)
        return number

    def _decimal(self, value, pos) -> Decimal:
        number = self._number(value, pos)
        if self.limit is not None and number.copy_abs() >= self.limit:
            raise self.error(f"{show(value)} is out of range", pos)
        if self.scale is not None and number != number.quantize(Decimal(1).scaleb(-self.scale)):
            raise self.error(f"{show(value)} has more than {self.scale} decimal places", pos)
        return number

    def check_option(self, value, pos: int | None) -> None:
        """For = and in: a value that can never match (a misspelt choice or stage) is an error."""
        if self.options is None or value is None or value in self.options:
            return
        hint = did_you_mean(value, self.options)
        raise self.error(
            f"{show(value)} is not {self.options_word}"
            + (f" ({hint})" if hint else "")
            + f"; {self.options_word.split()[-1]}s: {listing(self.options)}",
            pos,
        )


def show(value) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return "'" + text.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return "'" + value.isoformat() + "'"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


_FIELD_KINDS = {
    "string": TEXT,
    "text": TEXT,
    "email": TEXT,
    "phone": TEXT,
    "url": TEXT,
    "country": TEXT,
    "rich_text": TEXT,
    "choice": TEXT,
    "integer": INTEGER,
    "duration": INTEGER,  # whole seconds
    "money": DECIMAL,
    "currency": DECIMAL,
    "decimal": DECIMAL,
    "percent": DECIMAL,
    "boolean": BOOLEAN,
    "date": DATE,
    "datetime": DATETIME,
    "multichoice": MULTICHOICE,
    "json": JSON,
    # several values: 'contains' holds one of them (compiled to a lookup of the value index)
    "emails": MULTICHOICE,
    "phones": MULTICHOICE,
    "tags": MULTICHOICE,
    "user": TEXT,  # a login: `manager = :me`
    "users": MULTICHOICE,  # a list of logins: `assignees contains :me`
    "file": INTEGER,  # the id of the attached file (`contract is not null`)
    "image": INTEGER,
}
_ONE_OF = {"emails": "an e-mail address", "phones": "a phone number", "tags": "a tag"}


def field_type(entity: Entity, name: str) -> ValueType:
    return _type_of(entity.fields[name], f"{entity.name}.{name}")


def _type_of(f, label: str) -> ValueType:
    kind = _FIELD_KINDS.get(f.type, JSON)
    # (decimal places, exclusive bound) as storage/tables.py stores them: NUMERIC(precision, scale)
    scale, limit = (None, None) if f.decimals is None else (f.decimals, Decimal(10) ** f.whole_digits)
    options = f.option_values if f.type in ("choice", "multichoice") and f.options else None
    return ValueType(kind, label, f.type, scale, limit, options)


def resolve_link_field(model: Model, link: Link, rest: list[str], path: str, hops: tuple, pos: int | None) -> Resolved:
    """``LINK.link.FIELD``: a field of a many-link's rows (a column of its join table);
    ``rest`` is what follows ``link``."""
    owner = f"{link.entity}.{link.name}"
    if not link.fields:
        raise ExpressionError(f"{owner}: this link carries no fields, so '{path}' names nothing", pos)
    if len(rest) != 1 or rest[0] not in link.fields:
        name = ".".join(rest) or "?"
        hint = did_you_mean(name, link.fields)
        raise ExpressionError(
            f"{owner}: unknown field '{name}' of link {link.name} in '{path}'"
            + (f" ({hint})" if hint else "")
            + f"; fields: {listing(link.fields)}",
            pos,
        )
    vt = _localised(_type_of(link.fields[rest[0]], f"{owner}.{rest[0]}"), model)
    return Resolved(path, hops, link.target, rest[0], vt, link_row=True)


def _localised(vt: ValueType, model: Model) -> ValueType:
    """``vt`` reading written values as the model says: phones of its region, dates and
    times without a zone in its time zone."""
    if vt.type_name in ("phone", "phones") and model.region:
        return replace(vt, region=model.region)
    if vt.kind == DATETIME and model.timezone != "UTC":
        return replace(vt, zone=model.timezone)
    return vt


def system_columns(entity: Entity) -> dict[str, ValueType]:
    """The system columns of an entity's table, as storage/tables.py creates them."""
    label = entity.name
    cols = {
        "id": ValueType(INTEGER, f"{label}.id", "id"),
        "created_at": ValueType(DATETIME, f"{label}.created_at", "datetime"),
        "updated_at": ValueType(DATETIME, f"{label}.updated_at", "datetime"),
        "version": ValueType(INTEGER, f"{label}.version", "integer"),
        "created_by": ValueType(TEXT, f"{label}.created_by", "string"),
        "updated_by": ValueType(TEXT, f"{label}.updated_by", "string"),
    }
    if entity.owner:
        cols["owner"] = ValueType(TEXT, f"{label}.owner", "string")
    if entity.archive:
        cols["archived_at"] = ValueType(DATETIME, f"{label}.archived_at", "datetime")
        cols["archived_by"] = ValueType(TEXT, f"{label}.archived_by", "string")
    if entity.has_stages:
        stages: dict[str, None] = {}
        for p in entity.pipelines.values():
            stages.update(dict.fromkeys(p.stages))
        cols["pipeline"] = ValueType(
            TEXT, f"{label}.pipeline", "string", options=tuple(entity.pipelines), options_word="a pipeline"
        )
        cols["stage"] = ValueType(TEXT, f"{label}.stage", "string", options=tuple(stages), options_word="a stage")
        cols["stage_entered_at"] = ValueType(DATETIME, f"{label}.stage_entered_at", "datetime")
        cols["closed_at"] = ValueType(DATETIME, f"{label}.closed_at", "datetime")
    return cols


@dataclass(frozen=True, slots=True)
class Hop:
    """One step through a link, from ``entity`` to ``target``.

    kind ``link``: a single link column on ``entity``; ``many``: a many-link's join table;
    ``inverse``: a link declared on ``target`` (``source``) pointing at ``entity`` - through
    its column, or its join table when ``many_to_many``; ``polymorphic`` when the declaring
    link has several targets (then its ``<link>_entity`` column must name ``entity``).
    """

    kind: str
    entity: str
    target: str
    link: str
    many_to_many: bool = False
    polymorphic: bool = False

    @property
    def multi(self) -> bool:
        return self.kind != "link"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A name resolved against the model: the hops to walk, then the column read at the end."""

    path: str  # as written ('client.city'): the key of the value in Python predicates
    hops: tuple[Hop, ...]
    entity: str  # where the column is
    column: str  # column name on that entity's table
    vtype: ValueType
    link_row: bool = False  # the column is a field of the last hop's join table (``products.link.qty``)

    @property
    def multi(self) -> bool:
        """True when the path reaches any number of values (through a many or inverse link)."""
        return any(h.multi for h in self.hops)


def _names(entity: Entity) -> list[str]:
    return [*entity.fields, *entity.links, *entity.inverses, *system_columns(entity)]


def resolve(model: Model, entity_name: str, path: str, pos: int | None = None) -> Resolved:
    """Resolve a dotted name; ExpressionError naming the valid names when a part is unknown."""
    entity = model.entities[entity_name]
    parts = path.split(".")
    if len(parts) > MAX_PATH:
        raise ExpressionError(f"{entity_name}: '{path[:40]}...' goes through more than {MAX_PATH - 1} links", pos)
    hops: list[Hop] = []
    offset = 0
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        at = None if pos is None else pos + offset
        offset += len(part) + 1
        rest = ".".join(parts[i + 1 :])
        whole = f"{part}.{parts[i + 1]}" if not last else None
        if whole is not None and whole in entity.fields:  # a part (``address.city``, ``notes.text``)
            if i + 2 < len(parts):
                raise ExpressionError(f"{entity.name}: '{whole}' is a field, not a link, so it cannot be followed", at)
            return Resolved(path, tuple(hops), entity.name, whole, _localised(field_type(entity, whole), model))
        if part in entity.composites:  # a composite field itself: name one of its parts
            names = listing(entity.composites[part].fields)
            raise ExpressionError(f"{entity.name}: '{part}' is made of parts; name one of them: {names}", at)
        if part in entity.fields:
            if not last:
                raise ExpressionError(
                    f"{entity.name}: '{part}' is a field, not a link, so '{part}.{rest}' cannot be followed", at
                )
            return Resolved(path, tuple(hops), entity.name, part, _localised(field_type(entity, part), model))
        system = system_columns(entity)
        if part in system and part not in entity.links and part not in entity.inverses:
            if not last:
                raise ExpressionError(
                    f"{entity.name}: '{part}' is a system column, not a link, so '{part}.{rest}' cannot be followed", at
                )
            return Resolved(path, tuple(hops), entity.name, part, _localised(system[part], model))
        link: Link | None = entity.links.get(part)
        if link is not None:
            if link.polymorphic:
                if not last:
                    raise ExpressionError(
                        f"{entity.name}: '{part}' links to several entities ({', '.join(link.targets)}) and cannot be "
                        f"followed ('{part}.{rest}'); only '{part} is null' and '{part} is not null' apply",
                        at,
                    )
                if link.many:  # its join rows: only whether there are any ('is null')
                    hops.append(Hop("many", entity.name, link.targets[0], part, polymorphic=True))
                    return Resolved(
                        path, tuple(hops), entity.name, "id", ValueType(REF, f"{entity.name}.{part}", "link")
                    )
                return Resolved(
                    path,
                    tuple(hops),
                    entity.name,
                    naming.link_column(part),
                    ValueType(REF, f"{entity.name}.{part}", "link"),
                )
            if not link.many:
                if last or parts[i + 1] == "id" and i + 2 == len(parts):  # 'client' and 'client.id': the column
                    vt = ValueType(INTEGER, f"{entity.name}.{part}", "link")
                    return Resolved(path, tuple(hops), entity.name, naming.link_column(part), vt)
                if parts[i + 1] == "link" and "link" not in model.entities[link.target].fields:
                    resolve_link_field(model, link, parts[i + 2 :], path, (), at)  # says why not
                hops.append(Hop("link", entity.name, link.target, part))
            else:
                hops.append(Hop("many", entity.name, link.target, part))
                if (
                    not last
                    and parts[i + 1] == "link"
                    and (link.fields or "link" not in model.entities[link.target].fields)
                ):
                    return resolve_link_field(model, link, parts[i + 2 :], path, tuple(hops), at)
            entity = model.entities[link.target]
            if last:  # a many-link alone compares the linked ids
                return Resolved(
                    path, tuple(hops), entity.name, "id", ValueType(INTEGER, f"{hops[-1].entity}.{part}", "link")
                )
            continue
        inverse = entity.inverses.get(part)
        if inverse is not None:
            declaring = model.entities[inverse.source].links[inverse.link]
            hops.append(
                Hop("inverse", entity.name, inverse.source, inverse.link, inverse.many_to_many, declaring.polymorphic)
            )
            label = f"{entity.name}.{part}"
            if not last and parts[i + 1] == "link" and inverse.many_to_many:
                source = model.entities[inverse.source]
                if declaring.fields or "link" not in source.fields:
                    resolved = resolve_link_field(model, declaring, parts[i + 2 :], path, tuple(hops), at)
                    return replace(resolved, entity=inverse.source)
            entity = model.entities[inverse.source]
            if last:
                return Resolved(path, tuple(hops), entity.name, "id", ValueType(INTEGER, label, "link"))
            continue
        names = _names(entity)
        hint = did_you_mean(part, names)
        where = f" in '{path}'" if len(parts) > 1 else ""
        raise ExpressionError(
            f"{entity.name}: unknown name '{part}'{where}"
            + (f" at column {at}" if at is not None else "")
            + (f" ({hint})" if hint else "")
            + f"; names: {listing(names, limit=40)}",
            at,
        )
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["Hop", "Resolved", "ValueType", "resolve", "resolve_link_field", "show", "system_columns"]
