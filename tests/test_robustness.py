"""Bad input never gives a traceback: known damage to a valid model raises metacrm.ModelError
with the problem's type and line; random damage either still loads or raises ModelError with
located problems."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacrm
from metacrm.model.loader import check_model_file

VALID = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"
BASE = yaml.safe_load(VALID.read_text(encoding="utf-8"))
TEXT = VALID.read_text(encoding="utf-8")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(BASE) if p]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "*", "client", "deal", "won", "new", "Клиент", "x y", "order", "id", "1d", "amount"]),
    st.lists(st.sampled_from(["client", "won", "lost", "*", "amount", "nope"]), max_size=3),
    st.dictionaries(
        st.sampled_from(["to", "type", "kind", "from", "initial", "states"]),
        st.sampled_from(["client", "won", "string", 1]),
        max_size=2,
    ),
)


def _set(doc, path, value):
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _load(tmp_path: Path, text: str):
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return metacrm.load_model(path)
    except metacrm.ModelError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.line >= 1 and p.col >= 1, p
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(PATHS), JUNK), min_size=1, max_size=3))
def test_damaged_structure_never_crashes(tmp_path, edits) -> None:
    doc = copy.deepcopy(BASE)
    for path, value in edits:
        try:
            _set(doc, path, value)
        except (KeyError, IndexError, TypeError):
            continue
    _load(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, len(TEXT) - 1),
    st.integers(1, 8),
    st.sampled_from(["", "{", "}", ":", "-", "\t", '"', "[", " ", "\n"]),
)
def test_damaged_text_never_crashes(tmp_path, start, length, insert) -> None:
    _load(tmp_path, TEXT[:start] + insert + TEXT[start + length :])


# what the fixture says -> what the damage says instead: the problems expected, (type, line)
DAMAGE = {
    "link to an unknown entity": (
        "{to: client, required: true, inverse: deals}",
        "{to: clientele, required: true, inverse: deals}",
        [("link.unknown_target", 23)],
    ),
    "unknown field type": (
        "name:  {type: string, required: true, max_length: 200}",
        "name:  {type: strin, required: true, max_length: 200}",
        [("field.unknown_type", 9), ("entity.search_unknown", 14)],  # and search can't use it
    ),
    "initial stage undeclared": ("initial: new", "initial: fresh", [("stage.unknown", 26)]),
    "transition to an undeclared stage": (
        "new:       [qualified, lost]",
        "new:       [qualified, lots]",
        [("stage.unknown", 35)],
    ),
    "requires an unknown field": ("requires: [lost_reason]", "requires: [lost_reasons]", [("stage.requires_unknown", 33)]),
    "stages cut off": ("new:       [qualified, lost]", "new:       [lost]", [("stage.unreachable", n) for n in (29, 30, 31, 32)]),
    "a field given a number": ("price: {type: money}", "price: 5", [("schema.type", 42)]),
    "unknown access level": ("{read: own, create: all, update: own, delete: none}", "{read: mine, create: all, update: own, delete: none}", [("schema.enum", 51)]),
    "a key given twice": ("      city:  {type: string}\n", "      city:  {type: string}\n      city:  {type: text}\n", [("yaml.duplicate_key", 13)]),
    "an unclosed flow mapping": ("price: {type: money}", "price: {type: money", [("yaml.syntax", 42)]),
    "a tab for indentation": ("      due:   {type: datetime}", "\tdue:   {type: datetime}", [("yaml.syntax", 46)]),
    "search over an unknown field": ("search: [name, email, phone]", "search: [name, email, fax]", [("entity.search_unknown", 14)]),
    "a polymorphic link to an unknown entity": ("subject: {to: [deal, client]}", "subject: {to: [deal, person]}", [("link.unknown_target", 48)]),
    "a minimum that is not a number": ("amount:      {type: money, min: 0}", "amount:      {type: money, min: -x}", [("schema.type", 20)]),
}  # fmt: skip


def test_the_fixture_itself_loads(tmp_path) -> None:
    assert _load(tmp_path, TEXT) is not None


@pytest.mark.parametrize("case", list(DAMAGE))
def test_known_damage_is_refused_with_its_type_and_line(tmp_path, case) -> None:
    old, new, expected = DAMAGE[case]
    assert TEXT.count(old) == 1
    path = tmp_path / "model.yaml"
    path.write_text(TEXT.replace(old, new), encoding="utf-8")
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(path)
    assert [(p.type, p.line) for p in info.value.problems] == expected
    assert all(p.col >= 1 and Path(p.file).resolve() == path.resolve() for p in info.value.problems)
    first = info.value.problems[0]
    assert str(info.value).startswith(f"{first.file}:{first.line}:{first.col}: error: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [("schema.required", 1)]),
        ("---\n", [("schema.required", 1)]),
        ("[]\n", [("schema.type", 1)]),
        ("just text\n", [("schema.type", 1)]),
        ("metacrm: 1\nentities: []\n", [("schema.type", 2)]),
        ("metacrm: 1\nentities:\n  a: 5\n", [("schema.type", 3)]),
        ("\ufeffmetacrm: 1\n", []),  # a byte order mark is no problem; a model without entities loads
    ],
)
def test_empty_and_odd_documents(tmp_path, text, expected) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    problems, model = check_model_file(path)
    assert [(p.type, p.line) for p in problems] == expected
    assert (model is not None) == (not expected)
