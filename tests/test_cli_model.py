"""The model commands: schema, graph, erd, and the public API."""

from __future__ import annotations

import json
import os
import re
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
            "CRM",
            "ConflictError",
            "ConnectionLost",
            "DataError",
            "DatabaseUnavailable",
            "DuplicateWarning",
            "ExpressionError",
            "FieldIssue",
            "HIDDEN",
            "MetaCRMError",
            "MigrationError",
            "MissingExtra",
            "Model",
            "ModelError",
            "NotFound",
            "PermissionDenied",
            "Problem",
            "RateLimited",
            "SetupError",
            "SpamError",
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
    """`python -m metacrm --help` prints the usage and every command, exits 0, and imports none of
    the heavy libraries (sqlalchemy, networkx, jsonschema, pydantic)."""
    import typer.main

    code = (
        "import runpy, sys\n"
        "sys.argv = ['metacrm', '--help']\n"
        "try:\n"
        "    runpy.run_module('metacrm', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "heavy = [m for m in ('networkx', 'jsonschema', 'sqlalchemy', 'pydantic') if m in sys.modules]\n"
        "print('exit', status, 'heavy', ','.join(heavy) or '-')\n"
    )
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.splitlines()[-1] == "exit 0 heavy -", done.stdout + done.stderr
    assert "Usage: metacrm [OPTIONS] COMMAND [ARGS]..." in done.stdout
    for name in typer.main.get_command(app).commands:
        assert re.search(rf"│ {name} +\S", done.stdout), name
    direct = subprocess.run([sys.executable, "-m", "metacrm", "--help"], capture_output=True, text=True, env=env)
    assert direct.returncode == 0 and "Usage: python -m metacrm" in direct.stdout and not direct.stderr
    version = subprocess.run([sys.executable, "-m", "metacrm", "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.strip().endswith(metacrm.__version__)
    wrong = subprocess.run(
        [sys.executable, "-m", "metacrm", "no-such-command"], capture_output=True, text=True, env=env
    )
    assert wrong.returncode == 2 and "No such command 'no-such-command'" in wrong.stderr


def test_python_dash_m_metacrm_runs_the_command_line(monkeypatch, capsys) -> None:
    """metacrm/__main__.py, in this process (so it is measured): `python -m metacrm check MODEL`."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["metacrm", "check", str(CONTRACT)])
    try:
        runpy.run_module("metacrm", run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert capsys.readouterr().out.startswith(f"{CONTRACT}: ok (")


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
