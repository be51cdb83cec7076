"""Build the frozen metamodel from a merged, schema-checked model document.

The builder is defensive: a part the JSON Schema already refused is skipped, so that the
semantic checks can still report everything else in the same run. Problems that only make
sense while reading declarations (two initial stages, a transition to an unknown stage) are
reported here; cross-reference checks live in ``checks.py``, graph checks in ``stages``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from types import MappingProxyType

from ..errors import Problem
from .composite import (
    COMPOSITE_TYPES,
    PARTS,
    REQUIRED_PART,
    SEARCHED_PARTS,
    SORT_PART,
    Composite,
    full_name_formula,
    part_name,
)
from .field_types import FIELD_TYPES
from .file_rules import accept_items, attachments_spec, parse_size
from .metamodel import (
    DEFAULT_PIPELINE,
    AssignRule,
    Automation,
    DuplicateRule,
    Entity,
    Field,
    Form,
    InverseLink,
    Link,
    Loc,
    Model,
    Option,
    Pipeline,
    Role,
    Rule,
    Stage,
    TaskSpec,
    Transition,
)
from .suggest import did_you_mean, listing

USER = "user"  # `to: user`: a link to the CRM's users (runtime/users.py), not to an entity
_DURATION = re.compile(r"([0-9]+)\s*([wdhms])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int | None:
    """Seconds in a duration such as ``1d 12h``; None when it is not one."""
    if not isinstance(text, str) or not re.fullmatch(r"\s*([0-9]+\s*[wdhms]\s*)+", text):
        return None
    return sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def _spread(names: tuple[str, ...], composites: dict, parts: dict, fields: dict) -> tuple[str, ...]:
    """Names with each composite field replaced by its parts that ``parts`` names for its type,
    and each rich_text field by its plain text."""
    out: list[str] = []
    for n in names:
        c = composites.get(n)
        if c is None and n in fields and fields[n].type == "rich_text":
            out.append(part_name(n, "text"))
            continue
        out += [part_name(n, p) for p in parts[c.type]] if c else [n]
    return tuple(dict.fromkeys(out))


def _names(value) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def currency_scales(fields: dict[str, Field]) -> dict[str, Field]:
    """The fields, each currency field with the scale its currency gives: a fixed currency's
    decimals, or the most decimals among the codes of its ``currency_field`` (unknown codes
    count as 2; the model checks report them)."""
    from dataclasses import replace

    from .field_types import currency_precision

    out = dict(fields)
    for name, f in fields.items():
        if f.type != "currency":
            continue
        if f.currency:
            scale = currency_precision(f.currency)
        else:
            source = fields.get(f.currency_field or "")
            codes = source.option_values if source is not None and source.type == "choice" else ()
            scale = max((currency_precision(c) or 2 for c in codes), default=None)
        out[name] = replace(f, scale=2 if scale is None else scale)
    return out


def _zone_names() -> set[str]:
    from zoneinfo import available_timezones

    return available_timezones()


def _frozen(d: dict) -> MappingProxyType:
    return MappingProxyType(dict(d))


class _Builder:
    def __init__(self, doc: dict, locator):
        self.doc = doc
        self.locator = locator
        self.problems: list[Problem] = []

    # -- helpers -------------------------------------------------------------------------
    def loc(self, path, *, key: bool = False) -> Loc:
        return Loc(*self.locator.at(path, key=key))

    def error(self, type_: str, message: str, path, *, key: bool = False, hint=None, severity="error"):
        file, line, col = self.locator.at(path, key=key)
        self.problems.append(Problem(type_, message, file, line, col, severity, tuple(path), hint))

    # -- model ---------------------------------------------------------------------------
    def build(self, canonical: str, files: tuple[str, ...]) -> Model:
        entities = {
            name: self.entity(name, decl)
            for name, decl in _dict(self.doc.get("entities")).items()
            if isinstance(decl, dict)
        }
        entities = self.attach_inverses(entities)
        roles = {
            name: self.role(name, decl) for name, decl in _dict(self.doc.get("roles")).items() if isinstance(decl, dict)
        }
        automations = {
            name: self.automation(name, decl)
            for name, decl in _dict(self.doc.get("automations")).items()
            if isinstance(decl, dict)
        }
        forms = {
            name: self.form(name, decl) for name, decl in _dict(self.doc.get("forms")).items() if isinstance(decl, dict)
        }
        return Model(
            name=_str(self.doc.get("name")) or "model",
            label=_str(self.doc.get("label")),
            description=_str(self.doc.get("description")),
            region=_str(self.doc.get("region")),
            timezone=self.timezone(),
            webhooks_allow_private=_dict(self.doc.get("webhooks")).get("allow_private") is True,
            entities=_frozen(entities),
            roles=_frozen(roles),
            automations=_frozen(automations),
            forms=_frozen(forms),
            files=files,
            canonical=canonical,
            sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        )

    def timezone(self) -> str:
        """The model's ``timezone:`` (an IANA name), checked against the zone database."""
        name = self.doc.get("timezone")
        if not isinstance(name, str) or not name or name == "UTC":
            return "UTC"  # a wrong type is reported by the JSON Schema
        from ..dates import DateError, zone_info

        try:
            zone_info(name)
        except DateError:
            from .suggest import did_you_mean

            hint = did_you_mean(name, _zone_names())
            self.error(
                "model.timezone",
                f"timezone: unknown time zone {name!r}; use an IANA name such as 'Europe/Moscow' or 'UTC'"
                + (f" ({hint})" if hint else ""),
                ("timezone",),
            )
            return "UTC"
        return name

    # -- entities ------------------------------------------------------------------------
    def entity(self, name: str, decl: dict) -> Entity:
        path = ("entities", name)
        fields: dict[str, Field] = {}
        composites: dict[str, Composite] = {}
        for fname, fdecl in _dict(decl.get("fields")).items():
            if isinstance(fdecl, dict) and fdecl.get("type") in COMPOSITE_TYPES:
                composite, parts = self.composite((*path, "fields", fname), fname, fdecl)
                composites[fname] = composite
                fields.update((f.name, f) for f in parts)
            elif isinstance(fdecl, dict) and fdecl.get("type") in FIELD_TYPES:
                fields[fname] = self.field((*path, "fields", fname), fname, fdecl)
                if fdecl["type"] == "rich_text":  # its plain text: searched, filtered, listed
                    text = part_name(fname, "text")
                    label = f"{_str(fdecl.get('label')) or fname}: text"
                    renamed = tuple(part_name(old, "text") for old in _names(fdecl.get("renamed_from")))
                    fields[text] = Field(
                        text, "text", label=label, renamed_from=renamed, loc=fields[fname].loc, text_of=fname
                    )
        fields = currency_scales(fields)
        links = {
            lname: self.link((*path, "links", lname), name, lname, ldecl)
            for lname, ldecl in _dict(decl.get("links")).items()
            if isinstance(ldecl, dict) and _names(ldecl.get("to")) and USER not in _names(ldecl.get("to"))
        }
        users = {  # `to: user` links are held as fields (a login, a list of logins)
            lname: self.user_link((*path, "links", lname), name, lname, ldecl)
            for lname, ldecl in _dict(decl.get("links")).items()
            if isinstance(ldecl, dict) and USER in _names(ldecl.get("to"))
        }
        for lname in [*links, *users]:
            if lname in fields:
                self.error(
                    "entity.name_conflict",
                    f"entity '{name}': '{lname}' is both a field and a link",
                    (*path, "links", lname),
                    key=True,
                )
        fields.update((lname, f) for lname, f in users.items() if lname not in fields)
        pipelines = self.pipelines(name, decl, fields)
        title = _str(decl.get("title"))
        if title in composites:  # a person's name is titled by its full name
            title = part_name(title, SORT_PART[composites[title].type])
        if title is None:
            title = next((f.name for f in fields.values() if f.type == "string"), None)
        return Entity(
            name=name,
            fields=_frozen(fields),
            links=_frozen(links),
            pipelines=_frozen(pipelines),
            label=_str(decl.get("label")),
            plural=_str(decl.get("plural")),
            description=_str(decl.get("description")),
            owner=decl.get("owner") is True,
            archive=decl.get("archive") is True,
            title=title,
            search=_spread(_names(decl.get("search")), composites, SEARCHED_PARTS, fields),
            list=_names(decl["list"]) if isinstance(decl.get("list"), list) else None,
            composites=_frozen(composites),
            indexes=tuple(_names(ix) for ix in decl.get("indexes") or () if _names(ix)),
            unique=tuple(_names(u) for u in decl.get("unique") or () if _names(u)),
            duplicates=tuple(  # a rule on a person_name compares its full name
                replace(r, field=part_name(r.field, SORT_PART[composites[r.field].type])) if r.field in composites else r
                for r in self.duplicates(path, decl)
            ),
            rules=self.rules(path, decl),
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
            pipeline_field=_str(decl.get("pipeline_field")),
            pipeline_map=_frozen({k: v for k, v in _dict(decl.get("pipeline_map")).items() if isinstance(v, str)}),
            task=self.task(path, decl, fields, links),
            attachments=attachments_spec(decl.get("attachments")),
        )

    def task(self, path: tuple, decl: dict, fields: dict, links: dict) -> TaskSpec | None:
        """``task:`` names its members; one not named takes its conventional name when the
        entity has a member of that name (``due`` always: checked)."""
        spec = decl.get("task")
        if not isinstance(spec, dict):
            return None
        members = {**fields, **links}

        def member(key: str, default: str | None) -> str | None:
            if key in spec:
                return _str(spec[key])
            return default if default in members else None

        status = member("status", None)
        return TaskSpec(
            due=_str(spec.get("due")) or "due",
            done=member("done", None if status else "done"),
            status=status,
            closed=_names(spec.get("closed")),
            priority=member("priority", "priority"),
            subject=member("subject", "subject"),
            blocked_by=member("blocked_by", "blocked_by"),
            loc=self.loc((*path, "task"), key=True),
        )

    def duplicates(self, path: tuple, decl: dict) -> tuple[DuplicateRule, ...]:
        rules = []
        for i, rdecl in enumerate(decl.get("duplicates") or ()):
            if not isinstance(rdecl, dict) or rdecl.get("match") not in ("email", "phone", "name"):
                continue
            field_name = _str(rdecl.get("field"))
            if field_name is None:
                continue
            threshold = _num(rdecl.get("threshold"))
            rules.append(
                DuplicateRule(
                    match=rdecl["match"],
                    field=field_name,
                    within=_str(rdecl.get("within")),
                    threshold=90 if threshold is None else threshold,
                    action="warn" if rdecl.get("action") == "warn" else "block",
                    loc=self.loc((*path, "duplicates", i)),
                )
            )
        return tuple(rules)

    def rules(self, path: tuple, decl: dict) -> tuple[Rule, ...]:
        """``rules:``: items without a text ``check`` and ``message`` are left to the JSON Schema."""
        out = []
        for i, rdecl in enumerate(decl.get("rules") or ()):
            if isinstance(rdecl, dict) and _str(rdecl.get("check")) and _str(rdecl.get("message")):
                out.append(
                    Rule(rdecl["check"], rdecl["message"], _str(rdecl.get("name")), self.loc((*path, "rules", i)))
                )
        return tuple(out)

    def field(self, path: tuple, name: str, decl: dict) -> Field:
        options = []
        for opt in decl.get("options") or ():
            if isinstance(opt, str):
                options.append(Option(opt))
            elif isinstance(opt, dict) and isinstance(opt.get("value"), str):
                order = opt.get("order")
                options.append(
                    Option(
                        opt["value"],
                        _str(opt.get("label")),
                        _str(opt.get("renamed_from")),
                        color=_str(opt.get("color")),
                        order=order if isinstance(order, int) and not isinstance(order, bool) else None,
                    )
                )
        max_length = decl.get("max_length")
        return Field(
            name=name,
            type=decl["type"],
            required=decl.get("required") is True,
            unique=decl.get("unique") is True,
            index=decl.get("index") is True,
            default=decl.get("default"),
            fill=decl.get("fill"),
            min=_num(decl.get("min")),
            max=_num(decl.get("max")),
            max_length=max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else None,
            pattern=_str(decl.get("pattern")),
            options=tuple(options),
            label=_str(decl.get("label")),
            help=_str(decl.get("help")),
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
            option_map=_frozen(
                {k: v for k, v in _dict(decl.get("option_map")).items() if v is None or isinstance(v, str)}
            ),
            formula=_str(decl.get("formula")),
            rollup=_str(decl.get("rollup")),
            required_if=_str(decl.get("required_if")),
            readonly_if=_str(decl.get("readonly_if")),
            readonly=decl.get("readonly") is True or _str(decl.get("autonumber")) is not None,
            autonumber=_str(decl.get("autonumber")),
            scale=_count(decl.get("scale")),
            precision=_count(decl.get("precision")),
            currency=_str(decl.get("currency")),
            currency_field=_str(decl.get("currency_field")),
            round=decl.get("round") is True,
            accept=accept_items(decl.get("accept")),
            max_size=parse_size(decl.get("max_size")),
        )

    def composite(self, path: tuple, name: str, decl: dict) -> tuple[Composite, list[Field]]:
        """A composite field (model/composite.py) and its part fields ``<name>.<part>``."""
        kind = decl["type"]
        caption = _str(decl.get("label")) or name
        loc = self.loc(path, key=True)
        renamed = _names(decl.get("renamed_from"))
        parts = []
        for part in PARTS[kind]:
            full = part_name(name, part.name)
            parts.append(
                Field(
                    name=full,
                    type=part.type,
                    required=decl.get("required") is True and REQUIRED_PART[kind] == part.name,
                    max_length=part.max_length,
                    label=f"{caption}: {part.caption}",
                    help=_str(decl.get("help")) if part is PARTS[kind][0] else None,
                    renamed_from=tuple(part_name(old, part.name) for old in renamed),
                    loc=loc,
                    formula=full_name_formula(name) if (kind, part.name) == ("person_name", "full") else None,
                    part_of=name,
                )
            )
        composite = Composite(name, kind, _str(decl.get("label")), tuple((p.name, part_name(name, p.name)) for p in PARTS[kind]))
        return composite, parts

    def user_link(self, path: tuple, entity: str, name: str, decl: dict) -> Field:
        """A ``to: user`` link, held as a field: ``user`` (one login) or, with ``many: true``,
        ``users`` (a list of logins). What does not apply to a link to users is reported here."""
        where = f"link '{entity}.{name}'"
        if _names(decl.get("to")) != (USER,):
            self.error(
                "link.user_polymorphic",
                f"{where}: 'user' cannot be one of several targets; a link to users has `to: user` alone",
                (*path, "to"),
            )
        for key, why in (
            ("inverse", "users see their records through filters (`manager = :me`), not through an inverse"),
            ("fields", "a link to users carries no fields"),
        ):
            if key in decl:
                self.error(
                    "link.user_option", f"{where}: '{key}' does not apply to a link to users: {why}", (*path, key)
                )
        on_delete = decl.get("on_delete", "restrict")
        if on_delete == "cascade":
            self.error(
                "link.user_option",
                f"{where}: on_delete 'cascade' does not apply to a link to users (removing a user never deletes "
                "records); use 'restrict' (the default: the removal is refused while the user is linked) or 'set_null'",
                (*path, "on_delete"),
            )
        elif on_delete == "set_null" and decl.get("required") is True:
            self.error(
                "link.set_null_required",
                f"{where}: on_delete 'set_null' cannot clear a required link; use 'restrict'",
                (*path, "on_delete"),
            )
        return Field(
            name=name,
            type="users" if decl.get("many") is True else "user",
            required=decl.get("required") is True,
            unique=decl.get("unique") is True and decl.get("many") is not True,
            label=_str(decl.get("label")),
            help=_str(decl.get("help")),
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
            on_delete="set_null" if on_delete == "set_null" else "restrict",
            fill=decl.get("fill"),
        )

    def link(self, path: tuple, entity: str, name: str, decl: dict) -> Link:
        if "fill" in decl:
            self.error(
                "link.fill",
                f"link '{entity}.{name}': 'fill' applies to links to users (`to: user`) only; a link to records is "
                "given to existing records after the migration (metacrm link, or an import)",
                (*path, "fill"),
                key=True,
            )
        on_delete = decl.get("on_delete")
        return Link(
            name=name,
            entity=entity,
            targets=_names(decl.get("to")),
            many=decl.get("many") is True,
            required=decl.get("required") is True,
            inverse=_str(decl.get("inverse")),
            on_delete=on_delete if on_delete in ("restrict", "cascade", "set_null") else "restrict",
            label=_str(decl.get("label")),
            help=_str(decl.get("help")),
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
            fields=_frozen(
                {
                    fname: self.field((*path, "fields", fname), fname, fdecl)
                    for fname, fdecl in _dict(decl.get("fields")).items()
                    if isinstance(fdecl, dict) and fdecl.get("type") in FIELD_TYPES
                }
            ),
            unique=decl.get("unique") is True,
        )

    def attach_inverses(self, entities: dict[str, Entity]) -> dict[str, Entity]:
        inverses: dict[str, dict[str, InverseLink]] = {name: {} for name in entities}
        for entity in entities.values():
            for link in entity.links.values():
                if not link.inverse:
                    continue
                path = ("entities", entity.name, "links", link.name, "inverse")
                for target in link.targets:
                    if target not in entities:
                        continue  # reported as link.unknown_target
                    seen = inverses[target]
                    owner = entities[target]
                    if link.inverse in owner.fields or link.inverse in owner.links:
                        kind = "field" if link.inverse in owner.fields else "link"
                        self.error(
                            "link.inverse_conflict",
                            f"link '{entity.name}.{link.name}': inverse '{link.inverse}' is already a {kind} of '{target}'",
                            path,
                        )
                    elif link.inverse in seen:
                        other = seen[link.inverse]
                        self.error(
                            "link.inverse_conflict",
                            f"link '{entity.name}.{link.name}': inverse '{link.inverse}' of '{target}' "
                            f"is already the inverse of '{other.source}.{other.link}'",
                            path,
                        )
                    else:
                        seen[link.inverse] = InverseLink(
                            link.inverse, target, entity.name, link.name, many_to_many=link.many
                        )
        return {name: _replace_inverses(entity, inverses[name]) for name, entity in entities.items()}

    # -- stages --------------------------------------------------------------------------
    def pipelines(self, entity: str, decl: dict, fields: dict) -> dict[str, Pipeline]:
        path = ("entities", entity)
        if "stages" in decl and "pipelines" in decl:
            self.error(
                "entity.stages_and_pipelines",
                f"entity '{entity}': declare either 'stages' (one pipeline) or 'pipelines' (several), not both",
                (*path, "pipelines"),
                key=True,
            )
        if isinstance(decl.get("stages"), dict):
            return {
                DEFAULT_PIPELINE: self.pipeline(entity, DEFAULT_PIPELINE, decl["stages"], (*path, "stages"), fields)
            }
        return {
            pname: self.pipeline(entity, pname, pdecl, (*path, "pipelines", pname), fields)
            for pname, pdecl in _dict(decl.get("pipelines")).items()
            if isinstance(pdecl, dict) and "stages" not in decl
        }

    def pipeline(self, entity: str, name: str, decl: dict, path: tuple, fields: dict) -> Pipeline:
        where = f"entity '{entity}'" + ("" if name == DEFAULT_PIPELINE else f", pipeline '{name}'")
        states = {
            sname: self.stage((*path, "states", sname), sname, sdecl or {})
            for sname, sdecl in _dict(decl.get("states")).items()
            if sdecl is None or isinstance(sdecl, dict)
        }
        initial = self.initial(where, decl, path, states)
        transitions = self.transitions(where, decl.get("transitions"), (*path, "transitions"), states)
        adjacency: dict[str, dict[str, Transition]] = {s: {} for s in states}
        for t in transitions:
            adjacency[t.source].setdefault(t.target, t)
        amount = _str(decl.get("amount"))
        if amount is None:
            money = [f.name for f in fields.values() if f.type in ("money", "currency")]
            amount = money[0] if len(money) == 1 else None
        return Pipeline(
            name=name,
            entity=entity,
            initial=initial or "",
            stages=_frozen(states),
            transitions=tuple(transitions),
            label=_str(decl.get("label")),
            amount=amount,
            money_field=fields.get(amount or "") if isinstance(fields, dict) else None,
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
            adjacency=_frozen({s: _frozen(t) for s, t in adjacency.items()}),
            stage_map=_frozen({k: v for k, v in _dict(decl.get("stage_map")).items() if isinstance(v, str)}),
        )

    def stage(self, path: tuple, name: str, decl: dict) -> Stage:
        kind = decl.get("kind")
        sla = _str(decl.get("sla"))
        probability = _num(decl.get("probability"))
        if probability is None:
            probability = {"won": 1.0, "lost": 0.0}.get(kind)
        return Stage(
            name=name,
            kind=kind if kind in ("open", "won", "lost") else "open",
            label=_str(decl.get("label")),
            probability=probability,
            requires=_names(decl.get("requires")),
            sla=sla,
            sla_seconds=parse_duration(sla) if sla else None,
            renamed_from=_names(decl.get("renamed_from")),
            loc=self.loc(path, key=True),
        )

    def initial(self, where: str, decl: dict, path: tuple, states: dict) -> str | None:
        flagged = [
            s
            for s, sdecl in _dict(decl.get("states")).items()
            if isinstance(sdecl, dict) and sdecl.get("initial") is True
        ]
        declared = _str(decl.get("initial"))
        candidates = ([declared] if declared else []) + [s for s in flagged if s != declared]
        if not candidates:
            self.error(
                "stage.no_initial",
                f"{where}: no initial stage; add 'initial: STAGE' (stages: {listing(states)})",
                path,
                key=True,
            )
            return None
        if len(candidates) > 1:
            self.error(
                "stage.several_initial",
                f"{where}: several initial stages ({', '.join(candidates)}); a pipeline starts in exactly one",
                (*path, "states", candidates[1]) if candidates[1] in flagged else (*path, "initial"),
                key=True,
            )
        if declared and declared not in states:
            self.error(
                "stage.unknown",
                f"{where}: initial stage '{declared}' is not one of the stages ({listing(states)})",
                (*path, "initial"),
                hint=did_you_mean(declared, states),
            )
            return None
        return candidates[0]

    def transitions(self, where: str, decl, path: tuple, states: dict) -> list[Transition]:
        open_stages = [s.name for s in states.values() if not s.closed]
        result: list[Transition] = []

        def resolve(names, at: tuple, *, star: bool) -> list[str]:
            out = []
            for n in names:
                if n == "*" and star:
                    out.extend(open_stages)
                elif n in states:
                    out.append(n)
                else:
                    self.error(
                        "stage.unknown",
                        f"{where}: transition names unknown stage '{n}' (stages: {listing(states)})",
                        at,
                        key=at[-1] == n,
                        hint=did_you_mean(n, states),
                    )
            return out

        def add(sources, targets, at: tuple, item: dict):
            roles = _names(item.get("roles"))
            for source in sources:
                for target in targets:
                    if item.get("_star") and source == target:
                        continue  # "*" -> X never means X -> X
                    result.append(
                        Transition(
                            source,
                            target,
                            when=_str(item.get("when")),
                            roles=roles,
                            reopen=item.get("reopen") is True,
                            label=_str(item.get("label")),
                            loc=self.loc(at),
                        )
                    )

        if isinstance(decl, dict):
            for source, targets in decl.items():
                sources = resolve([source], (*path, source), star=True)
                for i, target in enumerate(_names(targets)):
                    at = (*path, source, i) if isinstance(targets, list) else (*path, source)
                    add(sources, resolve([target], at, star=False), at, {"_star": source == "*"})
        elif isinstance(decl, list):
            for i, item in enumerate(decl):
                if not isinstance(item, dict):
                    continue
                at = (*path, i)
                src = item.get("from")
                sources = resolve(_names(src), (*at, "from"), star=True)
                targets = resolve(_names(item.get("to")), (*at, "to"), star=False)
                add(sources, targets, at, {**item, "_star": src == "*"})
        return result

    # -- roles and automations -------------------------------------------------------------
    def role(self, name: str, decl: dict) -> Role:
        from .metamodel import ACTIONS

        permissions = {}
        assigned = {}
        for entity, spec in decl.items():
            if isinstance(spec, str):
                permissions[entity] = _frozen({a: spec for a in ACTIONS})
            elif isinstance(spec, dict):
                scopes = {a: spec.get(a, "none") for a in ACTIONS}
                # ``read: {assigned: [manager, assignees]}``: the scope ``assigned`` through those links
                named = {a: _names(s.get("assigned")) for a, s in scopes.items() if isinstance(s, dict)}
                permissions[entity] = _frozen({a: "assigned" if a in named else s for a, s in scopes.items()})
                if named:
                    assigned[entity] = _frozen(named)
        return Role(name, _frozen(permissions), self.loc(("roles", name), key=True), _frozen(assigned))

    def automation(self, name: str, decl: dict) -> Automation:
        trigger = _dict(decl.get("when"))
        return Automation(
            name=name,
            entity=_str(trigger.get("entity")) or "",
            trigger=_frozen(trigger),
            condition=_str(decl.get("if")),
            actions=tuple(_frozen(a) for a in decl.get("do") or () if isinstance(a, dict)),
            label=_str(decl.get("label")),
            loc=self.loc(("automations", name), key=True),
        )

    def form(self, name: str, decl: dict) -> Form:
        assign = decl.get("assign")
        rules = [assign] if isinstance(assign, dict) else assign if isinstance(assign, list) else []
        rate = _str(decl.get("rate")) or "10/minute"
        count, _, period = rate.partition("/")
        seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}.get(period, 60)
        return Form(
            name=name,
            entity=_str(decl.get("entity")) or "",
            fields=_names(decl.get("fields")),
            values=_frozen(_dict(decl.get("values"))),
            assign=tuple(
                AssignRule(
                    user=_str(r.get("user")), round_robin=_str(r.get("round_robin")), condition=_str(r.get("if"))
                )
                for r in rules
                if isinstance(r, dict)
            ),
            honeypot=_str(decl.get("honeypot")) or "website",
            rate=(int(count) if count.isdigit() and int(count) > 0 else 10, seconds),
            token=decl.get("token") is True,
            label=_str(decl.get("label")),
            redirect=_str(decl.get("redirect")),
            loc=self.loc(("forms", name), key=True),
        )


def _replace_inverses(entity: Entity, inverses: dict) -> Entity:
    from dataclasses import replace

    return replace(entity, inverses=_frozen(inverses)) if inverses else entity


def build_model(
    doc: dict, locator, *, canonical: str = "{}", files: tuple[str, ...] = ()
) -> tuple[Model, list[Problem]]:
    """Metamodel from a merged document, with every problem the checks find. Pure."""
    from ..stages.checks import check_graphs
    from .checks import check_model

    builder = _Builder(doc, locator)
    model = builder.build(canonical, files)
    problems = builder.problems
    problems.extend(check_model(model, doc, locator))
    problems.extend(check_graphs(model, locator))
    warnings = tuple(p for p in problems if not p.is_error)
    if warnings:
        from dataclasses import replace

        model = replace(model, warnings=warnings)
    return model, problems


__all__ = ["build_model", "parse_duration"]
