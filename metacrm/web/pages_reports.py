"""Reports and the model in the browser (docs/web.md): ``/reports/funnel/{entity}``,
``/reports/group/{entity}`` and ``/model``.

The report pages call the library as the signed-in user (``crm.funnel``, ``crm.report_group``:
one report per page), so their numbers are the library's and row-level access applies. They
show a table and a chart (Chart.js, vendored); the chart's data travel in a JSON block the
page's script reads (the Content-Security-Policy allows no inline script). A bad parameter (an
unknown pipeline or field, a malformed date) shows the library's message above the form, with
status 400.

``/model`` draws the ER diagram (metacrm.model.erd) and each pipeline's stage graph
(metacrm.stages.diagrams): the same Mermaid text as ``metacrm model erd`` and ``metacrm model
graph``, generated here and rendered in the browser by mermaid (vendored, ``securityLevel``
strict). The text reaches the page as JSON (``tojson``: no markup can break out) and is shown
too, as the diagram's text alternative.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import errors as E
from ..model.erd import to_mermaid_erd
from ..model.metamodel import Entity
from ..runtime import reports
from ..runtime.titles import HIDDEN
from ..stages.diagrams import to_mermaid
from .i18n import N_, _

N_("month"), N_("quarter")  # reports.PERIODS, named in the group report's select


def _param(request: Request, name: str) -> str | None:
    value = (request.query_params.get(name) or "").strip()
    return value or None


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal) else value


def _group_label(item: dict) -> str:
    if item.get("hidden"):
        return HIDDEN
    return "—" if item.get("label") is None else str(item["label"])


def _choices(ent: Entity, names: list[str]) -> list[tuple[str, str]]:
    """(name, caption) for the controls: fields and links by their labels."""
    out = []
    for name in names:
        member = ent.fields.get(name) or ent.links.get(name)
        out.append((name, f"{member.caption} ({name})" if member is not None and member.label else name))
    return out


def funnel_chart(doc: dict | list[dict]) -> dict:
    """Chart.js data: reached and now per stage; with ``by``, now per stage per group."""
    docs = doc if isinstance(doc, list) else [doc]
    labels = [s["label"] for s in docs[0]["stages"]] if docs else []
    if isinstance(doc, list):
        datasets = [{"label": _group_label(d), "data": [s["now"] for s in d["stages"]], "stack": "now"} for d in doc]
        return {"labels": labels, "datasets": datasets, "stacked": True}
    return {
        "labels": labels,
        "datasets": [
            {"label": _("reached"), "data": [s["reached"] for s in doc["stages"]]},
            {"label": _("now"), "data": [s["now"] for s in doc["stages"]]},
        ],
        "stacked": False,
    }


def group_chart(doc: dict) -> dict:
    """Chart.js data: the sum (or the count) per group; with a period, a stacked series per group."""
    measure = "sum" if doc["sum"] else "count"
    rows = doc["rows"]
    if not doc["period"]:
        return {
            "labels": [_group_label(r) for r in rows],
            "datasets": [{"label": doc["sum"] or _("count"), "data": [_number(r[measure]) for r in rows]}],
            "stacked": False,
        }
    periods = sorted({r["period"] or "—" for r in rows})
    series: dict[str, list] = {}
    for r in rows:
        values = series.setdefault(_group_label(r), [0] * len(periods))
        values[periods.index(r["period"] or "—")] += _number(r[measure])
    datasets = [{"label": label, "data": data, "stack": "all"} for label, data in series.items()]
    return {"labels": periods, "datasets": datasets, "stacked": True}


def install(router: APIRouter, crm, signed_in, render, pages) -> None:
    """The report and model pages on the pages' router (metacrm.web.pages.install)."""
    model = crm.model
    staged = [e for e in model.entities.values() if e.pipelines]

    def entity_of(name: str, *, stages: bool = False) -> Entity:
        choices = staged if stages else list(model.entities.values())
        ent = model.entities.get(name)
        if ent is None or ent not in choices:
            valid = ", ".join(e.name for e in choices) or _("none")
            if stages:
                raise E.NotFound(_("'%(name)s' is not an entity with stages; valid: %(valid)s", name=name, valid=valid))
            raise E.NotFound(_("'%(name)s' is not an entity; valid: %(valid)s", name=name, valid=valid))
        return ent

    @router.get("/reports/funnel/{entity}")
    @pages
    def funnel_page(request: Request, entity: str) -> Response:
        session = signed_in(request)
        ent = entity_of(entity, stages=True)
        params = {k: _param(request, k) for k in ("pipeline", "as_of", "from", "to", "by")}
        doc = problem = None
        try:
            doc = session["user"].funnel(
                ent.name,
                params["pipeline"],
                as_of=params["as_of"],
                date_from=params["from"],
                date_to=params["to"],
                by=params["by"],
            )
        except E.ValidationError as exc:
            problem = str(exc)
        groups = (doc if isinstance(doc, list) else [doc]) if doc is not None else []
        pipeline = ent.pipelines.get(params["pipeline"] or "") or ent.default_pipeline
        return render(
            request,
            "funnel.html",
            session,
            400 if problem else 200,
            ent=ent,
            params=params,
            problem=problem,
            doc=doc,
            groups=groups,
            grouped=isinstance(doc, list),
            amount=ent.fields.get(pipeline.amount or ""),
            by_choices=_choices(ent, [n for n in reports.group_names(ent) if n != "stage"]),
            chart=funnel_chart(doc) if doc is not None and groups else None,
            group_label=_group_label,
        )

    @router.get("/reports/group/{entity}")
    @pages
    def group_page(request: Request, entity: str) -> Response:
        session = signed_in(request)
        ent = entity_of(entity)
        names = reports.group_names(ent)
        params = {k: _param(request, k) for k in ("by", "sum", "period", "date", "from", "to", "pipeline")}
        if params["by"] is None and names:
            params["by"] = "stage" if "stage" in names else names[0]
        if params["by"] == "stage" and params["pipeline"] is None and len(ent.pipelines) > 1:
            params["pipeline"] = ent.default_pipeline.name  # stages of two pipelines never share a table
        doc = problem = None
        try:
            if params["by"] is None:
                raise E.ValidationError(_("%(entity)s has no field to group by", entity=ent.name))
            doc = session["user"].report_group(
                ent.name,
                params["by"],
                sum=params["sum"],
                period=params["period"],
                date=params["date"],
                date_from=params["from"],
                date_to=params["to"],
                pipeline=params["pipeline"],
            )
        except E.ValidationError as exc:
            problem = str(exc)
        return render(
            request,
            "group.html",
            session,
            400 if problem else 200,
            ent=ent,
            params=params,
            problem=problem,
            doc=doc,
            summed=ent.fields.get(doc["sum"]) if doc and doc["sum"] else None,
            by_choices=_choices(ent, names),
            sum_choices=_choices(ent, reports.sum_names(ent)),
            date_choices=_choices(ent, reports.date_names(ent)),
            periods=reports.PERIODS,
            chart=group_chart(doc) if doc is not None else None,
            group_label=_group_label,
        )

    @router.get("/model")
    @pages
    def model_page(request: Request) -> Response:
        session = signed_in(request)
        graphs = [
            {"id": f"stages-{ent.name}-{p.name}", "entity": ent, "pipeline": p, "text": to_mermaid(ent, p.name)}
            for ent in staged
            for p in ent.pipelines.values()
        ]
        return render(request, "model.html", session, erd=to_mermaid_erd(model), graphs=graphs)
