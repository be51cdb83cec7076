"""The model format reference (``docs/model.md``), generated from the JSON Schema.

``schemas/metacrm.schema.json`` is the one reference for the YAML model format and carries a
``description`` and ``examples`` for nearly every key; this module turns it into Markdown.
``render_model_reference`` is a pure function of the schema; ``tests/test_docs.py`` checks that
the committed page matches it.

    python -m metacrm.model.docgen           # rewrite docs/model.md
    python -m metacrm.model.docgen --check   # exit 1 if docs/model.md is out of date
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "metacrm.schema.json"
OUTPUT_FILE = ROOT / "docs" / "model.md"

SCHEMA_COMMENT = "# yaml-language-server: $schema=../schemas/metacrm.schema.json"

# Sections in reading order: (heading, definitions). "transitions" is not a definition but the
# two forms of a pipeline's `transitions` key, described before `transition`.
TRANSITIONS = "transitions"
SECTIONS: list[tuple[str, list[str]]] = [
    ("Entities", ["entity", "field", "link"]),
    ("Stages", ["pipeline", "state", TRANSITIONS, "transition"]),
    ("Roles", ["role", "permissions", "scope"]),
    ("Automations", ["automation", "trigger", "action"]),
    ("Forms", ["form", "assign_rule"]),
    ("Shared definitions", ["identifier", "label", "duration", "renamed_from", "stage_ref"]),
]

# The complete example: the model of the CONTRACT ("The YAML model"), with its roles.
EXAMPLE_MODEL = (
    SCHEMA_COMMENT
    + """
metacrm: 1
name: trade
label: Торговая компания
entities:
  client:
    label: Клиент
    owner: true                     # a responsible user per record: row-level access, reports
    fields:
      name:  {type: string, required: true, max_length: 200}
      email: {type: email, unique: true}
      phone: {type: phone}
      city:  {type: string}
      source: {type: choice, options: [site, call, referral]}
    search: [name, email, phone]
  deal:
    label: Сделка
    owner: true
    fields:
      title:       {type: string, required: true}
      amount:      {type: money, min: 0}
      lost_reason: {type: text}
    links:
      client:   {to: client, required: true, inverse: deals}   # many deals -> one client
      products: {to: product, many: true, inverse: deals}      # many-to-many
    stages:
      initial: new
      states:
        new:       {}
        qualified: {probability: 0.2}
        proposal:  {probability: 0.5, requires: [amount]}
        invoice:   {probability: 0.8, requires: [amount]}
        won:       {kind: won}
        lost:      {kind: lost, requires: [lost_reason]}
      transitions:
        new:       [qualified, lost]
        qualified: [proposal, invoice, lost]     # skipping proposal is allowed
        proposal:  [invoice, lost]
        invoice:   [won, lost]
  product:
    fields:
      name:  {type: string, required: true}
      price: {type: money}
  task:
    fields:
      title: {type: string, required: true}
      due:   {type: datetime}
    links:
      subject: {to: [deal, client]}              # a task belongs to a deal or to a client
roles:
  manager:
    client: {read: own, create: all, update: own, delete: none}
    deal:   {read: own, create: all, update: own, move: own}
  director:
    "*": all
