"""The metamodel: frozen objects describing a loaded, checked model.

Everything else (tables, validators, stage graphs, reports, migrations) is built from these.
Mappings are read-only views and sequences are tuples, so a Model can be shared and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .field_types import FIELD_TYPES, MULTI_VALUE_TYPES, FieldType, decimal_shape

if TYPE_CHECKING:
    from ..errors import Problem
    from .composite import Composite

EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a declaration stands: file, 1-based line and column."""

    file: str = "<model>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Loc()


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str | None = None
    renamed_from: str | None = None
    color: str | None = None  # a CSS color: the option's badge in the web pages
    order: int | None = None  # where the option sorts (lists, boards, reports); None: declaration order


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    required: bool = False
    unique: bool = False
    index: bool = False
    default: object = None
    fill: object = None  # what a migration writes into existing records that have no value
    min: float | int | None = None
    max: float | int | None = None
    max_length: int | None = None
    pattern: str | None = None
    options: tuple[Option, ...] = ()
    label: str | None = None
    help: str | None = None
    renamed_from: tuple[str, ...] = ()
    loc: Loc = NOWHERE
    # removed option -> the option (or None) a migration gives the records holding it
    option_map: Mapping[str, str | None] = field(default_factory=lambda: EMPTY)
    formula: str | None = None  # a computed field: an expression over the record and its single links
    rollup: str | None = None  # a roll-up field: count/sum/min/max over an inverse or many link
    required_if: str | None = None  # an expression: when it holds, the field must have a value
    readonly_if: str | None = None  # an expression: when it holds on the stored record, no change
    readonly: bool = False  # set by the system, automations and imports only (runtime/sysfields.py)
    autonumber: str | None = None  # "PO-{YYYY}-{####}": numbered at create (runtime/sysfields.py)
    # exact numbers (field_types.decimal_shape): decimals and total digits kept; None: the type's own
    scale: int | None = None
    precision: int | None = None
    currency: str | None = None  # a currency field's fixed ISO 4217 code
    currency_field: str | None = None  # ... or the choice field of the record naming its currency
    round: bool = False  # a migration that lowers the scale rounds values instead of refusing them
    part_of: str | None = None  # a part of a composite field (``address.city``): the composite's name
    text_of: str | None = None  # the plain text of a rich_text field (``notes.text``): its name

    @property
    def decimals(self) -> int | None:
        """Decimal places an exact number keeps (None: not an exact decimal type)."""
        shape = decimal_shape(self)
        return None if shape is None else shape[1]

    @property
    def whole_digits(self) -> int | None:
        """Digits an exact number may have before the point (None: not an exact decimal type)."""
        shape = decimal_shape(self)
        return None if shape is None else shape[0] - shape[1]
    # a ``to: user`` link (type ``user``/``users``): what removing a linked user does to the record,
    # ``restrict`` (refused while linked) or ``set_null`` (the user is taken off the record)
    on_delete: str = "restrict"

    @property
    def user_link(self) -> bool:
        """A ``to: user`` link, held as a field: ``user`` (one login) or ``users`` (a list)."""
        return self.type in ("user", "users")

    accept: tuple[str, ...] = ()  # file and image fields: MIME types ("image/*") or extensions (".pdf")
    max_size: int | None = None  # file and image fields: the largest file, in bytes

    @property
    def derived(self) -> str | None:
        """The formula or roll-up the field is computed from (None for an ordinary field)."""
        return self.formula or self.rollup

    @property
    def field_type(self) -> FieldType:
        return FIELD_TYPES[self.type]

    @property
    def kind(self) -> str:
        """Storage kind (see field_types)."""
        return FIELD_TYPES[self.type].kind

    @property
    def option_values(self) -> tuple[str, ...]:
        return tuple(o.value for o in self.options)

    @property
    def option_rank(self) -> dict[str, int]:
        """Option value -> its place in sorted order: its ``order`` where declared, else its
        place in the declaration (ties keep the declaration order)."""
        keyed = sorted(
            range(len(self.options)),
            key=lambda i: (self.options[i].order if self.options[i].order is not None else i, i),
        )
        return {self.options[i].value: rank for rank, i in enumerate(keyed)}

    @property
    def caption(self) -> str:
        return self.label or self.name


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What a file field or an entity's attachments accept (runtime/files.py): ``accept``, MIME
    types (``image/*``) or extensions (``.pdf``), any when empty; ``max_size`` in bytes, any
    size when None; ``image``: only PNG, JPEG, GIF or WebP content."""

    accept: tuple[str, ...] = ()
    max_size: int | None = None
    image: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    entity: str  # the entity declaring the link
    targets: tuple[str, ...]
    many: bool = False
    required: bool = False
    inverse: str | None = None
    on_delete: str = "restrict"
    label: str | None = None
    help: str | None = None
    renamed_from: tuple[str, ...] = ()
    loc: Loc = NOWHERE
    # a many-link's own data (``fields:``): columns of its join table, one value per linked pair
    fields: Mapping[str, Field] = field(default_factory=lambda: EMPTY)
    unique: bool = False  # a single link: no two records link the same target (1:1)

    @property
    def polymorphic(self) -> bool:
        return len(self.targets) > 1

    @property
    def target(self) -> str:
        """The one target entity of a non-polymorphic link."""
        return self.targets[0]

    @property
    def caption(self) -> str:
        return self.label or self.name


@dataclass(frozen=True, slots=True)
class InverseLink:
    """How a target entity sees a link declared on another entity (a client's ``deals``)."""

    name: str
    entity: str  # the entity seeing it (the link's target)
    source: str  # the entity declaring the link
    link: str  # the link's name on ``source``
    many_to_many: bool = False


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    kind: str = "open"  # open, won, lost
    label: str | None = None
    probability: float | None = None
    requires: tuple[str, ...] = ()
    sla: str | None = None
    sla_seconds: int | None = None
    renamed_from: tuple[str, ...] = ()
    loc: Loc = NOWHERE

    @property
    def closed(self) -> bool:
        return self.kind != "open"

    @property
    def caption(self) -> str:
        return self.label or self.name


@dataclass(frozen=True, slots=True)
class Transition:
    source: str
    target: str
    when: str | None = None
    roles: tuple[str, ...] = ()
    reopen: bool = False
    label: str | None = None
    loc: Loc = NOWHERE


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    entity: str
    initial: str
    stages: Mapping[str, Stage]  # in declaration order
    transitions: tuple[Transition, ...]
    label: str | None = None
    amount: str | None = None  # the money field reports sum
    money_field: Field | None = None  # that field (its currency: funnels and boards sum per currency)
    renamed_from: tuple[str, ...] = ()
    loc: Loc = NOWHERE
    # from-stage -> {to-stage: Transition}; the hot-path view of the graph
    adjacency: Mapping[str, Mapping[str, Transition]] = field(default_factory=lambda: EMPTY)
    # removed stage -> the stage a migration moves its records to
    stage_map: Mapping[str, str] = field(default_factory=lambda: EMPTY)

    @property
    def caption(self) -> str:
        return self.label or self.name

    @property
    def won(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages.values() if s.kind == "won")

    @property
    def lost(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages.values() if s.kind == "lost")

    def next_stages(self, stage: str) -> tuple[str, ...]:
        return tuple(self.adjacency.get(stage, EMPTY))

    def can_move(self, source: str, target: str) -> bool:
        return target in self.adjacency.get(source, EMPTY)


DEFAULT_PIPELINE = "default"


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """One duplicate rule of an entity: ``match`` email, phone or name on ``field``."""

    match: str  # email, phone, name
    field: str
    within: str | None = None
    threshold: float = 90
    action: str = "block"  # block, warn
    loc: Loc = NOWHERE

    def describe(self) -> str:
        text = f"{self.match} on {self.field}"
        if self.within:
            text += f" within {self.within}"
        return text


@dataclass(frozen=True, slots=True)
class Rule:
    """An entity's ``rules:`` item: ``check`` (an expression every stored record satisfies; an
    unknown result, from an empty value, passes as in a SQL CHECK), the ``message`` a refusal
    shows, an optional ``name``."""

    check: str
    message: str
    name: str | None = None
    loc: Loc = NOWHERE

    @property
    def title(self) -> str:
        """How a refusal names the rule: its name, else its message."""
        return self.name or self.message


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What makes an entity a task list (``task:``): the members holding a task's deadline,
    state, priority, subject and blockers. A task is closed when its ``done`` boolean is
    true, or (with ``status``) when the choice field holds one of the ``closed`` values;
    its responsible user is the record's ``owner``."""

    due: str
    done: str | None = None
    status: str | None = None
    closed: tuple[str, ...] = ()
    priority: str | None = None
    subject: str | None = None
    blocked_by: str | None = None
    loc: Loc = NOWHERE


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    fields: Mapping[str, Field]
    links: Mapping[str, Link]
    pipelines: Mapping[str, Pipeline] = field(default_factory=lambda: EMPTY)
    label: str | None = None
    plural: str | None = None
    description: str | None = None
    owner: bool = False
    archive: bool = False  # ``archive: true``: delete archives (archived_at/archived_by), purge removes
    title: str | None = None
    search: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    duplicates: tuple[DuplicateRule, ...] = ()
    rules: tuple[Rule, ...] = ()
    renamed_from: tuple[str, ...] = ()
    loc: Loc = NOWHERE
    inverses: Mapping[str, InverseLink] = field(default_factory=lambda: EMPTY)  # filled in by the builder
    pipeline_field: str | None = None  # a choice field whose value picks a new record's pipeline
    # removed pipeline -> "pipeline" or "pipeline.stage" a migration moves its records to
    pipeline_map: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    task: TaskSpec | None = None  # ``task:``: the entity is a task list
    # ``list:``: the default columns of a listing (CLI tables, web list page); None: every column
    list: tuple[str, ...] | None = None
    # ``attachments:``: any number of files attached to a record (None: none)
    attachments: FileSpec | None = None

    @property
    def file_fields(self) -> tuple[Field, ...]:
        """The ``file`` and ``image`` fields."""
        return tuple(f for f in self.fields.values() if f.kind == "file")

    @property
    def has_files(self) -> bool:
        """Whether records of the entity can hold files (file fields or attachments)."""
        return self.attachments is not None or bool(self.file_fields)

    def file_spec(self, field: str | None) -> FileSpec | None:
        """What a file field (``field``) or the attachments (None) accept; None when that is
        no file field, or the entity has no attachments."""
        if field is None:
            return self.attachments
        f = self.fields.get(field)
        if f is None or f.kind != "file":
            return None
        return FileSpec(f.accept, f.max_size, f.type == "image")
    # composite fields (address, person_name: model/composite.py), built as their part fields
    composites: Mapping[str, Composite] = field(default_factory=lambda: EMPTY)

    @property
    def text_search(self) -> tuple[str, ...]:
        """The ``search`` fields in the full-text index: all but the multi-value ones
        (``emails``, ``phones``), which search looks up in their value index."""
        return tuple(n for n in self.search if n in self.fields and self.fields[n].type not in MULTI_VALUE_TYPES)

    @property
    def has_stages(self) -> bool:
        return bool(self.pipelines)

    @property
    def multi_pipeline(self) -> bool:
        return len(self.pipelines) > 1

    @property
    def default_pipeline(self) -> Pipeline | None:
        return next(iter(self.pipelines.values()), None)

    @property
    def caption(self) -> str:
        return self.label or self.name

    @property
    def columns(self) -> tuple[str, ...]:
        """The keys of a record of this entity, in order: what ``list:`` and ``--columns`` name."""
        out = ["id", *self.fields, *self.links]
        if self.owner:
            out.append("owner")
        if self.has_stages:
            out += ["pipeline", "stage"] if self.multi_pipeline else ["stage"]
        out += ["created_at", "updated_at", "version", "created_by", "updated_by"]
        if self.archive:
            out += ["archived_at", "archived_by"]
        return tuple(out)

    @property
    def user_links(self) -> tuple[Field, ...]:
        """The entity's ``to: user`` links (held as fields of type ``user`` / ``users``)."""
        return tuple(f for f in self.fields.values() if f.user_link)

    def member(self, name: str) -> Field | Link | InverseLink | None:
        """A field, link or inverse link by name."""
        return self.fields.get(name) or self.links.get(name) or self.inverses.get(name)


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    # entity name or "*" -> action -> scope
    permissions: Mapping[str, Mapping[str, str]]
    loc: Loc = NOWHERE
    # entity name or "*" -> action -> the user links an ``{assigned: [links]}`` scope names
    # (an action given as plain ``assigned`` is absent: every user link of the entity counts)
    assigned: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=lambda: EMPTY)


ACTIONS = ("read", "create", "update", "delete", "move", "export", "import", "reassign")


@dataclass(frozen=True, slots=True)
class Automation:
    name: str
    entity: str
    trigger: Mapping[str, Any]
    condition: str | None
    actions: tuple[Mapping[str, Any], ...]
    label: str | None = None
    loc: Loc = NOWHERE


@dataclass(frozen=True, slots=True)
class AssignRule:
    """One assignment rule of a form: ``user`` (a login) or ``round_robin`` (a role), when
    ``condition`` (an expression on the submitted values) holds, or always without one."""

    user: str | None = None
    round_robin: str | None = None
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class Form:
    """A public intake point (``forms:``): submissions create records of ``entity`` from the
    listed ``fields`` plus the fixed ``values``; ``assign`` rules pick the owner."""

    name: str
    entity: str
    fields: tuple[str, ...]
    values: Mapping[str, object] = field(default_factory=lambda: EMPTY)
    assign: tuple[AssignRule, ...] = ()
    honeypot: str = "website"
    rate: tuple[int, int] = (10, 60)  # submissions per seconds, per sender IP
    token: bool = False
    label: str | None = None
    redirect: str | None = None  # where a browser goes after posting the HTML form
    loc: Loc = NOWHERE

    @property
    def caption(self) -> str:
        return self.label or self.name


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    entities: Mapping[str, Entity]
    roles: Mapping[str, Role] = field(default_factory=lambda: EMPTY)
    automations: Mapping[str, Automation] = field(default_factory=lambda: EMPTY)
    forms: Mapping[str, Form] = field(default_factory=lambda: EMPTY)
    label: str | None = None
    description: str | None = None
    region: str | None = None  # ISO country for phone numbers written without '+'
    timezone: str = "UTC"  # IANA zone: naive datetimes read here, datetimes shown here (metacrm.dates)
    webhooks_allow_private: bool = False  # webhooks: {allow_private: true}
    files: tuple[str, ...] = ()
    canonical: str = "{}"  # canonical JSON of the merged declarations
    sha256: str = ""
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    @property
    def caption(self) -> str:
        return self.label or self.name

    @property
    def uses_files(self) -> bool:
        """Whether an entity has file fields or attachments (the files table exists then)."""
        return any(e.has_files for e in self.entities.values())

    def entity(self, name: str) -> Entity:
        """The entity of that name; raises metacrm.NotFound naming the valid ones."""
        try:
            return self.entities[name]
        except KeyError:
            from ..errors import NotFound
            from .suggest import did_you_mean

            hint = did_you_mean(name, self.entities)
            raise NotFound(
                f"unknown entity '{name}'; entities: {', '.join(self.entities)}" + (f" ({hint})" if hint else ""),
                entity=name,
            ) from None


__all__ = [
    "ACTIONS",
    "AssignRule",
    "Automation",
    "DEFAULT_PIPELINE",
    "Entity",
    "Field",
    "FileSpec",
    "Form",
    "InverseLink",
    "Link",
    "Loc",
    "Model",
    "Option",
    "Pipeline",
    "Role",
    "Rule",
    "Stage",
    "TaskSpec",
    "Transition",
]
