"""The OpenAPI 3.1 document generated from the model (``/api/v1/openapi.json``) and the
interactive docs at ``/api/docs``, served without any outside URL (issue 11, item 5)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from conftest import require_module

import metacrm
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("httpx", why="the API tests drive the app through httpx")
validator = require_module("openapi_spec_validator", why="the document is checked against the OpenAPI 3.1 schema")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from jsonschema import Draft202012Validator  # noqa: E402
from referencing import Registry, Resource  # noqa: E402
from referencing.jsonschema import DRAFT202012  # noqa: E402

from metacrm.web import create_app  # noqa: E402
from metacrm.web.openapi import build_openapi  # noqa: E402

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"
PROBLEM_STATUSES = {"400", "401", "403", "404", "409", "412", "413", "415", "422", "429", "503"}


@pytest.fixture
def served(db_url):
    crm = metacrm.connect(TRADE, db_url)
    crm.migrate()
    crm.add_user("dir", roles=["director"])
    token = create_token(crm, "dir")["token"]
    client = TestClient(create_app(crm), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    yield crm, client
    client.close()
    crm.close()


def document(client) -> dict:
    r = client.get("/api/v1/openapi.json", headers={"Authorization": ""})  # no token needed
    assert r.status_code == 200, r.text
    return r.json()


def validator_for(doc: dict, name: str) -> Draft202012Validator:
    """A JSON Schema validator of one component schema, its ``$ref`` s resolved in ``doc``."""
    registry = Registry().with_resource("urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012))
    schema = {"$ref": f"urn:doc#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_document_is_valid_openapi_3_1(served):
    crm, client = served
    doc = document(client)
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    # built once: the same document comes back
    assert client.app.openapi() is client.app.openapi()


def test_entity_schemas_follow_the_model(served):
    crm, client = served
    schemas = document(client)["components"]["schemas"]
    read, create, patch = (schemas[f"deal.{kind}"] for kind in ("read", "create", "patch"))
    props = read["properties"]
    assert props["stage"]["enum"] == ["new", "qualified", "proposal", "contract", "invoice", "won", "lost"]
    for name in ("id", "created_at", "updated_at", "version", "stage", "net_amount"):
        assert props[name]["readOnly"] is True, name
    assert "readOnly" not in props["title"] and props["title"]["title"] == "Название"
    assert props["title"]["type"] == "string" and props["title"]["maxLength"] == 200
    assert props["expected_close"] == {"type": ["string", "null"], "format": "date", "title": "Ожидаемая дата закрытия"}
    assert props["paid_at"]["format"] == "date-time" and props["created_at"]["format"] == "date-time"
    assert props["currency"]["enum"] == ["rub", "usd", "eur", "cny", None]
    assert props["products"]["type"] == "array" and props["amount"]["format"] == "decimal"
    assert set(read["required"]) == set(props)
    assert create["required"] == ["title", "client"] and create["additionalProperties"] is False
    assert {"net_amount", "stage", "id", "version", "created_at"}.isdisjoint(create["properties"])
    assert create["properties"]["pipeline"]["enum"] == ["default"]
    assert "required" not in patch and "pipeline" not in patch["properties"]
    assert patch["properties"]["title"]["type"] == "string"  # a required field cannot be cleared
    assert patch["properties"]["title"]["minLength"] == 1 and "minLength" not in props["title"]
    client_props = schemas["client.create"]["properties"]
    assert client_props["email"]["format"] == "email" and client_props["website"]["format"] == "uri"
    assert client_props["inn"]["pattern"] == "^[0-9]{10}([0-9]{2})?$"
    assert client_props["source"]["default"] == "site" and client_props["vip"]["type"] == ["boolean", "null"]
    assert schemas["client.read"]["properties"]["won_total"]["readOnly"] is True
    assert "won_total" not in client_props
    modes = schemas["carrier.create"]["properties"]["transport_modes"]
    assert modes["items"]["enum"] == ["truck", "rail", "sea", "air"]
    subject = schemas["task.create"]["properties"]["subject"]
    assert subject["type"] == ["object", "null"] and subject["properties"]["entity"]["enum"] == ["deal", "client"]


def test_every_operation_says_its_parameters_body_and_problems(served):
    crm, client = served
    doc = document(client)
    paths = doc["paths"]
    listing = paths["/api/v1/deal"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"where", "q", "order_by", "fields", "expand", "limit", "after", "count", "p"} <= names
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/deal.page"
    }
    create = paths["/api/v1/deal"]["post"]
    assert "201" in create["responses"] and {"409", "413", "415", "422"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0] == {
        "$ref": "#/components/schemas/deal.create"
    }
    patch = paths["/api/v1/deal/{record_id}"]["patch"]
    assert {"404", "412", "422"} <= set(patch["responses"])
    assert "If-Match" in {p["name"] for p in patch["parameters"]}
    assert set(patch["requestBody"]["content"]) == {"application/json", "application/merge-patch+json"}
    move = paths["/api/v1/deal/{record_id}/move"]["post"]
    assert move["requestBody"]["content"]["application/json"]["schema"]["properties"]["stage"]["enum"][-1] == "lost"
    assert "409" in move["responses"]
    funnel = paths["/api/v1/reports/funnel/{entity}"]["get"]["parameters"]
    assert next(p for p in funnel if p["name"] == "entity")["schema"]["enum"] == ["deal"]
    group = paths["/api/v1/reports/group/{entity}"]["get"]["parameters"]
    assert next(p for p in group if p["name"] == "entity")["schema"]["enum"] == list(crm.model.entities)
    assert "text/csv" in paths["/api/v1/deal/import"]["post"]["requestBody"]["content"]
    assert "text/csv" in paths["/api/v1/deal/export"]["get"]["responses"]["200"]["content"]
    for path, item in paths.items():
        for method, op in item.items():
            statuses = set(op["responses"])
            success = sorted(s for s in statuses if s.startswith(("2", "3")))
            assert success and op["summary"], (method, path)
            problems = statuses - set(success)
            assert problems <= PROBLEM_STATUSES, (method, path)
            assert op["responses"][success[0]]["description"] != "Successful Response", (method, path)  # described
            if path == "/healthz":
                assert op["security"] == []
            elif path.startswith("/forms/"):  # public, or token-bound
                assert {"404", "503"} <= problems and op["security"] in ([], [{}, {"bearer": []}]), (method, path)
            else:
                assert {"400", "401", "403", "503"} <= problems and "security" not in op, (method, path)
            for status in problems:
                assert op["responses"][status] == {"$ref": f"#/components/responses/{status}"}
    for status in PROBLEM_STATUSES:
        response = doc["components"]["responses"][status]
        assert response["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "WWW-Authenticate" in doc["components"]["responses"]["401"]["headers"]


def test_answers_match_their_schemas(served):
    crm, client = served
    doc = document(client)
    c = client.post("/api/v1/client", json={"name": "Ромашка", "email": "info@romashka.ru", "website": "https://r.ru"})
    assert c.status_code == 201
    body = {"title": "Трубы", "client": c.json()["id"], "amount": "10.50", "expected_close": "2027-01-31"}
    assert not list(validator_for(doc, "deal.create").iter_errors(body))
    d = client.post("/api/v1/deal", json=body)
    assert d.status_code == 201, d.text
    for name, answer in (
        ("client.read", c.json()),
        ("deal.read", d.json()),
        ("deal.read", client.get(f"/api/v1/deal/{d.json()['id']}").json()),
        ("deal.page", client.get("/api/v1/deal", params={"expand": "client,products", "count": "true"}).json()),
        ("deal.page", client.get("/api/v1/deal", params={"fields": "title"}).json()),
        ("Board", client.get("/api/v1/deal/board").json()),
        ("Problem", client.get("/api/v1/deal", params={"where": "amount >"}).json()),
        ("Problem", client.post("/api/v1/deal", json={"title": 5}).json()),
    ):
        errors = [e.message for e in validator_for(doc, name).iter_errors(answer)]
        assert not errors, (name, errors)
    bad = {"title": "x", "client": 1, "stage": "won", "amount": "lots"}
    assert len(list(validator_for(doc, "deal.create").iter_errors(bad))) == 2


def test_the_document_follows_a_changed_model(tmp_path):
    text = TRADE.read_text(encoding="utf-8").replace(
        "      lost_reason: {type: text, label: Причина проигрыша}",
        "      lost_reason: {type: text, label: Причина проигрыша}\n"
        "      region: {type: choice, label: Регион, required: true, options: [north, south]}",
    )
    changed = tmp_path / "trade.yaml"
    changed.write_text(text, encoding="utf-8")
    crm = metacrm.connect(changed, f"sqlite:///{tmp_path / 'crm.db'}")
    try:
        app = create_app(crm)
        doc = build_openapi(app, crm.model)
        region = doc["components"]["schemas"]["deal.create"]["properties"]["region"]
        assert region == {"type": "string", "enum": ["north", "south"], "title": "Регион"}
        assert "region" in doc["components"]["schemas"]["deal.create"]["required"]
    finally:
        crm.close()


def test_docs_are_served_by_the_package_alone(served):
    crm, client = served
    page = client.get("/api/docs", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 3 and "http" not in page.text and "//" not in page.text.replace("<!doctype", "")
    fetched = {}
    for url in urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/api/"), url
        r = client.get(url, headers={"Authorization": ""})
        assert r.status_code == 200 and r.content, url
        fetched[url.rsplit("/", 1)[-1]] = r
    assert fetched["swagger-ui-bundle.js"].headers["content-type"].startswith("text/javascript")
    assert fetched["swagger-ui.css"].headers["content-type"].startswith("text/css")
    init = fetched["init.js"].text
    assert '"/api/v1/openapi.json"' in init and "validatorUrl: null" in init
    # the vendored files carry their licence and version
    static = Path(metacrm.__file__).parent / "web" / "static" / "swagger-ui"
    assert "Apache License" in (static / "LICENSE").read_text(encoding="utf-8")
    assert re.search(r"swagger-ui-dist \d+\.\d+\.\d+", (static / "NOTICE").read_text(encoding="utf-8"))


def test_docs_follow_the_mount_point(served):
    """Mounted under a prefix, the page's URLs carry it (root_path)."""
    crm, client = served
    with TestClient(client.app, root_path="/crm") as mounted:
        page = mounted.get("/api/docs")
        assert '"/crm/api/docs/assets/swagger-ui-bundle.js"' in page.text
        assert '"/crm/api/v1/openapi.json"' in mounted.get("/api/docs/init.js").text


@pytest.mark.parametrize("example", sorted(p.name for p in TRADE.parent.glob("*.yaml")))
def test_every_example_gives_a_valid_document(example, tmp_path):
    model = metacrm.load_model(TRADE.parent / example)
    crm = metacrm.connect(model, f"sqlite:///{tmp_path / 'crm.db'}")
    try:
        doc = build_openapi(create_app(crm), model)
    finally:
        crm.close()
    validator.validate(doc)
    for ent in model.entities.values():
        read = doc["components"]["schemas"][f"{ent.name}.read"]["properties"]
        assert ("pipeline" in read) == ent.multi_pipeline, ent.name
        if ent.multi_pipeline:
            assert read["pipeline"]["enum"] == list(ent.pipelines)
            stages = {s for p in ent.pipelines.values() for s in p.stages}
            assert set(read["stage"]["enum"]) == stages