"""
)


# ---------------------------------------------------------------------------------------------
# Reading the schema


def _ref_name(subschema: dict) -> str | None:
    ref = subschema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return ref[len("#/$defs/") :]
    return None


def _target(schema: dict, subschema: dict) -> dict:
    """The definition a ``$ref`` points to (``{}`` when there is none)."""
    name = _ref_name(subschema)
    return schema.get("$defs", {}).get(name, {}) if name else {}


def _description(schema: dict, subschema: dict) -> str:
    return subschema.get("description") or _target(schema, subschema).get("description", "")


def _examples(schema: dict, subschema: dict) -> list:
    if "examples" in subschema:
        return list(subschema["examples"])
    return list(_target(schema, subschema).get("examples", []))


def _refs(node) -> list[str]:
    """Every definition referenced anywhere inside ``node``."""
    found: list[str] = []
    if isinstance(node, dict):
        name = _ref_name(node)
        if name:
            found.append(name)
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _used_in(schema: dict) -> dict[str, list[str]]:
    """For each definition, the keys (``owner.key``) whose values use it."""
    owners: list[tuple[str, dict]] = [("", schema)] + list(schema.get("$defs", {}).items())
    used: dict[str, list[str]] = {}
    for owner, node in owners:
        places: list[tuple[str, object]] = []
        for key, sub in node.get("properties", {}).items():
            places.append((f"{owner}.{key}" if owner else key, sub))
        for keyword in ("additionalProperties", "oneOf", "anyOf", "items"):
            if owner and keyword in node:
                places.append((owner, node[keyword]))
        for place, sub in places:
            for name in _refs(sub):
                if name != owner and place not in used.setdefault(name, []):
                    used[name].append(place)
    return used


# ---------------------------------------------------------------------------------------------
# Types in words


def _link(name: str) -> str:
    return f"[{name}](#def-{name})"


def _code(value) -> str:
    """A value as inline code: plain words bare (`money`), anything YAML would misread quoted (`"*"`)."""
    if (
        isinstance(value, str)
        and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .:/-]*", value)
        and yaml.safe_load(value) == value
    ):
        return f"`{value}`"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _key_words(names: dict | None) -> str:
    if not names or _ref_name(names) == "identifier":
        return "name"
    return _type_words(names, nested=True)


def _type_words(subschema: dict, *, nested: bool = False) -> str:
    """The type of a value in words: ``identifier``, ``list of identifier``, ``map of name → field``."""
    name = _ref_name(subschema)
    if name:
        return _link(name)
    if "const" in subschema:
        return _code(subschema["const"])
    if "enum" in subschema:
        return "one of " + ", ".join(_code(v) for v in subschema["enum"])
    alternatives = subschema.get("oneOf") or subschema.get("anyOf")
    if alternatives:
        words = [_type_words(a, nested=True) for a in alternatives]
        return "(" + " or ".join(words) + ")" if nested else "one of: " + ", ".join(words)
    kind = subschema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = subschema.get("items")
        return "list of " + _type_words(items, nested=True) if isinstance(items, dict) else "list"
    if kind == "object":
        values = subschema.get("additionalProperties")
        if isinstance(values, dict):
            return f"map of {_key_words(subschema.get('propertyNames'))} → {_type_words(values, nested=True)}"
        if "properties" in subschema:
            return "object"
        return "map of name → any value"
    if kind:
        return str(kind)
    return "any value"


def _constraints(subschema: dict) -> list[str]:
    words: list[str] = []
    if "minimum" in subschema and "maximum" in subschema:
        words.append(f"from {subschema['minimum']} to {subschema['maximum']}")
    elif "minimum" in subschema:
        words.append(f"at least {subschema['minimum']}")
    elif "maximum" in subschema:
        words.append(f"at most {subschema['maximum']}")
    if subschema.get("minItems", 0) >= 2:
        words.append(f"at least {subschema['minItems']} items")
    elif subschema.get("minItems") == 1 or subschema.get("minProperties") == 1 or subschema.get("minLength") == 1:
        words.append("not empty")
    if subschema.get("uniqueItems"):
        words.append("no repeats")
    if "maxLength" in subschema:
        words.append(f"at most {subschema['maxLength']} characters")
    return words


def _type_line(subschema: dict) -> str:
    words = _type_words(subschema)
    extra = _constraints(subschema)
    return words + (f" ({', '.join(extra)})" if extra else "")


# ---------------------------------------------------------------------------------------------
# Markdown pieces


def _yaml(value) -> str:
    """A YAML code block: nested collections of scalars in flow style, the outermost mapping in block
    style (``name: trade``, not ``{name: trade}``)."""
    stream = io.StringIO()
    dumper = yaml.SafeDumper(stream, allow_unicode=True, sort_keys=False, default_flow_style=None)
    dumper.open()
    node = dumper.represent_data(value)
    if isinstance(node, yaml.MappingNode):
        node.flow_style = False
    dumper.serialize(node)
    dumper.close()
    return "```yaml\n" + stream.getvalue() + "```"


def _example_blocks(key: str | None, examples: list) -> list[str]:
    if not examples:
        return []
    if key is not None:
        return [_yaml({key: example}) for example in examples]
    if all(isinstance(e, str | int | float | bool) for e in examples):
        return ["Examples: " + ", ".join(f"`{e}`" if isinstance(e, str) else _code(e) for e in examples) + "."]
    return [_yaml(example) for example in examples]


def _inline_objects(subschema: dict) -> list[dict]:
    """Objects declared in place (not through ``$ref``) inside a key's value, whose keys need listing."""
    found: list[dict] = []
    if not isinstance(subschema, dict) or "$ref" in subschema:
        return found
    if "properties" in subschema:
        found.append(subschema)
    for keyword in ("items", "additionalProperties"):
        if isinstance(subschema.get(keyword), dict):
            found.extend(_inline_objects(subschema[keyword]))
    for keyword in ("oneOf", "anyOf"):
        for alternative in subschema.get(keyword, []):
            found.extend(_inline_objects(alternative))
    return found


