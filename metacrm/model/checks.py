"""Cross-reference checks on a built model: names, field options, links, requires, roles,
automations. Each check yields located problems; the loader raises once with all of them.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import Problem
from ..storage import naming
from .autonumber import field_problems as autonumber_problems
from .bounds import bound_problems
from .field_types import ALL_TYPE_OPTIONS, FIELD_TYPES, MULTI_VALUE_TYPES, default_problem
from .file_rules import entity_problems as attachment_problems
from .file_rules import field_problems as file_problems
from .metamodel import DEFAULT_PIPELINE, Entity, Model
from .suggest import did_you_mean, listing
from .type_checks import field_type_problems

# Columns every table (or a staged / owned one) carries; a field or link may not take them.
SYSTEM_COLUMNS = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
        "archived_at",
        "archived_by",
        "owner",
        "version",
        "pipeline",
        "stage",
        "stage_entered_at",
        "closed_at",
        "reached",
    }
)

# The keywords of the expression language (a name spelled so could not be written in a filter)
# and SQLite's aliases of a row's id. Other SQL words (order, case, group, user...) are fine as
# names: every statement metacrm generates quotes its identifiers.
RESERVED_WORDS = frozenset(
    """
    and or not in between contains startswith is null true false where
    rowid oid _rowid_
    """.split()
)

SYSTEM_PREFIX = "metacrm_"
# what a link's field may declare (docs/links.md): a plain stored value, with a fill for migrations
LINK_FIELD_OPTIONS = frozenset(
    {"type", "required", "default", "fill", "min", "max", "max_length", "pattern", "options", "label", "help"}
    | {"scale", "precision", "round"}
)
# the types a link's field may have: one plain column of the join table (no files, users,
# several values or a currency read from another field)
LINK_FIELD_TYPES = frozenset(
    {"string", "text", "integer", "money", "decimal", "percent", "duration", "boolean", "date", "datetime"}
    | {"email", "phone", "url", "choice", "multichoice", "json"}
)
COMPOSITE_KEYS = frozenset({"type", "label", "help", "required", "renamed_from"})
TEXT_SEARCHABLE = frozenset({"string", "text", "rich_text", "email", "phone", "url", "choice", "country", *MULTI_VALUE_TYPES})


class _Checker:
    def __init__(self, model: Model, doc: dict, locator):
        self.model = model
        self.doc = doc
        self.locator = locator

    def problem(self, type_, message, path, *, key=False, hint=None, severity="error") -> Problem:
        file, line, col = self.locator.at(path, key=key)
        return Problem(type_, message, file, line, col, severity, tuple(path), hint)

    # -- names ---------------------------------------------------------------------------
    def check_name(self, kind: str, name: str, path: tuple, *, system_columns: bool = True) -> Iterator[Problem]:
        if name in RESERVED_WORDS:
            yield self.problem(
                "name.reserved",
                f"{kind} name '{name}' is a keyword of the expression language or SQLite's row id; choose another",
                path,
                key=True,
            )
        elif system_columns and name in SYSTEM_COLUMNS:
            yield self.problem(
                "name.system",
                f"{kind} name '{name}' is a system column ({listing(sorted(SYSTEM_COLUMNS))}); choose another",
                path,
                key=True,
            )

    def entities(self) -> Iterator[Problem]:
        for entity in self.model.entities.values():
            path = ("entities", entity.name)
            if entity.name.startswith(SYSTEM_PREFIX):
                yield self.problem(
                    "name.system",
                    f"entity name '{entity.name}' uses the prefix '{SYSTEM_PREFIX}' kept for system tables",
                    path,
                    key=True,
                )
            elif entity.name == "user":
                yield self.problem(
                    "name.reserved",
                    "entity name 'user' is kept for the CRM's users (`to: user` links to them); choose another",
                    path,
                    key=True,
                )
            else:
                yield from self.check_name("entity", entity.name, path, system_columns=False)
            yield from self.fields(entity)
            for type_, message, key in attachment_problems(entity, self.doc["entities"][entity.name]):
                yield self.problem(type_, message, (*path, "attachments", key), key=True)
            yield from self.links(entity)
            yield from self.entity_lists(entity)
            yield from self.duplicate_rules(entity)
            yield from self.pipeline_field(entity)
            yield from self.stage_refs(entity)
            yield from self.migration_maps(entity)
            yield from self.task_list(entity)

    def fields(self, entity: Entity) -> Iterator[Problem]:
        for f in entity.fields.values():
            if f.user_link:  # a `to: user` link: its options are checked as it is built
                path = ("entities", entity.name, "links", f.name)
                yield from self.check_name(f"link '{entity.name}.{f.name}':", f.name, path)
                continue
            if f.part_of or f.text_of:  # a part of a composite field: checked with it, below
                continue
            path = ("entities", entity.name, "fields", f.name)
            decl = self.doc["entities"][entity.name]["fields"][f.name]
            yield from self.field(entity, entity.name, f, path, decl)
        for c in entity.composites.values():
            path = ("entities", entity.name, "fields", c.name)
            yield from self.check_name(f"field '{entity.name}.{c.name}':", c.name, path)
            if c.name in entity.links:
                yield self.problem(
                    "entity.name_conflict",
                    f"entity '{entity.name}': '{c.name}' is both a field and a link",
                    ("entities", entity.name, "links", c.name),
                    key=True,
                )
            decl = self.doc["entities"][entity.name]["fields"][c.name]
            for key in sorted(set(decl) - COMPOSITE_KEYS):
                yield self.problem(
                    "field.option_not_applicable",
                    f"field '{entity.name}.{c.name}': '{key}' does not apply to a {c.type} field "
                    f"(it takes {', '.join(sorted(COMPOSITE_KEYS - {'type'}))})",
                    (*path, key),
                    key=True,
                )

    def field(self, entity: Entity, owner: str, f, path: tuple, decl: dict) -> Iterator[Problem]:
        """The checks of one field; ``owner`` names where it is declared (``deal``, or
        ``deal.products`` for a link's field)."""
        yield from self.check_name(f"field '{owner}.{f.name}':", f.name, path)
        ftype = FIELD_TYPES[f.type]
        for option in sorted(ALL_TYPE_OPTIONS - ftype.options):
            if option in decl:
                applies = sorted(t.name for t in FIELD_TYPES.values() if option in t.options)
                yield self.problem(
                    "field.option_not_applicable",
                    f"field '{owner}.{f.name}': '{option}' does not apply to type '{f.type}' "
                    f"(only to {', '.join(applies)})",
                    (*path, option),
                    key=True,
                )
        if "options" in ftype.options and not f.options and "options" not in decl:
            yield self.problem(
                "field.options_missing",
                f"field '{owner}.{f.name}': a {f.type} field needs 'options' (the allowed values)",
                path,
                key=True,
            )
        values = f.option_values
        for i, value in enumerate(values):
            if value in values[:i]:
                yield self.problem(
                    "field.option_duplicate",
                    f"field '{owner}.{f.name}': option '{value}' is listed twice",
                    (*path, "options", i),
                )
        for type_, message, option in bound_problems(f, decl, f"field '{owner}.{f.name}'"):
            yield self.problem(type_, message, (*path, option))
        if f.min is not None and f.max is not None and f.min > f.max:
            yield self.problem(
                "field.range_empty",
                f"field '{owner}.{f.name}': min {f.min} is greater than max {f.max}",
                (*path, "min"),
            )
        if f.pattern is not None:
            import regex  # only a model with a pattern pays for it

            try:
                regex.compile(f.pattern, flags=regex.VERSION0)  # the engine validation uses
            except regex.error as exc:
                yield self.problem(
                    "field.pattern_invalid",
                    f"field '{owner}.{f.name}': pattern is not a valid regular expression: {exc}",
                    (*path, "pattern"),
                )
        if "default" in decl:
            why = default_problem(ftype, f.default, values)
            if why:
                yield self.problem(
                    "field.default_invalid",
                    f"field '{owner}.{f.name}': default {f.default!r} {why}",
                    (*path, "default"),
                )
        if f.unique and f.type in ("json", "multichoice", "text", *MULTI_VALUE_TYPES):
            yield self.problem(
                "field.unique_unsupported",
                f"field '{owner}.{f.name}': a {f.type} field cannot be unique",
                (*path, "unique"),
                key=True,
            )
        if owner == entity.name:
            for type_, message, key in autonumber_problems(entity, f, decl):  # readonly, autonumber
                yield self.problem(type_, message, (*path, key), key=True)
            for type_, message, where, key in field_type_problems(entity, f, decl):  # scale, currency, colors
                yield self.problem(type_, message, (*path, *where), key=key)
            if f.kind == "file":
                for type_, message, key in file_problems(entity, f, decl):  # accept, max_size
                    yield self.problem(type_, message, (*path, key), key=True)

    def links(self, entity: Entity) -> Iterator[Problem]:
        entities = self.model.entities
        for link in entity.links.values():
            path = ("entities", entity.name, "links", link.name)
            yield from self.check_name(f"link '{entity.name}.{link.name}':", link.name, path)
            column = naming.link_column(link.name)
            if column in entity.fields:
                yield self.problem(
                    "link.column_conflict",
                    f"link '{entity.name}.{link.name}' is stored as column '{column}', which is already a field",
                    path,
                    key=True,
                )
            to_decl = self.doc["entities"][entity.name]["links"][link.name]["to"]
            for i, target in enumerate(link.targets):
                if target not in entities:
                    at = (*path, "to", i) if isinstance(to_decl, list) else (*path, "to")
                    yield self.problem(
                        "link.unknown_target",
                        f"link '{entity.name}.{link.name}': unknown entity '{target}' (entities: {listing(entities)})",
                        at,
                        hint=did_you_mean(target, entities),
                    )
            if link.polymorphic and link.many and link.fields:
                yield self.problem(
                    "link.polymorphic_fields",
                    f"link '{entity.name}.{link.name}': a many-link to several entities carries no fields yet; "
                    "declare one many-link per target to give its pairs fields",
                    (*path, "fields"),
                    key=True,
                )
            if link.required and link.on_delete == "set_null":
                yield self.problem(
                    "link.set_null_required",
                    f"link '{entity.name}.{link.name}': on_delete set_null cannot clear a required link; "
                    "use restrict or cascade",
                    (*path, "on_delete"),
                )
            if link.many and link.required:
                yield self.problem(
                    "link.many_required",
                    f"link '{entity.name}.{link.name}': a many-link cannot be required "
                    "(use 'requires' on a stage to demand it at that stage)",
                    (*path, "required"),
                    key=True,
                )
            if link.inverse:
                yield from self.check_name(
                    f"inverse of link '{entity.name}.{link.name}':", link.inverse, (*path, "inverse")
                )
            if link.unique and link.many:
                yield self.problem(
                    "link.unique_many",
                    f"link '{entity.name}.{link.name}': 'unique' makes a single link one-to-one; "
                    "a many-link cannot be unique (drop 'many' or 'unique')",
                    (*path, "unique"),
                    key=True,
                )
            yield from self.link_fields(entity, link, path)

    def link_fields(self, entity: Entity, link, path: tuple) -> Iterator[Problem]:
        """``fields:`` of a link: only on a many-link, plain values (no computed, unique or
        conditional options), names other than the join table's own columns."""
        decls = self.doc["entities"][entity.name]["links"][link.name].get("fields")
        if not isinstance(decls, dict) or not decls:
            return
        if not link.many:
            yield self.problem(
                "link.fields_single",
                f"link '{entity.name}.{link.name}': only a many-link carries fields (its join table holds them); "
                f"a single link's data are fields of '{entity.name}'",
                (*path, "fields"),
                key=True,
            )
            return
        owner = f"{entity.name}.{link.name}"
        for f in link.fields.values():
            fpath = (*path, "fields", f.name)
            decl = decls[f.name]
            if f.name in (naming.JOIN_SOURCE, naming.JOIN_TARGET):
                yield self.problem(
                    "name.system",
                    f"field '{owner}.{f.name}': '{f.name}' is a column of every join table; choose another name",
                    fpath,
                    key=True,
                )
            if f.type not in LINK_FIELD_TYPES:
                yield self.problem(
                    "link.field_type",
                    f"field '{owner}.{f.name}': a link's field cannot be a {f.type} "
                    f"(types: {', '.join(sorted(LINK_FIELD_TYPES))})",
                    (*fpath, "type"),
                )
            for key in decl:
                if key not in LINK_FIELD_OPTIONS:
                    yield self.problem(
                        "link.field_option",
                        f"field '{owner}.{f.name}': '{key}' does not apply to a link's field "
                        f"(allowed: {', '.join(sorted(LINK_FIELD_OPTIONS))})",
                        (*fpath, key),
                        key=True,
                    )
            yield from self.field(entity, owner, f, fpath, decl)

    def entity_lists(self, entity: Entity) -> Iterator[Problem]:
        path = ("entities", entity.name)
        fields = entity.fields
        decl = self.doc["entities"][entity.name]
        if "title" in decl and entity.title not in fields:
            yield self.problem(
                "entity.title_unknown",
                f"entity '{entity.name}': title '{entity.title}' is not a field (fields: {listing(fields)})",
                (*path, "title"),
                hint=did_you_mean(entity.title, fields),
            )
        declared = decl.get("search") if isinstance(decl.get("search"), list) else []
        for i, name in enumerate(entity.search):
            f = fields.get(name)
            i = declared.index(name) if name in declared else i  # composites are spread into their parts
            if f is None:
                yield self.problem(
                    "entity.search_unknown",
                    f"entity '{entity.name}': search names unknown field '{name}' (fields: {listing(fields)})",
                    (*path, "search", i),
                    hint=did_you_mean(name, fields),
                )
            elif f.type not in TEXT_SEARCHABLE:
                yield self.problem(
                    "entity.search_type",
                    f"entity '{entity.name}': search field '{name}' is a {f.type}; only text fields can be searched",
                    (*path, "search", i),
                )
        columns = entity.columns
        for i, name in enumerate(entity.list or ()):
            if name not in columns and name not in entity.composites:  # a composite: one column, one line
                yield self.problem(
                    "entity.list_unknown",
                    f"entity '{entity.name}': list names unknown column '{name}' (columns: {listing(columns)})",
                    (*path, "list", i),
                    hint=did_you_mean(name, columns),
                )
        members = {**fields, **entity.links}
        for key in ("indexes", "unique"):
            for i, names in enumerate(getattr(entity, key)):
                for j, name in enumerate(names):
                    link = entity.links.get(name)
                    if name not in members:
                        yield self.problem(
                            f"entity.{key}_unknown",
                            f"entity '{entity.name}': {key} names unknown field '{name}' (fields and links: {listing(members)})",
                            (*path, key, i, j),
                            hint=did_you_mean(name, members),
                        )
                    elif link is not None and (link.many or link.polymorphic and key == "indexes"):
                        kind = "many" if link.many else "polymorphic"
                        yield self.problem(
                            f"entity.{key}_link",
                            f"entity '{entity.name}': {key} cannot use the {kind} link '{name}'",
                            (*path, key, i, j),
                        )

    def duplicate_rules(self, entity: Entity) -> Iterator[Problem]:
        """Each duplicate rule names a field of a fitting type and an existing ``within`` field."""
        path = ("entities", entity.name)
        fields = entity.fields
        fitting = {"email": ("email", "emails"), "phone": ("phone", "phones"), "name": ("string", "text")}
        decls = [d for d in self.doc["entities"][entity.name].get("duplicates") or () if isinstance(d, dict)]
        for i, rule in enumerate(entity.duplicates):
            f = fields.get(rule.field)
            if f is None:
                yield self.problem(
                    "entity.duplicates_invalid",
                    f"entity '{entity.name}': duplicate rule names unknown field '{rule.field}' (fields: {listing(fields)})",
                    (*path, "duplicates", i, "field"),
                    hint=did_you_mean(rule.field, fields),
                )
            elif f.type not in fitting[rule.match]:
                yield self.problem(
                    "entity.duplicates_invalid",
                    f"entity '{entity.name}': duplicate rule 'match: {rule.match}' needs "
                    f"{' or '.join(fitting[rule.match])} field, but '{rule.field}' is a {f.type}",
                    (*path, "duplicates", i, "field"),
                )
            if rule.within is not None and rule.within not in fields:
                yield self.problem(
                    "entity.duplicates_invalid",
                    f"entity '{entity.name}': duplicate rule 'within' names unknown field '{rule.within}' "
                    f"(fields: {listing(fields)})",
                    (*path, "duplicates", i, "within"),
                    hint=did_you_mean(rule.within, fields),
                )
            if rule.match != "name" and i < len(decls) and "threshold" in decls[i]:
                yield self.problem(
                    "entity.duplicates_invalid",
                    f"entity '{entity.name}': 'threshold' applies only to 'match: name' rules",
                    (*path, "duplicates", i, "threshold"),
                    key=True,
                )

    def pipeline_field(self, entity: Entity) -> Iterator[Problem]:
        """``pipeline_field`` names a choice field whose options are all pipeline names."""
        name = entity.pipeline_field
        if name is None:
            return
        path = ("entities", entity.name, "pipeline_field")
        where = f"entity '{entity.name}': pipeline_field '{name}'"
        pipelines = [p for p in entity.pipelines if "pipelines" in self.doc["entities"][entity.name]]
        f = entity.fields.get(name)
        if not pipelines:
            message, hint = f"{where} needs 'pipelines' (several named stage graphs) to choose from", None
        elif f is None:
            choices = [x.name for x in entity.fields.values() if x.type == "choice"]
            message = f"{where} is not a field (choice fields: {listing(choices)})"
            hint = did_you_mean(name, choices)
        elif f.type != "choice":
            message, hint = f"{where} is a {f.type} field; it must be a choice field of pipeline names", None
        else:
            stray = [o for o in f.option_values if o not in entity.pipelines]
            if not stray:
                return
            message = (
                f"{where}: option{'s' if len(stray) > 1 else ''} {', '.join(stray)} "
                f"{'are' if len(stray) > 1 else 'is'} not a pipeline (pipelines: {listing(pipelines)})"
            )
            hint = did_you_mean(stray[0], pipelines)
        yield self.problem("entity.pipeline_field_invalid", message, path, hint=hint)

    def task_list(self, entity: Entity) -> Iterator[Problem]:
        """``task:`` names members of the right kinds, and the entity has an owner."""
        spec = entity.task
        if spec is None:
            return
        path = ("entities", entity.name, "task")
        decl = self._decl(path)
        where = f"entity '{entity.name}': task"
        if not entity.owner:
            yield self.problem(
                "task.owner_missing",
                f"{where} lists need 'owner: true' on the entity (a task's responsible user is its owner)",
                path,
                key=True,
            )

        def at(key: str) -> dict:
            """Where to point: the member's declaration, else the ``task`` key."""
            return {"path": (*path, key)} if key in decl else {"path": path, "key": True}

        def fields_of(*types: str) -> list[str]:
            return [f.name for f in entity.fields.values() if f.type in types]

        def want_field(key: str, name: str | None, types: tuple[str, ...], what: str) -> Iterator[Problem]:
            if name is None:
                return
            f = entity.fields.get(name)
            if f is None or f.type not in types:
                fitting = fields_of(*types)
                found = f"is a {f.type} field" if f is not None else "is not a field"
                yield self.problem(
                    "task.member_invalid",
                    f"{where} {key} '{name}' {found}; it must be {what} (candidates: {listing(fitting)})",
                    **at(key),
                    hint=did_you_mean(name, fitting) if f is None else None,
                )

        yield from want_field("due", spec.due, ("date", "datetime"), "a date or datetime field")
        yield from want_field("done", spec.done, ("boolean",), "a boolean field (true: the task is closed)")
        yield from want_field("status", spec.status, ("choice",), "a choice field")
        yield from want_field("priority", spec.priority, ("choice", "integer"), "a choice or integer field")
        if spec.done and spec.status:
            yield self.problem(
                "task.state_ambiguous",
                f"{where}: name either 'done' (a boolean) or 'status' with 'closed' (a choice), not both",
                **at("status"),
            )
        if spec.status and not spec.closed:
            yield self.problem(
                "task.closed_missing",
                f"{where} status '{spec.status}' needs 'closed': the values that close a task",
                **at("status"),
            )
        if spec.closed and not spec.status:
            yield self.problem(
                "task.closed_without_status",
                f"{where} 'closed' applies only with 'status' (a choice field)",
                **at("closed"),
            )
        status = entity.fields.get(spec.status or "")
        if status is not None and status.type == "choice":
            for i, value in enumerate(spec.closed):
                if value not in status.option_values:
                    yield self.problem(
                        "task.member_invalid",
                        f"{where} closed value '{value}' is not an option of '{status.name}' "
                        f"(options: {listing(status.option_values)})",
                        **({"path": (*path, "closed", i)} if isinstance(decl.get("closed"), list) else at("closed")),
                        hint=did_you_mean(value, status.option_values),
                    )
        for key, name in (("subject", spec.subject), ("blocked_by", spec.blocked_by)):
            if name is None:
                continue
            link = entity.links.get(name)
            many = key == "blocked_by"
            need = f"a many-link to '{entity.name}'" if many else "a single link (to one or several entities)"
            if link is None:
                links = list(entity.links)
                yield self.problem(
                    "task.member_invalid",
                    f"{where} {key} '{name}' is not a link; it must be {need} (links: {listing(links)})",
                    **at(key),
                    hint=did_you_mean(name, links),
                )
            elif many and (not link.many or link.targets != (entity.name,)):
                yield self.problem(
                    "task.member_invalid",
                    f"{where} blocked_by '{name}' must be {need} (declare {{to: {entity.name}, many: true}})",
                    **at(key),
                )
            elif not many and link.many:
                yield self.problem("task.member_invalid", f"{where} subject '{name}' must be {need}", **at(key))

    def stage_refs(self, entity: Entity) -> Iterator[Problem]:
        members = [*entity.fields, *entity.links]
        roles = self.model.roles
        for pipeline in entity.pipelines.values():
            base = ("entities", entity.name) + (
                ("stages",)
                if pipeline.name == DEFAULT_PIPELINE and "stages" in self.doc["entities"][entity.name]
                else ("pipelines", pipeline.name)
            )
            for stage in pipeline.stages.values():
                for i, name in enumerate(stage.requires):
                    if name not in members:
                        yield self.problem(
                            "stage.requires_unknown",
                            f"entity '{entity.name}', stage '{stage.name}': requires unknown field or link '{name}' "
                            f"(fields and links: {listing(members)})",
                            (*base, "states", stage.name, "requires", i),
                            hint=did_you_mean(name, members),
                        )
            decl_amount = self._decl(base).get("amount")
            if decl_amount is not None:
                f = entity.fields.get(pipeline.amount or "")
                if f is None or not f.field_type.summable:
                    summable = [x.name for x in entity.fields.values() if x.field_type.summable]
                    yield self.problem(
                        "stage.amount_invalid",
                        f"entity '{entity.name}': amount '{decl_amount}' must be a number or money field "
                        f"(candidates: {listing(summable)})",
                        (*base, "amount"),
                        hint=did_you_mean(decl_amount, summable),
                    )
            checked: set = set()
            for t in pipeline.transitions:
                if t.when and (t.when, t.loc) not in checked:
                    checked.add((t.when, t.loc))
                    problem = self.expression(entity.name, t.when, f"transition {t.source} -> {t.target}: when")
                    if problem:
                        yield Problem("transition.when_invalid", problem, t.loc.file, t.loc.line, t.loc.col)
                for role in t.roles:
                    if role not in roles:
                        file, line, col = t.loc.file, t.loc.line, t.loc.col
                        yield Problem(
                            "transition.role_unknown",
                            f"entity '{entity.name}': transition {t.source} -> {t.target} names unknown role '{role}' "
                            f"(roles: {listing(roles)})",
                            file,
                            line,
                            col,
                            hint=did_you_mean(role, roles),
                        )

    def migration_maps(self, entity: Entity) -> Iterator[Problem]:
        """``option_map``, ``stage_map`` and ``pipeline_map`` (read by migrations): each maps a
        name that is no longer declared to one that is."""
        path = ("entities", entity.name)
        for f in entity.fields.values():
            if not f.option_map:
                continue
            at = (*path, "fields", f.name, "option_map")
            where = f"field '{entity.name}.{f.name}': option_map"
            if f.type not in ("choice", "multichoice"):
                yield self.problem(
                    "field.option_not_applicable",
                    f"{where} applies to choice and multichoice fields only",
                    at,
                    key=True,
                )
                continue
            values = f.option_values
            for old, new in f.option_map.items():
                if old in values:
                    yield self.problem(
                        "field.option_map_invalid",
                        f"{where}: '{old}' is still an option; map only removed options",
                        (*at, old),
                        key=True,
                    )
                elif new is None and f.required and f.type == "choice":
                    yield self.problem(
                        "field.option_map_invalid",
                        f"{where}: '{old}' maps to null but the field is required; map it to an option "
                        f"({listing(values)})",
                        (*at, old),
                    )
                elif new is not None and new not in values:
                    yield self.problem(
                        "field.option_map_invalid",
                        f"{where}: '{old}' maps to '{new}', which is not an option ({listing(values)})",
                        (*at, old),
                        hint=did_you_mean(new, values),
                    )
        for pipeline in entity.pipelines.values():
            if not pipeline.stage_map:
                continue
            base = (
                (*path, "stages")
                if "stages" in self.doc["entities"][entity.name]
                else (
                    *path,
                    "pipelines",
                    pipeline.name,
                )
            )
            stages = list(pipeline.stages)
            for old, new in pipeline.stage_map.items():
                where = f"entity '{entity.name}', pipeline '{pipeline.name}': stage_map"
                if old in pipeline.stages:
                    yield self.problem(
                        "stage.map_invalid",
                        f"{where}: '{old}' is still a stage; map only removed stages",
                        (*base, "stage_map", old),
                        key=True,
                    )
                elif new not in pipeline.stages:
                    yield self.problem(
                        "stage.map_invalid",
                        f"{where}: '{old}' maps to '{new}', which is not a stage of the pipeline ({listing(stages)})",
                        (*base, "stage_map", old),
                        hint=did_you_mean(new, stages),
                    )
        pipelines = list(entity.pipelines)
        for old, new in entity.pipeline_map.items():
            at = (*path, "pipeline_map", old)
            where = f"entity '{entity.name}': pipeline_map"
            name, _, stage = new.partition(".")
            if old in entity.pipelines:
                yield self.problem(
                    "stage.map_invalid",
                    f"{where}: '{old}' is still a pipeline; map only removed pipelines",
                    at,
                    key=True,
                )
            elif name not in entity.pipelines:
                yield self.problem(
                    "stage.map_invalid",
                    f"{where}: '{old}' maps to '{new}': '{name}' is not a pipeline (pipelines: {listing(pipelines)})",
                    at,
                    hint=did_you_mean(name, pipelines),
                )
            elif stage and stage not in entity.pipelines[name].stages:
                stages = list(entity.pipelines[name].stages)
                yield self.problem(
                    "stage.map_invalid",
                    f"{where}: '{old}' maps to '{new}': '{stage}' is not a stage of {name} ({listing(stages)})",
                    at,
                    hint=did_you_mean(stage, stages),
                )

    def expression(self, entity: str, text: str, what: str) -> str | None:
        """Why an expression (a guard or a condition) is invalid on an entity, or None."""
        from ..errors import ExpressionError
        from ..expr import check_names

        try:
            check_names(self.model, entity, text, what=what)
        except ExpressionError as exc:
            return f"entity '{entity}', {exc}" if not str(exc).startswith(entity) else str(exc)
        return None

    def _decl(self, path: tuple) -> dict:
        node = self.doc
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    # -- roles ---------------------------------------------------------------------------
    def roles(self) -> Iterator[Problem]:
        entities = self.model.entities
        for role in self.model.roles.values():
            yield from self.check_name("role", role.name, ("roles", role.name), system_columns=False)
            for entity in role.permissions:
                if entity != "*" and entity not in entities:
                    yield self.problem(
                        "role.entity_unknown",
                        f"role '{role.name}': unknown entity '{entity}' (entities: {listing(entities)})",
                        ("roles", role.name, entity),
                        key=True,
                        hint=did_you_mean(entity, entities),
                    )
            yield from self.assigned_links(role)

    def assigned_links(self, role) -> Iterator[Problem]:
        """``{assigned: [links]}`` names ``to: user`` links of the entity (on ``"*"``: of some entity)."""
        for entity, actions in role.assigned.items():
            ents = self.model.entities.values() if entity == "*" else [self.model.entities.get(entity)]
            links = sorted({f.name for e in ents if e is not None for f in e.user_links})
            for action, names in actions.items():
                for i, name in enumerate(names):
                    if name not in links:
                        yield self.problem(
                            "role.assigned_link",
                            f"role '{role.name}': {entity}.{action}: '{name}' is not a `to: user` link of "
                            f"{'any entity' if entity == '*' else repr(entity)} (links to users: {listing(links)})",
                            ("roles", role.name, entity, action, "assigned", i),
                            hint=did_you_mean(name, links),
                        )

    # -- automations -----------------------------------------------------------------------
    def automations(self) -> Iterator[Problem]:
        entities = self.model.entities
        for auto in self.model.automations.values():
            path = ("automations", auto.name)
            entity = entities.get(auto.entity)
            if entity is None:
                yield self.problem(
                    "automation.entity_unknown",
                    f"automation '{auto.name}': unknown entity '{auto.entity}' (entities: {listing(entities)})",
                    (*path, "when", "entity"),
                    hint=did_you_mean(auto.entity, entities),
                )
                continue
            stages = {s for p in entity.pipelines.values() for s in p.stages}
            for event in ("enters", "leaves"):
                value = auto.trigger.get(event)
                names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
                for i, name in enumerate(names):
                    if name == "*":
                        continue
                    if name not in stages:
                        at = (*path, "when", event) + ((i,) if isinstance(value, list) else ())
                        yield self.problem(
                            "automation.stage_unknown",
                            f"automation '{auto.name}': entity '{entity.name}' has no stage '{name}' (stages: {listing(stages)})",
                            at,
                            hint=did_you_mean(name, stages),
                        )
            members = [*entity.fields, *entity.links]
            updated = auto.trigger.get("updated")
            for i, name in enumerate(updated if isinstance(updated, list) else []):
                if name not in members:
                    yield self.problem(
                        "automation.field_unknown",
                        f"automation '{auto.name}': entity '{entity.name}' has no field or link '{name}'",
                        (*path, "when", "updated", i),
                        hint=did_you_mean(name, members),
                    )
            before = auto.trigger.get("before")
            for key, name in (
                ("overdue", auto.trigger.get("overdue")),
                ("before", before.get("field") if isinstance(before, dict) else None),
            ):
                if isinstance(name, str):
                    f = entity.fields.get(name)
                    if f is None or f.type not in ("date", "datetime"):
                        dates = [x.name for x in entity.fields.values() if x.type in ("date", "datetime")]
                        yield self.problem(
                            "automation.field_unknown",
                            f"automation '{auto.name}': '{name}' is not a date or datetime field of '{entity.name}' "
                            f"(date fields: {listing(dates)})",
                            (*path, "when", key) + (("field",) if key == "before" else ()),
                            hint=did_you_mean(name, dates),
                        )
            if auto.trigger.get("sla") is True and not any(
                s.sla_seconds for p in entity.pipelines.values() for s in p.stages.values()
            ):
                yield self.problem(
                    "automation.no_sla",
                    f"automation '{auto.name}': no stage of '{entity.name}' declares an 'sla'",
                    (*path, "when", "sla"),
                )
            if auto.condition:
                problem = self.expression(entity.name, auto.condition, f"automation '{auto.name}': if")
                if problem:
                    yield self.problem("automation.if_invalid", problem, (*path, "if"))
            yield from self.actions(auto, entity)
            from ..automation.checks import check_automation  # values, templates, recipients, schedules

            for type_, message, where in check_automation(self.model, auto, entity):
                yield self.problem(type_, message, (*path, *where))

    def actions(self, auto, entity: Entity) -> Iterator[Problem]:
        entities = self.model.entities
        for i, action in enumerate(auto.actions):
            at = ("automations", auto.name, "do", i)
            create = action.get("create")
            if isinstance(create, str) and create not in entities:
                yield self.problem(
                    "automation.entity_unknown",
                    f"automation '{auto.name}': cannot create unknown entity '{create}' (entities: {listing(entities)})",
                    (*at, "create"),
                    hint=did_you_mean(create, entities),
                )
            assign = action.get("assign")
            role = assign.get("role") if isinstance(assign, dict) else None
            if isinstance(role, str) and role not in self.model.roles:
                yield self.problem(
                    "automation.role_unknown",
                    f"automation '{auto.name}': unknown role '{role}' (roles: {listing(self.model.roles)})",
                    (*at, "assign", "role"),
                    hint=did_you_mean(role, self.model.roles),
                )
            for verb in ("update", "move"):
                spec = action.get(verb)
                target = spec.get("target") if isinstance(spec, dict) else None
                if isinstance(target, str) and entity.member(target) is None:
                    members = [*entity.links, *entity.inverses]
                    yield self.problem(
                        "automation.target_unknown",
                        f"automation '{auto.name}': '{entity.name}' has no link '{target}' (links: {listing(members)})",
                        (*at, verb, "target"),
                        hint=did_you_mean(target, members),
                    )


def _form_problems(checker: _Checker) -> Iterator[Problem]:
    """``forms:``: the entity, the fields a sender fills, the fixed values, the assignment rules."""
    from .form_checks import check_form

    for form in checker.model.forms.values():
        for type_, message, where, key in check_form(checker.model, form):
            yield checker.problem(type_, message, ("forms", form.name, *where), key=key)


def _derived_problems(checker: _Checker) -> Iterator[Problem]:
    """Computed and roll-up fields (formula, rollup): names, types, links, cycles (expr/derive.py)."""
    from ..expr.derive import analyse, has_derived

    if not has_derived(checker.model):
        return
    try:
        problems = analyse(checker.model).problems
    except (KeyError, AttributeError):  # a broken reference reported by the other checks
        return
    for type_, entity, name, key, message in problems:
        path = ("entities", entity, "fields", name)
        found = key in checker._decl(path)
        yield checker.problem(type_, message, (*path, key) if found else path, key=not found)


def _rule_problems(checker: _Checker) -> Iterator[Problem]:
    """``rules:``, ``required_if`` and ``readonly_if`` (model/rule_checks.py)."""
    from .rule_checks import check_rules

    for entity in checker.model.entities.values():
        for type_, message, where, key in check_rules(checker.model, entity):
            yield checker.problem(type_, message, ("entities", entity.name, *where), key=key)


def check_model(model: Model, doc: dict, locator) -> list[Problem]:
    checker = _Checker(model, doc, locator)
    return [
        *checker.entities(),
        *checker.roles(),
        *checker.automations(),
        *_derived_problems(checker),
        *_form_problems(checker),
        *_rule_problems(checker),
    ]


__all__ = ["RESERVED_WORDS", "SYSTEM_COLUMNS", "check_model"]
