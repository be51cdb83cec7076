"""Bad input never gives a traceback: random damage to a valid model either still loads or
raises metacrm.ModelError with located problems."""

from __future__ import annotations

import copy
from pathlib import Path

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


def test_empty_and_odd_documents(tmp_path) -> None:
    for text in [
        "",
        "---\n",
        "[]\n",
        "just text\n",
        "metacrm: 1\nentities: []\n",
        "metacrm: 1\nentities:\n  a: 5\n",
        "\ufeffmetacrm: 1\n",
    ]:
        path = tmp_path / "m.yaml"
        path.write_text(text, encoding="utf-8")
        problems, model = check_model_file(path)
        assert model is not None or problems
