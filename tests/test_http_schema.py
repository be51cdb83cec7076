"""schemathesis against the OpenAPI document the trade example generates (issue 11): every
operation, driven in-process through the ASGI app as an admin on SQLite and PostgreSQL, with
valid and invalid data, must answer no server error and nothing that breaks the document
(status, content type, headers, body schema). Bounded: a few examples per operation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import require_module

import metacrm
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
schemathesis = require_module("schemathesis", why="the API is checked against its OpenAPI document")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from metacrm.web import create_app  # noqa: E402

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = {
    # the examples and fuzzing phases, valid and invalid data; a handful of cases per operation
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "generation": {"mode": "all", "max-examples": 5},
    "seed": 11,
}


def _seed(crm) -> None:
    """A few records of each kind, so that ids 1-3 mostly exist and links have targets."""
    crm.add_user("root", roles=["director"])
    crm.add_user("ann", roles=["manager"])
    for i in range(1, 4):
        client = crm.create("client", {"name": f"Клиент {i}", "owner": "ann", "inn": f"770123456{i}"})
        supplier = crm.create("supplier", {"name": f"Поставщик {i}"})
        product = crm.create("product", {"name": f"Товар {i}", "sku": f"SKU-{i}", "supplier": supplier["id"]})
        carrier = crm.create("carrier", {"name": f"Перевозчик {i}", "transport_modes": ["truck"]})
        deal = crm.create(
            "deal",
            {
                "title": f"Сделка {i}",
                "client": client["id"],
                "amount": str(1000 * i),
                "products": [product["id"]],
                "carriers": [carrier["id"]],
                "owner": "ann",
            },
        )
        crm.create("document", {"number": f"Д-{i}", "kind": "contract", "deal": deal["id"]})
        crm.create("task", {"title": f"Позвонить {i}", "subject": {"entity": "deal", "id": deal["id"]}})


@pytest.fixture
def trade_api(db_url):
    crm = metacrm.connect(TRADE, db_url)
    crm.migrate()
    _seed(crm)
    token = create_token(crm, "root")["token"]
    app = create_app(crm)
    config = schemathesis.Config.from_dict({**CONFIG, "headers": {"Authorization": f"Bearer {token}"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, config=config)
    _aim_at_records(schema, crm.model)
    yield schema
    crm.close()


def _aim_at_records(schema, model) -> None:
    """Random ids would almost always name no record (404): half the cases get ids of records
    the seed made, in the path and in a body's links, so that reads, changes, moves and links
    of real records are exercised too."""
    some_id = st.integers(min_value=1, max_value=4)

    @schema.hook("flatmap_path_parameters")
    def existing_records(context, path_parameters):
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        aimed = {key: st.just(value) for key, value in path_parameters.items()}
        if "record_id" in aimed:
            aimed["record_id"] = some_id
        if "target" in aimed:
            aimed["target"] = st.one_of(some_id.map(str), st.sampled_from(["deal:1", "client:2", "task:1"]))
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries(aimed))

    @schema.hook("map_body")
    def existing_links(context, body):
        parts = context.operation.path.split("/")
        ent = model.entities.get(parts[3]) if len(parts) > 3 else None
        if ent is None or not isinstance(body, dict | list):
            return body
        if isinstance(body, list):
            return [_aimed(ent, row) for row in body]
        return _aimed(ent, body)


def _aimed(ent, row):
    """A body row whose link ids name the seeded records (1-3)."""
    if not isinstance(row, dict):
        return row

    def one(value):
        if isinstance(value, int) and not isinstance(value, bool):
            return value % 3 + 1
        if isinstance(value, dict) and isinstance(value.get("id"), int) and not isinstance(value["id"], bool):
            return {**value, "id": value["id"] % 3 + 1}
        return value

    out = dict(row)
    for name in ent.links:
        if name in out:
            value = out[name]
            out[name] = [one(v) for v in value] if isinstance(value, list) else one(value)
    return out


schema = schemathesis.pytest.from_fixture("trade_api")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_every_operation_keeps_to_the_document(case):
    case.call_and_validate(checks=CHECKS)
