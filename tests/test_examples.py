"""Every example model loads cleanly, fits the JSON Schema, passes `metacrm check`, and the
logistics example draws both of its shipment pipelines."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

ROOT = Path(__file__).parent.parent
SCHEMA = ROOT / "schemas" / "metacrm.schema.json"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/metacrm.schema.json"
SYSTEM_PLACEHOLDERS = {"id", "stage", "pipeline", "owner", "created_at", "updated_at"}


def _id(path: Path) -> str:
    return path.stem


def test_the_four_examples_are_there():
    assert {p.stem for p in EXAMPLES} >= {"trade", "logistics", "service_desk", "srm"}


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_loads_without_warnings(path):
    model = metacrm.load_model(path)
    assert model.warnings == ()
    assert model.entities


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_fits_the_json_schema(path):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_starts_with_schema_line_and_header(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == SCHEMA_LINE
    header = []
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    assert 3 <= len(header) <= 6, header
    assert all(line[1:].strip() for line in header), "empty header line"


def test_check_accepts_every_example():
    paths = [os.path.relpath(p) for p in EXAMPLES]
    result = CliRunner().invoke(app, ["check", *paths])
    assert result.exit_code == 0, result.output
    for path in paths:
        assert f"{path}: ok" in result.output
    assert "error:" not in result.output
    assert "warning:" not in result.output


def test_logistics_graph_draws_both_pipelines():
    path = ROOT / "examples" / "logistics.yaml"
    shipment = metacrm.load_model(path).entities["shipment"]
    assert set(shipment.pipelines) == {"sea", "air"}
    sea = list(shipment.pipelines["sea"].stages)
    air = list(shipment.pipelines["air"].stages)
    assert sea != air
    result = CliRunner().invoke(app, ["graph", str(path), "shipment"])
    assert result.exit_code == 0, result.output
    for stage in {*sea, *air}:
        assert stage in result.output, stage


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_automations_name_real_fields(path):
    """What the checker does not look at: the values an automation writes and the
    placeholders of its templates name real fields, links, options and roles."""
    model = metacrm.load_model(path)
    for auto in model.automations.values():
        entity = model.entities[auto.entity]
        for action in auto.actions:
            if "create" in action:
                created = model.entities[action["create"]]
                for name, value in action.get("values", {}).items():
                    assert name in created.fields or name in created.links, (auto.name, name)
                    field = created.fields.get(name)
                    if field is not None and field.options:
                        assert value in field.option_values, (auto.name, name, value)
            if "update" in action:
                spec = action["update"]
                target = entity
                if spec.get("target") in entity.links:
                    target = model.entities[entity.links[spec["target"]].targets[0]]
                elif "target" in spec:
                    target = model.entities[entity.inverses[spec["target"]].source]
                for name, value in spec["values"].items():
                    field = target.fields[name]
                    if field.options:
                        assert value in field.option_values, (auto.name, name, value)
            if "notify" in action:
                notify = action["notify"]
                text = notify["template"] + notify.get("subject", "")
                for placeholder in re.findall(r"\{(\w+)\}", text):
                    assert placeholder in entity.fields or placeholder in SYSTEM_PLACEHOLDERS, (
                        auto.name,
                        placeholder,
                    )
                for to in notify["to"]:
                    if to.startswith("role:"):
                        assert to.removeprefix("role:") in model.roles, (auto.name, to)
                    elif to.startswith("email:"):
                        link, field = to.removeprefix("email:").split(".")
                        linked = model.entities[entity.links[link].targets[0]]
                        assert linked.fields[field].type == "email", (auto.name, to)
