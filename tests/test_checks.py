"""Every model check: one invalid fixture per problem type. A fixture marks each line where a
problem must be reported with a trailing comment ``# <- TYPE``; the test asserts the type, the
file and the line, and that the CLI exits 2 without a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.model.loader import check_model_file

FIXTURES = Path(__file__).parent / "fixtures" / "invalid"
MARKER = re.compile(r"#\s*<-\s*([a-z_.]+)")


def _markers(path: Path) -> list[tuple[str, int, str]]:
    """(file, line, type) of each marker in a fixture and in the files it includes."""
    found = []
    files = [path]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        files += [(path.parent / inc).resolve() for inc in data.get("include", []) if (path.parent / inc).is_file()]
    except yaml.YAMLError:
        pass
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            for match in MARKER.finditer(line):
                found.append((os.path.realpath(file), number, match.group(1)))
    return found


CASES = sorted(FIXTURES.glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_problem_type_and_line(path: Path) -> None:
    expected = _markers(path)
    assert expected, f"{path.name} marks no expected problem"
    problems, model = check_model_file(path)
    assert model is None
    got = {(os.path.realpath(p.file), p.line, p.type) for p in problems}
    for item in expected:
        assert item in got, f"expected {item[2]} at {Path(item[0]).name}:{item[1]}; got:\n" + "\n".join(
            p.format() + f"  [{p.type}]" for p in problems
        )


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_cli_exit_2_without_traceback(path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for line in result.output.splitlines()[:-1]:
        assert re.match(r"^.+:\d+:\d+: (error|warning): .+", line), line


def test_load_model_raises_with_every_problem() -> None:
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(FIXTURES / "field_options.yaml")
    types = {p.type for p in info.value.problems}
    assert {
        "field.option_not_applicable",
        "field.options_missing",
        "field.default_invalid",
        "field.range_empty",
    } <= types
    assert str(info.value).startswith(str(Path("tests/fixtures/invalid/field_options.yaml"))) or ":" in str(info.value)


def test_hint_names_the_close_entity() -> None:
    problems, _ = check_model_file(FIXTURES / "link_unknown_target.yaml")
    (problem,) = [p for p in problems if p.type == "link.unknown_target"]
    assert problem.hint == "did you mean 'client'?"
    assert "did you mean 'client'?" in problem.format()


def test_unknown_field_type_hint() -> None:
    problems, _ = check_model_file(FIXTURES / "field_unknown_type.yaml")
    (problem,) = problems
    assert problem.hint == "did you mean 'money'?"
    assert "deal" in problem.message and "amount" in problem.message


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "file.not_found" not in result.output and "no such file" in result.output


def test_json_format(tmp_path: Path) -> None:
    import json

    result = CliRunner().invoke(app, ["check", "--format", "json", str(FIXTURES / "dead_end.yaml")])
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert doc["valid"] is False
    assert [p["type"] for p in doc["problems"]] == ["stage.dead_end"]
    assert doc["problems"][0]["line"] == 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_warnings_do_not_fail_unless_strict(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "metacrm: 1\nentities:\n  deal:\n    fields: {title: {type: string}}\n"
        "    stages:\n      initial: new\n      states: {new: {}, dropped: {kind: lost}}\n"
        "      transitions: {new: [dropped]}\n",
    )
    model = metacrm.load_model(path)
    assert [w.type for w in model.warnings] == ["stage.no_won"]
    with pytest.raises(metacrm.ModelError):
        metacrm.load_model(path, strict=True)
    assert CliRunner().invoke(app, ["check", str(path)]).exit_code == 0
    assert CliRunner().invoke(app, ["check", "--strict", str(path)]).exit_code == 2


def test_star_transitions_and_reopen(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """metacrm: 1
entities:
  deal:
    fields: {title: {type: string}, lost_reason: {type: text}}
    stages:
      initial: new
      states:
        new: {}
        work: {probability: 0.4, sla: 1d 12h}
        won: {kind: won}
        lost: {kind: lost, requires: [lost_reason]}
      transitions:
        - {from: new, to: work}
        - {from: work, to: won}
        - {from: "*", to: lost}
        - {from: lost, to: new, reopen: true}
""",
    )
    model = metacrm.load_model(path)
    p = model.entities["deal"].pipelines["default"]
    assert p.next_stages("new") == ("work", "lost")
    assert p.next_stages("work") == ("won", "lost")
    assert p.next_stages("lost") == ("new",)
    assert p.can_move("lost", "new") and not p.can_move("won", "lost")
    assert p.stages["work"].sla_seconds == 36 * 3600
    assert p.stages["won"].probability == 1.0


def test_cyrillic_round_trips(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "metacrm: 1\nlabel: Торговая компания\nentities:\n  client:\n    label: Клиент\n"
        "    fields:\n      source: {type: choice, options: [{value: site, label: Сайт}, звонок]}\n",
    )
    model = metacrm.load_model(path)
    assert model.label == "Торговая компания"
    field = model.entities["client"].fields["source"]
    assert [o.label for o in field.options] == ["Сайт", None]
    assert field.option_values == ("site", "звонок")
    assert "Торговая компания" in model.canonical


def test_canonical_form_ignores_layout(tmp_path: Path) -> None:
    a = _write(tmp_path, "metacrm: 1\nentities:\n  client:\n    fields: {name: {type: string}, city: {type: string}}\n")
    first = metacrm.load_model(a)
    split = tmp_path / "b"
    split.mkdir()
    (split / "part.yaml").write_text(
        "entities:\n  client:\n    fields:\n      name:\n        type: string\n      city: {type: string}\n"
    )
    (split / "main.yaml").write_text("metacrm: 1\ninclude: [part.yaml]\n")
    second = metacrm.load_model(split / "main.yaml")
    assert first.sha256 == second.sha256
    assert second.entities["client"].fields["name"].loc.file.endswith("part.yaml")


def test_declaration_order_is_part_of_the_model(tmp_path: Path) -> None:
    """Reordering stages changes what boards and funnels show, so it is another model version."""

    def model(first: str, second: str) -> str:
        return (
            "metacrm: 1\nentities:\n  deal:\n    fields:\n      title: {type: string}\n    stages:\n"
            "      initial: new\n      states:\n        new: {}\n"
            f"        {first}: {{}}\n        {second}: {{}}\n        won: {{kind: won}}\n"
            "      transitions: {new: [a, b], a: [won], b: [won]}\n"
        )

    first = metacrm.load_model(_write(tmp_path, model("a", "b")))
    second = metacrm.load_model(_write(tmp_path, model("b", "a")))
    assert list(first.entities["deal"].pipelines["default"].stages) == ["new", "a", "b", "won"]
    assert list(second.entities["deal"].pipelines["default"].stages) == ["new", "b", "a", "won"]
    assert first.sha256 != second.sha256
