"""Load-time checks of what automations write and say: the names in ``values``, the
``$record`` paths, the stages of ``move``, ``assign`` on an entity with owners, templates'
placeholders, ``notify`` recipients and ``at`` schedules. Pure (no database): called by
:mod:`metacrm.model.checks`, which locates each problem in the YAML.

Each check yields ``(type, message, path inside the automation)``.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..model.metamodel import Automation, Entity, Model
from ..model.suggest import did_you_mean, listing
from .compiled import SYSTEM_PLACEHOLDERS, TemplateError, parse_template, recipient_kind
from .cron import cron_problem

Issue = tuple[str, str, tuple]


def _targets(model: Model, entity: Entity, name: str) -> list[Entity]:
    """The entities a link or inverse of ``entity`` reaches."""
    if name in entity.links:
        return [model.entities[t] for t in entity.links[name].targets if t in model.entities]
    if name in entity.inverses:
        source = model.entities.get(entity.inverses[name].source)
        return [source] if source else []
    return []


def _is_link(entity: Entity, name: str) -> bool:
    return name in entity.links or name in entity.inverses


def _path(model: Model, auto: Automation, entity: Entity, path: tuple, what: str) -> str | None:
    """Why ``field`` / ``link.field`` is not something of the record (None: it is)."""
    head = path[0]
    if len(path) == 1:
        if head in entity.fields or head in SYSTEM_PLACEHOLDERS or _is_link(entity, head):
            return None
        names = [*entity.fields, *entity.links, *entity.inverses]
        hint = did_you_mean(head, names)
        return (
            f"automation '{auto.name}': {what} '{head}' is not a field or link of '{entity.name}'"
            + (f" ({hint})" if hint else "")
            + f"; fields: {listing(entity.fields)}"
        )
    if not _is_link(entity, head):
        links = [*entity.links, *entity.inverses]
        hint = did_you_mean(head, links)
        return (
            f"automation '{auto.name}': {what} '{'.'.join(path)}': '{head}' is not a link of '{entity.name}'"
            + (f" ({hint})" if hint else "")
            + f"; links: {listing(links)}"
        )
    targets = _targets(model, entity, head)
    name = path[1]
    if any(name in t.fields or name in SYSTEM_PLACEHOLDERS for t in targets):
        return None
    fields = sorted({f for t in targets for f in t.fields})
    hint = did_you_mean(name, fields)
    return (
        f"automation '{auto.name}': {what} '{'.'.join(path)}': "
        f"{' or '.join(t.name for t in targets)} has no field '{name}'" + (f" ({hint})" if hint else "")
    )


def _values(model: Model, auto: Automation, entity: Entity, target: Entity, values, at: tuple) -> Iterator[Issue]:
    if not isinstance(values, dict):
        return
    for name, value in values.items():
        if target.member(name) is None and not (name == "owner" and target.owner):
            members = [*target.fields, *target.links]
            hint = did_you_mean(name, members)
            yield (
                "automation.value_unknown",
                f"automation '{auto.name}': '{target.name}' has no field or link '{name}'"
                + (f" ({hint})" if hint else "")
                + f"; fields and links: {listing(members)}",
                (*at, name),
            )
            continue
        if name in target.inverses:
            yield (
                "automation.value_unknown",
                f"automation '{auto.name}': '{name}' is an inverse link of '{target.name}': set it from "
                f"'{target.inverses[name].source}' instead",
                (*at, name),
            )
            continue
        if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
            if value in ("$record", "$now"):
                continue
            if not value.startswith("$record."):
                yield (
                    "automation.value_invalid",
                    f"automation '{auto.name}': {name}: unknown value '{value}'; "
                    "use $record, $record.FIELD, $record.LINK.FIELD, $now (or $$ for a literal $)",
                    (*at, name),
                )
                continue
            path = tuple(value[len("$record.") :].split("."))
            problem = (
                _path(model, auto, entity, path, "value")
                if len(path) <= 2 and all(path)
                else f"automation '{auto.name}': '{value}' is not $record.FIELD or $record.LINK.FIELD"
            )
            if problem:
                yield ("automation.value_invalid", problem, (*at, name))


def check_automation(model: Model, auto: Automation, entity: Entity) -> Iterator[Issue]:
    """Every problem of one automation's trigger schedule and actions."""
    cron = auto.trigger.get("at")
    if isinstance(cron, str):
        problem = cron_problem(cron)
        if problem:
            yield ("automation.at_invalid", f"automation '{auto.name}': at: {problem}", ("when", "at"))
    for index, action in enumerate(auto.actions):
        at = ("do", index)
        create = action.get("create")
        if isinstance(create, str) and create in model.entities:
            target = model.entities[create]
            yield from _values(model, auto, entity, target, action.get("values"), (*at, "values"))
            if action.get("assign") and not target.owner:
                yield (
                    "automation.assign_no_owner",
                    f"automation '{auto.name}': '{create}' has no owner (declare owner: true) to assign",
                    (*at, "assign"),
                )
        elif "values" in action or "assign" in action:
            yield (
                "automation.action_invalid",
                f"automation '{auto.name}': 'values' and 'assign' go with 'create'",
                at,
            )
        verbs = [v for v in ("create", "update", "move", "notify") if v in action]
        if len(verbs) != 1:
            yield (
                "automation.action_invalid",
                f"automation '{auto.name}': an action does one of create, update, move, notify"
                + (f" (this one: {', '.join(verbs)})" if verbs else ""),
                at,
            )
        for verb in ("update", "move"):
            spec = action.get(verb)
            if not isinstance(spec, dict):
                continue
            target = spec.get("target")
            if isinstance(target, str) and entity.member(target) is None:
                continue  # reported by the model checks
            if isinstance(target, str) and target in entity.fields:
                yield (
                    "automation.target_unknown",
                    f"automation '{auto.name}': '{target}' is a field of '{entity.name}', not a link",
                    (*at, verb, "target"),
                )
                continue
            targets = _targets(model, entity, target) if isinstance(target, str) else [entity]
            if verb == "update":
                for t in targets:
                    yield from _values(model, auto, entity, t, spec.get("values"), (*at, verb, "values"))
            else:
                stage = spec.get("stage")
                for t in targets:
                    stages = {s for p in t.pipelines.values() for s in p.stages}
                    if not t.has_stages:
                        yield (
                            "automation.stage_unknown",
                            f"automation '{auto.name}': '{t.name}' has no stages to move",
                            (*at, verb),
                        )
                    elif isinstance(stage, str) and stage not in stages:
                        hint = did_you_mean(stage, stages)
                        yield (
                            "automation.stage_unknown",
                            f"automation '{auto.name}': '{t.name}' has no stage '{stage}'"
                            + (f" ({hint})" if hint else "")
                            + f"; stages: {listing(stages)}",
                            (*at, verb, "stage"),
                        )
        notify = action.get("notify")
        if isinstance(notify, dict):
            yield from _notify(model, auto, entity, notify, (*at, "notify"))


