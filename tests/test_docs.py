"""docs/model.md is generated from the JSON Schema and stays in sync with it; the schema carries
a description and examples for every key, and its examples are valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

import metacrm
from metacrm.model.docgen import render_model_reference

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / "metacrm.schema.json"
DOC_FILE = ROOT / "docs" / "model.md"

# Keywords whose value is one subschema, a list of subschemas, or a map of name -> subschema.
ONE = ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else", "contains")
MANY = ("oneOf", "anyOf", "allOf", "prefixItems")
MAP = ("properties", "$defs", "patternProperties")


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_FILE.read_text(encoding="utf-8")


def subschemas(node: dict, path: str = "#"):
    """Every subschema of ``node`` (itself included), with its JSON pointer."""
    yield path, node
    for keyword in ONE:
        if isinstance(node.get(keyword), dict):
            yield from subschemas(node[keyword], f"{path}/{keyword}")
    for keyword in MANY:
        for i, sub in enumerate(node.get(keyword, [])):
            yield from subschemas(sub, f"{path}/{keyword}/{i}")
    for keyword in MAP:
        for name, sub in node.get(keyword, {}).items():
            yield from subschemas(sub, f"{path}/{keyword}/{name}")


def target(schema: dict, sub: dict) -> dict:
    ref = sub.get("$ref", "")
    return schema["$defs"].get(ref.removeprefix("#/$defs/"), {}) if ref.startswith("#/$defs/") else {}


def test_doc_is_generated_from_schema(schema, doc):
    assert doc == render_model_reference(schema), (
        "docs/model.md is out of date: run `python -m metacrm.model.docgen` to refresh it"
    )


def test_every_key_has_description_and_examples(schema):
    misses = []
    objects = [("#", schema)] + [(f"#/$defs/{name}", node) for name, node in schema["$defs"].items()]
    for where, node in objects:
        for key, sub in node.get("properties", {}).items():
            ref = target(schema, sub)
            if not (sub.get("description") or ref.get("description")):
                misses.append(f"{where}/properties/{key}: no description")
            if "examples" not in sub and "examples" not in ref:
                misses.append(f"{where}/properties/{key}: no examples")
    # Keys of objects declared in place (trigger.before, action.notify, a field's options...)
    # are listed in the reference with their descriptions.
    for where, node in subschemas(schema):
        if where == "#" or re.fullmatch(r"#/\$defs/[^/]+", where):
            continue
        for key, sub in node.get("properties", {}).items():
            if not (sub.get("description") or target(schema, sub).get("description")):
                misses.append(f"{where}/properties/{key}: no description")
    assert misses == []


def test_every_key_name_is_in_the_doc(schema, doc):
    headings = [line.lstrip("#").strip().strip("`") for line in doc.splitlines() if line.startswith("#")]
    names = {key for _, node in subschemas(schema) for key in node.get("properties", {})}
    names |= set(schema["$defs"])
    missing = [name for name in sorted(names) if f"`{name}`" not in doc and name not in headings]
    assert missing == []


def test_complete_example_loads_and_validates(schema, doc, tmp_path):
    blocks = re.findall(r"^```yaml\n(.*?)^```$", doc, re.S | re.M)
    assert blocks, "docs/model.md has no yaml block"
    text = blocks[-1]
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    model = metacrm.load_model(path)
    assert model is not None
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(yaml.safe_load(text))]
    assert errors == []


def test_schema_examples_are_valid(schema):
    Draft202012Validator.check_schema(schema)
    invalid = []
    checked = 0
    for where, sub in subschemas(schema):
        if "examples" not in sub:
            continue
        validator = Draft202012Validator({"$defs": schema["$defs"], **sub})
        for i, example in enumerate(sub["examples"]):
            checked += 1
            for error in validator.iter_errors(example):
                invalid.append(f"{where} example {i} ({example!r}): {error.message}")
    assert checked > 0
    assert invalid == []
