"""The model as one JSON document: what API clients and the web app build their screens from
(``GET /api/v1/model``). Only what a client needs: names, types, labels, links both ways,
pipelines with their stages and moves, roles; never file positions."""

from __future__ import annotations

from .metamodel import Entity, Field, Model, Pipeline


def _field(f: Field) -> dict:
    doc: dict = {"name": f.name, "type": f.type, "label": f.label or f.name, "required": f.required}
    for key in ("unique", "help", "min", "max", "max_length", "pattern", "default", "formula", "rollup"):
        value = getattr(f, key)
        if value not in (None, False, ()):
            doc[key] = value
    if f.options:
        doc["options"] = [{"value": o.value, "label": o.label or o.value} for o in f.options]
    if f.formula or f.rollup:
        doc["read_only"] = True
    return doc


def _pipeline(p: Pipeline) -> dict:
    return {
        "name": p.name,
        "label": p.label or p.name,
        "initial": p.initial,
        "amount": p.amount,
        "stages": [
            {
                "name": s.name,
                "label": s.label or s.name,
                "kind": s.kind,
                "probability": s.probability,
                "requires": list(s.requires),
                "sla": s.sla,
            }
            for s in p.stages.values()
        ],
        "moves": [
            {"from": t.source, "to": t.target, "when": t.when, "roles": list(t.roles), "label": t.label}
            for t in p.transitions
        ],
    }


def _entity(e: Entity) -> dict:
    return {
        "name": e.name,
        "label": e.label or e.name,
        "plural": e.plural,
        "description": e.description,
        "title": e.title,
        "owner": e.owner,
        "search": list(e.search),
        "fields": [_field(f) for f in e.fields.values() if not f.user_link],
        "links": [
            {
                "name": link.name,
                "label": link.label or link.name,
                "to": list(link.targets),
                "many": link.many,
                "required": link.required,
                "inverse": link.inverse,
                "on_delete": link.on_delete,
            }
            for link in e.links.values()
        ]
        + [  # links to users: their values are logins
            {
                "name": f.name,
                "label": f.label or f.name,
                "to": ["user"],
                "many": f.type == "users",
                "required": f.required,
                "inverse": None,
                "on_delete": f.on_delete,
            }
            for f in e.user_links
        ],
        "inverses": [
            {"name": inv.name, "from": inv.source, "link": inv.link, "many_to_many": inv.many_to_many}
            for inv in e.inverses.values()
        ],
        "pipelines": [_pipeline(p) for p in e.pipelines.values()],
        "task": e.task is not None,
    }


def model_document(model: Model) -> dict:
    return {
        "name": model.name,
        "label": model.label or model.name,
        "description": model.description,
        "sha256": model.sha256,
        "entities": [_entity(e) for e in model.entities.values()],
        "roles": [
            {"name": r.name, "permissions": {k: dict(v) for k, v in r.permissions.items()}}
            for r in model.roles.values()
        ],
        "forms": [
            {
                "name": f.name,
                "label": f.label or f.name,
                "entity": f.entity,
                "fields": list(f.fields),
                "token": f.token,
                "path": f"/forms/{f.name}",
            }
            for f in model.forms.values()
        ],
    }
