"""The edges of model loading: every kind of bad default (model/field_types.default_problem) and
the error branches of the YAML reader (model/yaml_source): an unreadable or non-UTF-8 file, tags
that build nothing or the wrong thing, values their tag cannot build, keys that are not plain
values. Each is a problem with its type and line, never an exception."""

from __future__ import annotations

import pytest

import metacrm
from metacrm.model.loader import check_model_file

HEAD = "metacrm: 1\nname: edges\nentities:\n  item:\n    fields:\n"  # the field is on line 6
OPTIONS = "options: [a, b]"

# (type and options, default as YAML, what the problem says); the default is on line 6
BAD_DEFAULTS = [
    ("decimal", "abc", "default 'abc' must be a number"),
    ("money", "true", "default True must be a number"),
    ("percent", "[1]", "default [1] must be a number"),
    ("integer", "1.5", "default 1.5 must be a whole number"),
    ("integer", "false", "default False must be a whole number"),
    ("string", "5", "default 5 must be text"),
    ("boolean", "maybe", "default 'maybe' must be true or false"),
    ("date", "yesterday", "default 'yesterday' must be a date (YYYY-MM-DD) or 'today'"),
    ("date", "2026-01-02 10:30:00", "default datetime.datetime(2026, 1, 2, 10, 30) must be a date"),  # not a date
    ("datetime", "soon", "default 'soon' must be a date and time (ISO 8601) or 'now'"),
    ("datetime", "5", "default 5 must be a date and time (ISO 8601) or 'now'"),
    (f"choice, {OPTIONS}", "c", "default 'c' must be one of the options: a, b"),
    (f"multichoice, {OPTIONS}", "a", "default 'a' must be a list of options"),
    (f"multichoice, {OPTIONS}", "[a, zz, yy]", "default ['a', 'zz', 'yy'] names unknown options: zz, yy"),
]
GOOD_DEFAULTS = [
    ("decimal", "'1.50'"), ("money", "0"), ("percent", "12.5"), ("integer", "7"), ("string", "x"),
    ("boolean", "false"), ("date", "today"), ("date", "2026-01-02"), ("datetime", "now"),
    ("datetime", "'2026-01-02T10:30:00+03:00'"), ("datetime", "2026-01-02 10:30:00"),
    (f"choice, {OPTIONS}", "b"), (f"multichoice, {OPTIONS}", "[a, b]"), ("json", "{x: 1}"),
]  # fmt: skip


def write(tmp_path, text: str | bytes):
    path = tmp_path / "model.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize(("ftype", "default", "message"), BAD_DEFAULTS)
def test_a_bad_default_is_refused_at_its_line(tmp_path, ftype, default, message) -> None:
    path = write(tmp_path, HEAD + f"      f: {{type: {ftype}, default: {default}}}\n")
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(path)
    assert [(p.type, p.line) for p in info.value.problems] == [("field.default_invalid", 6)]
    assert f"field 'item.f': {message}" in info.value.problems[0].message


@pytest.mark.parametrize(("ftype", "default"), GOOD_DEFAULTS)
def test_a_good_default_loads(tmp_path, ftype, default) -> None:
    model = metacrm.load_model(write(tmp_path, HEAD + f"      f: {{type: {ftype}, default: {default}}}\n"))
    assert model.entity("item").fields["f"].default is not None


MODEL = "metacrm: 1\nname: edges\n"
BAD_SOURCES = [  # (the file's bytes, the problems: type, line, col, part of the message)
    ("metacrm: 1\nname: café\n".encode("latin-1"), [("file.unreadable", 1, 1, "not UTF-8 text (an undecodable byte at position 20)")]),
    (MODEL + "label: !secret x\n", [("yaml.syntax", 3, 8, "could not determine a constructor for the tag '!secret'")]),
    (MODEL + "label: !!int abc\n", [("yaml.syntax", 3, 8, "'abc' is not a valid int")]),
    (MODEL + "description: 2026-13-01\n", [("yaml.syntax", 3, 14, "'2026-13-01' is not a valid timestamp")]),
    (MODEL + "2026-13-01: x\n", [("yaml.syntax", 3, 1, "'2026-13-01' is not a valid timestamp")]),
    (MODEL + "? [a, b]\n: 1\n", [("yaml.key", 3, 3, "a mapping key must be a plain value")]),
    (MODEL + "entities: {{a: 1}: 2}\n", [("yaml.key", 3, 12, "a mapping key must be a plain value")]),
    (MODEL + "x: &a 5\ny:\n  <<: *a\n", [("yaml.syntax", 3, 4, "expected a mapping or list of mappings for merging")]),
    (MODEL + "label: *nowhere\n", [("yaml.syntax", 3, 8, "found undefined alias")]),
    (
        MODEL + "label: !!python/object/apply:os.system [echo]\n",
        [("schema.type", 3, 8, "expected text")],
    ),  # no code runs
]


@pytest.mark.parametrize(("data", "expected"), BAD_SOURCES)
def test_bad_yaml_sources_are_problems_at_their_place(tmp_path, data, expected) -> None:
    path = write(tmp_path, data)
    problems, model = check_model_file(path)
    assert model is None
    assert [(p.type, p.line, p.col) for p in problems] == [e[:3] for e in expected]
    for problem, (*_, message) in zip(problems, expected, strict=True):
        assert message in problem.message and problem.file.endswith("model.yaml")


def test_a_folder_is_an_unreadable_model(tmp_path) -> None:
    problems, model = check_model_file(tmp_path)
    assert model is None
    assert [(p.type, p.line) for p in problems] == [("file.unreadable", 1)]
    assert "Is a directory" in problems[0].message
    missing, _ = check_model_file(tmp_path / "nope.yaml")
    assert [p.type for p in missing] == ["file.not_found"]
