"""`metacrm init`: the starter model and README, written into a folder; the model passes
`metacrm check` with no warning and works on both dialects; existing files are never overwritten
without --force."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.starter import FILES, starter_text

runner = CliRunner()


def test_init_writes_the_starter_into_the_current_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert result.output == ("wrote model.yaml\nwrote README.md\nnext: metacrm check model.yaml, then read README.md\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / name).read_text(encoding="utf-8") == starter_text(name)


def test_the_starter_model_passes_check_with_no_warning(tmp_path) -> None:
    runner.invoke(app, ["init", str(tmp_path / "crm")])
    model = tmp_path / "crm" / "model.yaml"
    result = runner.invoke(app, ["check", str(model)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{model}: ok (3 entities, 1 pipeline, 0 warnings)\n"
    loaded = metacrm.load_model(model)
    assert set(loaded.entities) == {"client", "deal", "task"}


def test_every_key_of_the_starter_model_is_explained_in_a_comment() -> None:
    """A consultant reads the starter alone: each key that starts a line carries a comment, on its
    line or on the line before, at least where it first appears (names of things excepted)."""
    lines = starter_text("model.yaml").splitlines()
    names = {"client", "deal", "task", "manager", "director", "follow_up_proposal", "name", "email", "phone"}
    names |= {"title", "amount", "lost_reason", "due", "done", "subject", "new", "qualified", "won", "lost"}
    explained: dict[str, bool] = {}
    for i, line in enumerate(lines):
        match = re.match(r"^\s*(?:- )?([a-z_]+):", line)
        if not match or match.group(1) in names:
            continue
        commented = "#" in line or lines[i - 1].lstrip().startswith("#") or lines[i + 1].lstrip().startswith("#")
        explained[match.group(1)] = explained.get(match.group(1), False) or commented
    assert len(explained) >= 20
    assert [key for key, ok in explained.items() if not ok] == []


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path) -> None:
    (tmp_path / "README.md").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"error: {tmp_path / 'README.md'} already exists; nothing was written (--force overwrites it)\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "model.yaml").exists()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "mine\n"


def test_init_force_overwrites(tmp_path) -> None:
    (tmp_path / "model.yaml").write_text("metacrm: 1\n", encoding="utf-8")
    result = runner.invoke(app, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "model.yaml").read_text(encoding="utf-8") == starter_text("model.yaml")


def test_init_into_a_path_that_is_a_file_is_one_line(tmp_path) -> None:
    (tmp_path / "taken").write_text("", encoding="utf-8")
    result = runner.invoke(app, ["init", str(tmp_path / "taken")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot write the starter into {tmp_path / 'taken'}: ")
    assert result.stderr.count("\n") == 1


def readme_commands() -> list[list[str]]:
    """The commands the starter README tells the consultant to run next, in order."""
    text = starter_text("README.md")
    block = re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M)[-1]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_starter_readme_commands_run_on_both_dialects(tmp_path: Path, db_url: str, monkeypatch) -> None:
    """init, then every command of the README's "what to run next", as written: each succeeds,
    and the deal ends where the README leads it, with the automation's task."""
    runner.invoke(app, ["init", str(tmp_path / "crm")])
    monkeypatch.chdir(tmp_path / "crm")  # where the README is; the model is ./model.yaml by default
    env = {"METACRM_MODEL": None, "METACRM_DB": db_url, "METACRM_USER": None}
    commands = readme_commands()
    assert [c[1] for c in commands[:3]] == ["check", "migrate", "migrate"]
    assert {"create", "move", "report", "tasks"} <= {c[1] for c in commands}
    for words in commands:
        assert words[0] == "metacrm"
        result = runner.invoke(app, words[1:], env=env)
        assert result.exit_code == 0, (words, result.output)
    refused = runner.invoke(app, ["move", "deal", "1", "lost"], env=env)
    assert refused.exit_code == 1
    assert "lost_reason is required" in refused.stderr
    with metacrm.connect("model.yaml", db_url) as crm:
        assert crm.get("deal", 1)["stage"] == "proposal"
        tasks = crm.find("task")
        assert [(t["title"], t["subject"]) for t in tasks] == [
            ("Call the client about the proposal", {"entity": "deal", "id": 1})
        ]
        assert crm.funnel("deal")["stages"][2]["now"] == 1


def test_starter_text_names_the_starter_files_when_asked_for_another() -> None:
    with pytest.raises(metacrm.MetaCRMError, match=r"no starter file 'crm.db'; starter files: model.yaml, README.md"):
        starter_text("crm.db")
