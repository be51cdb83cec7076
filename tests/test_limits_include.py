"""``include:`` stays inside the root model's folder unless the including file sets
``include_outside: true``, and a problem with an included file never quotes its content."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from metacrm.cli.main import app
from metacrm.model.loader import check_model_file

PART = "entities:\n  product:\n    fields:\n      name: {type: string}\n"


def _model(folder: Path, include: str, *, allow: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.yaml"
    head = "include_outside: true\n" if allow else ""
    path.write_text(f"metacrm: 1\n{head}include:\n  - {include}\nentities: {{}}\n", encoding="utf-8")
    return path


def test_include_outside_the_folder_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "part.yaml").write_text(PART, encoding="utf-8")
    for include in ("../part.yaml", str(tmp_path / "part.yaml")):
        problems, model = check_model_file(_model(tmp_path / "m", include))
        assert model is None
        assert [(p.type, p.line) for p in problems] == [("include.outside", 3)], problems
        assert "include_outside: true" in problems[0].message


def test_a_link_that_leads_out_is_outside(tmp_path: Path) -> None:
    (tmp_path / "part.yaml").write_text(PART, encoding="utf-8")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "part.yaml").symlink_to(tmp_path / "part.yaml")
    problems, _ = check_model_file(_model(tmp_path / "m", "part.yaml"))
    assert [p.type for p in problems] == ["include.outside"]


def test_include_outside_true_allows_it_and_inside_needs_nothing(tmp_path: Path) -> None:
    (tmp_path / "part.yaml").write_text(PART, encoding="utf-8")
    problems, model = check_model_file(_model(tmp_path / "m", "../part.yaml", allow=True))
    assert [p for p in problems if p.is_error] == [] and "product" in model.entities
    (tmp_path / "n" / "parts").mkdir(parents=True)
    (tmp_path / "n" / "parts" / "p.yaml").write_text(PART, encoding="utf-8")
    problems, model = check_model_file(_model(tmp_path / "n", "parts/p.yaml"))
    assert [p for p in problems if p.is_error] == [] and "product" in model.entities
    allowed = model.canonical
    assert "include_outside" not in allowed  # layout, not meaning


def test_errors_never_quote_an_included_files_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:hunter2-topsecret:/root:/bin/bash\nline two hunter2\n", encoding="utf-8")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"ELF\x7f hunter2 \xd0\xff\xfe\x00 hunter2")
    for target, kind in ((secret, "schema.type"), (binary, "file.unreadable")):
        path = _model(tmp_path / "m", str(target), allow=True)
        result = CliRunner().invoke(app, ["check", str(path)])
        assert result.exit_code == 2
        assert "hunter2" not in result.output and "Traceback" not in result.output
        problems, _ = check_model_file(path)
        assert [p.type for p in problems] == [kind]
        assert all("hunter2" not in p.message for p in problems)


def test_a_device_is_not_a_regular_file(tmp_path: Path) -> None:
    problems, _ = check_model_file(_model(tmp_path / "m", "/dev/zero", allow=True))
    assert [p.type for p in problems] == ["include.not_a_file"]
