"""The file commands on SQLite and PostgreSQL: attach, files, download, detach, prune, with
their refusals (one line naming the entity or field, exit 1, nothing written)."""

from __future__ import annotations

import json

import pytest
from test_files import MODEL, png
from typer.testing import CliRunner

from metacrm.cli.main import app


@pytest.fixture
def run(db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.yaml").write_text(MODEL, encoding="utf-8")
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, store: bool = True):
        extra = ["--files", str(tmp_path / "store")] if store else []
        result = runner.invoke(app, [*args, "--model", "model.yaml", "--db", db_url, *extra])
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    invoke("migrate", store=False)
    invoke("create", "deal", "title=Поставка", store=False)
    return invoke


def test_attach_list_download_detach_prune(run, tmp_path) -> None:
    (tmp_path / "c.pdf").write_bytes(b"%PDF-1.4 contract")
    (tmp_path / "p.png").write_bytes(png())
    made = json.loads(run("attach", "deal", "1", "c.pdf", "--field", "contract", "--format", "json").stdout)
    assert made["name"] == "c.pdf" and made["field"] == "contract" and made["mime"] == "application/pdf"
    run("attach", "deal", "1", "p.png", "--name", "фото.png")
    assert "c.pdf (file 1)" in run("get", "deal", "1", store=False).stdout  # the field's file by name
    assert json.loads(run("get", "deal", "1", "--format", "json", store=False).stdout)["record"]["contract"] == 1
    listed = json.loads(run("files", "deal", "1", "--format", "json", store=False).stdout)
    assert [(f["id"], f["name"]) for f in listed] == [(1, "c.pdf"), (2, "фото.png")]
    table = run("files", "deal", "1", store=False).stdout
    assert "фото.png" in table and "image/png" in table
    (tmp_path / "out").mkdir()
    run("download", "deal", "1", "1", "-o", "out")
    assert (tmp_path / "out" / "c.pdf").read_bytes() == b"%PDF-1.4 contract"
    run("download", "deal", "1", "2")  # to its own name here
    assert (tmp_path / "фото.png").read_bytes() == png()
    refused = run("download", "deal", "1", "2", code=1)
    assert "фото.png exists here" in refused.stderr
    assert run("download", "deal", "1", "1", "-o", "-").stdout_bytes == b"%PDF-1.4 contract"
    assert "detached file 2" in run("detach", "deal", "1", "2").stdout
    assert json.loads(run("prune", "--grace", "0", "--dry-run", "--format", "json").stdout)["removed"] == 1
    assert "removed 1 stored file(s)" in run("prune", "--grace", "0").stdout
    run("download", "deal", "1", "1", "-o", "again.pdf")
    assert (tmp_path / "again.pdf").read_bytes() == b"%PDF-1.4 contract"


def test_refusals_are_one_line_and_write_nothing(run, tmp_path) -> None:
    (tmp_path / "big.pdf").write_bytes(b"x" * 2000)
    (tmp_path / "a.exe").write_bytes(b"x")
    cases = [
        (
            ("attach", "deal", "1", "big.pdf", "--field", "contract"),
            "deal.contract: the file is larger than 1000 bytes",
        ),
        (("attach", "deal", "1", "a.exe"), "deal attachments: 'a.exe'"),
        (("attach", "deal", "1", "missing.pdf"), "cannot read missing.pdf"),
        (("attach", "deal", "9", "big.pdf"), "deal 9 not found"),
        (("attach", "note", "1", "a.exe"), "note has no attachments"),
        (("detach", "deal", "1", "7"), "deal 1 has no file 7"),
        (("download", "deal", "1", "7"), "deal 1 has no file 7"),
    ]
    for args, message in cases:
        result = run(*args, code=1)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "deal.contract: is a file field" in run("update", "deal", "1", "contract=1", code=1, store=False).stderr
    assert json.loads(run("files", "deal", "1", "--format", "json", store=False).stdout) == []
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("??/*/*"))


def test_postgresql_needs_a_store(run, db_url) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has a default store beside its file")
    result = run("prune", code=2, store=False)
    assert "no file store for this postgresql database" in result.stderr
