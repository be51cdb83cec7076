"""The model commands: schema, graph, erd, and the public API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "tests" / "fixtures" / "valid" / "contract.yaml"
runner = CliRunner()


def test_public_api_is_frozen() -> None:
    assert sorted(metacrm.__all__) == sorted(
        [
            "AutomationError",
            "ConflictError",
            "DataError",
            "DuplicateWarning",
            "ExpressionError",
            "HIDDEN",
            "MetaCRMError",
            "MigrationError",
            "MissingExtra",
            "Model",
            "ModelError",
            "NotFound",
            "PermissionDenied",
            "Problem",
            "SetupError",
            "TransitionError",
            "ValidationError",
            "__version__",
            "connect",
            "load_model",
        ]
    )
    for name in metacrm.__all__:
        assert hasattr(metacrm, name)
    for name in (
        "ModelError",
        "ValidationError",
        "TransitionError",
        "PermissionDenied",
        "ConflictError",
        "NotFound",
        "MigrationError",
        "AutomationError",
        "SetupError",
        "MissingExtra",
    ):
        assert issubclass(getattr(metacrm, name), metacrm.MetaCRMError)


def test_schema_command_prints_the_schema_file() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == json.loads((ROOT / "schemas" / "metacrm.schema.json").read_text())


def test_schema_is_valid_draft_2020_12() -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads((ROOT / "schemas" / "metacrm.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_graph_mermaid_marks_won_lost_and_probabilities() -> None:
    result = runner.invoke(app, ["graph", str(CONTRACT), "deal"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("stateDiagram-v2")
    assert "[*] --> new" in out
    assert "qualified --> invoice" in out
    assert 'state "proposal (50%)" as proposal' in out
    assert "class won won" in out and "class lost lost" in out


def test_graph_dot() -> None:
    result = runner.invoke(app, ["graph", str(CONTRACT), "deal", "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('digraph "deal"')
    assert '"default__invoice" -> "default__won";' in result.output
    assert "doublecircle" in result.output


def test_graph_paths() -> None:
    result = runner.invoke(app, ["graph", str(CONTRACT), "deal", "--paths"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "default: new -> qualified -> proposal -> invoice -> won",
        "default: new -> qualified -> invoice -> won",
    ]
    assert "default: from qualified, won needs: amount" in result.output.splitlines()


def test_graph_bad_usage_exits_2() -> None:
    result = runner.invoke(app, ["graph", str(CONTRACT), "dael"])
    assert result.exit_code == 2
    assert "unknown entity 'dael'" in result.output and "did you mean 'deal'?" in result.output
    result = runner.invoke(app, ["graph", str(CONTRACT), "product"])
    assert result.exit_code == 2 and "has no stages" in result.output
    result = runner.invoke(app, ["graph", str(CONTRACT), "deal", "--pipeline", "air"])
    assert result.exit_code == 2 and "unknown pipeline 'air'" in result.output


def test_erd() -> None:
    result = runner.invoke(app, ["erd", str(CONTRACT)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("erDiagram")
    assert 'deal }o--|| client : "client / deals"' in out
    assert 'deal }o--o{ product : "products / deals"' in out
    assert 'task }o--o| deal : "subject"' in out and 'task }o--o| client : "subject"' in out
    assert "email email UK" in out


def test_invalid_model_for_graph_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metacrm: 1\nentities:\n  deal:\n    fields: {x: {type: nope}}\n")
    result = runner.invoke(app, ["graph", str(bad), "deal"])
    assert result.exit_code == 2
    assert "bad.yaml:4:" in result.output


def test_console_script_starts_fast_and_lazily() -> None:
    """`metacrm --help` must not import the heavy libraries (sqlalchemy, networkx, jsonschema)."""
    code = (
        "import sys; from metacrm.cli.main import app; "
        "heavy = [m for m in ('networkx', 'jsonschema', 'sqlalchemy', 'pydantic') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_command_is_documented_in_the_readme() -> None:
    import typer.main

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer may vendor click: no isinstance)
            names += [f"{name} {sub}" for sub in command.commands]
        else:
            names.append(name)
    missing = [n for n in names if f"metacrm {n}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"