def _sub_keys(schema: dict, subschema: dict) -> list[str]:
    lines: list[str] = []
    for obj in _inline_objects(subschema):
        required = obj.get("required", [])
        lines.append("")
        lines.append("Its keys:")
        lines.append("")
        for key, sub in obj["properties"].items():
            status = "required" if key in required else "optional"
            description = _description(schema, sub)
            lines.append(f"- `{key}`: {_type_line(sub)}, {status}." + (f" {description}" if description else ""))
    return lines


def _key_entry(schema: dict, key: str, subschema: dict, required: bool, *, level: int, see: str | None = None):
    lines = [f"{'#' * level} `{key}`", ""]
    status = "**required**" if required else "optional"
    lines.append(f"**Type:** {_type_line(subschema)} · {status}")
    description = _description(schema, subschema)
    if description:
        lines += ["", description]
    lines += _sub_keys(schema, subschema)
    if see:
        lines += ["", see]
    else:
        for block in _example_blocks(key, _examples(schema, subschema)):
            lines += ["", block]
    return lines + [""]


def _field_types(schema: dict) -> list[str]:
    """The table of field types, from the description of the `type` enum and of the other keys."""
    field = schema["$defs"]["field"]
    type_schema = field["properties"]["type"]
    types = type_schema["enum"]
    description = type_schema.get("description", "")
    meaning = {}
    for name in types:
        match = re.search(rf"`{re.escape(name)}`(?: \(([^)]*)\))?", description)
        meaning[name] = (match.group(1) or "") if match else ""
    specific: dict[str, list[str]] = {name: [] for name in types}
    for key, sub in field["properties"].items():
        if key == "type":
            continue
        text = _description(schema, sub)
        named = set(re.findall(r"`([a-z]+)`", text)) & set(types)
        groups = re.findall(r"\(([a-z, ]+)\)", text)
        if groups:
            words = {w.strip() for w in groups[-1].split(",")}
            if words <= set(types):
                named |= words
        for name in named:
            specific[name].append(f"`{key}`")
    lines = ["| type | value | keys for this type |", "| --- | --- | --- |"]
    for name in types:
        lines.append(f"| `{name}` | {meaning[name]} | {', '.join(specific[name])} |")
    return lines


def _definition(schema: dict, name: str, used: dict[str, list[str]]) -> list[str]:
    node = schema["$defs"][name]
    lines = [f'<a id="def-{name}"></a>', "", f"### {name}", ""]
    if node.get("description"):
        lines += [node["description"], ""]
    lines.append(f"**Type:** {_type_line(node)}")
    places = used.get(name, [])
    if places and len(places) <= 8:
        lines += ["", "Used by: " + ", ".join(f"`{p}`" for p in places) + "."]
    elif places:
        lines += ["", f"Used by {len(places)} keys."]
    for block in _example_blocks(None, node.get("examples", [])):
        lines += ["", block]
    lines.append("")
    if name == "field":
        lines += ["The field types:", "", *_field_types(schema), ""]
    required = node.get("required", [])
    for key, sub in node.get("properties", {}).items():
        see = None
        if name == "pipeline" and key == TRANSITIONS:
            see = "Both forms, with examples: [transitions](#def-transitions)."
        lines += _key_entry(schema, key, sub, key in required, level=4, see=see)
    return lines