def _webhook_host_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    from ..notify.addresses import literal_host_problem

    try:
        return literal_host_problem(urlsplit(url).hostname)
    except ValueError:
        return None


def _notify(model: Model, auto: Automation, entity: Entity, notify: dict, at: tuple) -> Iterator[Issue]:
    for part in ("template", "subject"):
        text = notify.get(part)
        if not isinstance(text, str):
            continue
        try:
            parsed = parse_template(text)
        except TemplateError as exc:
            yield ("automation.template_invalid", f"automation '{auto.name}': {part}: {exc}", (*at, part))
            continue
        for item in parsed:
            if isinstance(item, tuple):
                problem = _path(model, auto, entity, item, f"{part} placeholder")
                if problem:
                    yield ("automation.placeholder_unknown", problem, (*at, part))
    for i, to in enumerate(notify.get("to") or ()):
        if not isinstance(to, str):
            continue
        kind, value = recipient_kind(to)
        where = (*at, "to", i)
        if kind == "role" and value not in model.roles:
            hint = did_you_mean(value, model.roles)
            yield (
                "automation.role_unknown",
                f"automation '{auto.name}': notify: unknown role '{value}'"
                + (f" ({hint})" if hint else "")
                + f"; roles: {listing(model.roles)}",
                where,
            )
        elif kind == "user_link" and value not in {f.name for f in entity.user_links}:
            links = [f.name for f in entity.user_links]
            hint = did_you_mean(value, links)
            yield (
                "automation.recipient_invalid",
                f"automation '{auto.name}': notify: '{value}' is not a `to: user` link of '{entity.name}'"
                + (f" ({hint})" if hint else "")
                + f"; links to users: {listing(links)}",
                where,
            )
        elif kind == "owner" and not entity.owner:
            yield (
                "automation.recipient_invalid",
                f"automation '{auto.name}': notify: '{entity.name}' has no owner (declare owner: true)",
                where,
            )
        elif kind == "webhook" and not model.webhooks_allow_private:
            why = _webhook_host_problem(value)
            if why:
                yield (
                    "automation.webhook_private",
                    f"automation '{auto.name}': notify: webhook {value}: {why}; "
                    "allow such addresses with webhooks: {allow_private: true} at the top of the model",
                    where,
                )
        elif kind == "email_path":
            path = tuple(value.split("."))
            problem = (
                _path(model, auto, entity, path, "notify to email:")
                if len(path) <= 2 and all(path)
                else f"automation '{auto.name}': '{to}' is not email:FIELD or email:LINK.FIELD"
            )
            if problem is None and len(path) == 1 and path[0] not in entity.fields:
                problem = f"automation '{auto.name}': '{to}': '{path[0]}' is not a field of '{entity.name}'"
            if problem:
                yield ("automation.recipient_invalid", problem, where)
