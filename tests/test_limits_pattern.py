"""Field patterns run on a time-bounded engine: a pattern that backtracks catastrophically
refuses the value quickly with a ValidationError, on both dialects, instead of hanging."""

from __future__ import annotations

from pathlib import Path

import pytest

import metacrm
from metacrm.model.loader import check_model_file

MODEL = """\
metacrm: 1
entities:
  item:
    fields:
      name: {type: string, required: true}
      code: {type: string, pattern: "^(a|aa)+$"}
      nested: {type: string, pattern: "^(a+)+$"}
      look: {type: string, pattern: "(?=.*[0-9])[a-z0-9]+"}
"""


@pytest.fixture
def crm(tmp_path: Path, db_url: str):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(metacrm.load_model(path), db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_catastrophic_pattern_is_refused_not_hung(crm) -> None:
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create("item", {"name": "x", "code": "a" * 60 + "!"})
    assert "item.code" in str(info.value) or "code" in str(info.value)
    assert "pattern" in str(info.value)
    with pytest.raises(metacrm.ValidationError, match="pattern"):
        crm.create("item", {"name": "x", "nested": "a" * 50 + "!"})
    assert crm.count("item") == 0


def test_patterns_keep_their_meaning(crm) -> None:
    made = crm.create("item", {"name": "x", "code": "aaaa", "nested": "aaa", "look": "abc1"})
    assert (made["code"], made["nested"], made["look"]) == ("aaaa", "aaa", "abc1")
    with pytest.raises(metacrm.ValidationError, match="does not match the pattern"):
        crm.create("item", {"name": "x", "look": "abc"})
    assert crm.count("item") == 1


def test_invalid_pattern_is_a_model_problem(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(MODEL.replace('"^(a|aa)+$"', '"^(a|aa+$"'), encoding="utf-8")
    problems, model = check_model_file(path)
    assert model is None
    assert [(p.type, p.line) for p in problems] == [("field.pattern_invalid", 6)]