def _transitions(schema: dict) -> list[str]:
    node = schema["$defs"]["pipeline"]["properties"][TRANSITIONS]
    lines = [f'<a id="def-{TRANSITIONS}"></a>', "", "### transitions: map form and list form", ""]
    if node.get("description"):
        lines += [node["description"], ""]
    forms = node.get("oneOf", [])
    titles = {"object": "Map form", "array": "List form"}
    for form in forms:
        kind = form.get("type")
        title = titles.get(kind, "Form")
        lines += [f"#### {title}", "", f"**Type:** {_type_words(form)}", ""]
        python_type = dict if kind == "object" else list if kind == "array" else object
        for example in node.get("examples", []):
            if isinstance(example, python_type):
                lines += [_yaml({TRANSITIONS: example}), ""]
    return lines


def render_model_reference(schema: dict) -> str:
    """The Markdown reference of the model format described by ``schema``."""
    defs = schema.get("$defs", {})
    used = _used_in(schema)
    placed = {name for _, names in SECTIONS for name in names}
    sections = list(SECTIONS)
    rest = [name for name in defs if name not in placed]
    if rest:
        sections.append(("Other definitions", rest))

    out: list[str] = [
        "# The model format",
        "",
        "<!-- Generated from schemas/metacrm.schema.json by `python -m metacrm.model.docgen`: do not edit by hand. -->",
        "",
        schema.get("description", ""),
        "",
        "This page describes every key of a model file. It is generated from the JSON Schema "
        "[`schemas/metacrm.schema.json`](../schemas/metacrm.schema.json), the one reference for the format: "
        "what is written here is what the schema says.",
        "",
        "## Editor support and checking",
        "",
        "Start a model file with this comment and an editor with a YAML language server (such as the YAML "
        "extension of VS Code) completes keys, shows these descriptions and marks mistakes as you type. "
        "The path is relative to the model file:",
        "",
        "```yaml",
        SCHEMA_COMMENT,
        "metacrm: 1",
        "```",
        "",
        "`metacrm schema` prints the schema, to keep a copy next to models outside this repository "
        "(`metacrm schema > metacrm.schema.json`). The top-level `$schema` key is an alternative to the comment.",
        "",
        "`metacrm check MODEL` validates a model, against the schema and against every rule beyond it "
        "(unknown link targets, unreachable stages, ...). It prints each problem as "
        "`FILE:LINE:COL: error: MESSAGE` and exits with 0 when the model is valid, 2 when it is not.",
        "",
        "## Reading this page",
        "",
        "- Each key shows its type, whether it is required, what it means and an example.",
        "- *identifier*, *label*, *duration*: see [Shared definitions](#shared-definitions). Names of "
        "entities, fields, links, stages, roles and automations are identifiers (ASCII snake_case); "
        "labels are in any language.",
        "- *map of name → X*: a mapping whose keys are names of your choice and whose values are X.",
        "- A key not listed for an object is an error.",
        "",
        "Contents:",
        "",
        "- [The top level](#the-top-level)",
    ]
    for title, names in sections:
        out.append(f"- {title}: " + ", ".join(_link(n) for n in names if n == TRANSITIONS or n in defs))
    out += ["- [A complete example](#a-complete-example)", ""]

    out += ["## The top level", ""]
    if schema.get("title"):
        out += [f"A {schema['title']} is a YAML mapping with these keys.", ""]
    required = schema.get("required", [])
    for key, sub in schema.get("properties", {}).items():
        out += _key_entry(schema, key, sub, key in required, level=3)

    for title, names in sections:
        out += [f"## {title}", ""]
        for name in names:
            if name == TRANSITIONS:
                if "pipeline" in defs and TRANSITIONS in defs["pipeline"].get("properties", {}):
                    out += _transitions(schema)
            elif name in defs:
                out += _definition(schema, name, used)

    out += [
        "## A complete example",
        "",
        "A small but complete model (the one of the project's contract): clients, deals with a "
        "stage graph, products, tasks with a polymorphic link, and two roles.",
        "",
        "```yaml",
        EXAMPLE_MODEL.rstrip("\n"),
        "```",
        "",
    ]
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text)


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metacrm.model.docgen", description="Generate docs/model.md from the JSON Schema."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs, write nothing")
    parser.add_argument("--schema", type=Path, default=SCHEMA_FILE, help="the JSON Schema (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=OUTPUT_FILE, help="the Markdown file (default: %(default)s)")
    args = parser.parse_args(argv)

    schema = json.loads(args.schema.read_text(encoding="utf-8"))
    text = render_model_reference(schema)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            print(f"{args.output} is out of date: run `python -m metacrm.model.docgen` to refresh it", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
