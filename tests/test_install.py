"""The install: a light core, extras for PNG charts and PostgreSQL, and a one-line error naming
the extra when a missing one is needed (simulated by putting None in sys.modules, which makes
Python refuse the import as if the package were not installed)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.errors import MetaCRMError, MissingExtra, SetupError
from metacrm.extras import PNG, POSTGRES, import_extra

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "tests" / "fixtures" / "valid" / "contract.yaml"
PNG_LINE = "error: PNG charts need matplotlib: pip install 'metacrm[png]'\n"
PG_LINE = "error: PostgreSQL needs psycopg: pip install 'metacrm[postgres]'\n"


@pytest.fixture
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_default_install_leaves_charts_and_postgresql_to_extras(pyproject) -> None:
    project = pyproject["project"]
    names = {dep.split("[")[0].split(">")[0].split("=")[0].strip().lower() for dep in project["dependencies"]}
    assert not names & {"matplotlib", "psycopg", "phonenumbers", "numpy"}
    assert "phonenumberslite" in names  # parsing and formatting only: no geocoder or carrier data
    extras = project["optional-dependencies"]
    assert extras["png"] == ["matplotlib>=3.7"] and extras["postgres"] == ["psycopg[binary]>=3.1"]
    assert extras["web"] and not names & {"fastapi", "uvicorn"}  # the HTTP server is an extra too
    assert "metacrm[png,postgres,web]" in extras["test"]  # the tests draw charts, run on PostgreSQL, serve HTTP
    assert extras["s3"] == ["boto3>=1.28"] and "boto3" not in names  # files in S3: an extra (docs/files.md)
    assert "metacrm[s3]" in extras["test"] and any(d.startswith("moto") for d in extras["test"])


def test_the_license_file_ships_in_the_sdist_and_the_wheel(pyproject) -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "metacrm developers" in text
    assert pyproject["project"]["license"] == "MIT"
    assert "LICENSE" in pyproject["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    # hatchling puts LICENSE* into the wheel's dist-info/licenses by default: nothing may turn that off
    assert "license-files" not in pyproject["project"]


def test_import_extra_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for need, line in ((PNG, PNG_LINE), (POSTGRES, PG_LINE)):
        with pytest.raises(MissingExtra) as caught:
            import_extra(need)
        assert f"error: {caught.value}\n" == line
        assert caught.value.extra == need[1] and caught.value.module == need[0]
        assert isinstance(caught.value, SetupError) and isinstance(caught.value, MetaCRMError)


def test_an_installed_extra_that_does_not_import_says_why_on_one_line(monkeypatch) -> None:
    def broken(name):
        raise ImportError("numpy.core.multiarray failed to import\n\nIMPORTANT: PLEASE READ THIS", name="numpy.core")

    monkeypatch.setattr("metacrm.extras.importlib.import_module", broken)
    with pytest.raises(MissingExtra) as caught:
        import_extra(PNG)
    assert str(caught.value) == (
        "PNG charts need matplotlib (it is installed but does not import: numpy.core.multiarray failed to import)"
        ": pip install 'metacrm[png]'"
    )


def test_missing_extra_pickles() -> None:
    error = MissingExtra("PNG charts need matplotlib: pip install 'metacrm[png]'", extra="png", module="matplotlib")
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), str(back), back.extra, back.module) == (MissingExtra, str(error), "png", "matplotlib")


def test_postgresql_without_psycopg(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for url in ("postgresql://postgres@127.0.0.1/test", "postgresql+psycopg://postgres@127.0.0.1/test"):
        with pytest.raises(MissingExtra, match=r"PostgreSQL needs psycopg: pip install 'metacrm\[postgres\]'$"):
            metacrm.connect(CONTRACT, url)
    result = CliRunner().invoke(
        app, ["list", "client", "--model", str(CONTRACT), "--db", "postgresql://postgres@127.0.0.1/test"]
    )
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", PG_LINE)


def test_png_without_matplotlib(monkeypatch, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'crm.db'}"
    with metacrm.connect(CONTRACT, db) as crm:
        crm.migrate()
        crm.create("client", {"name": "ООО Ромашка"})
        funnel, group = crm.funnel("deal"), crm.report_group("client", "source")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from metacrm.runtime.reports import funnel_png, group_png

    for draw, doc in ((funnel_png, funnel), (group_png, group)):
        with pytest.raises(MissingExtra, match=r"^PNG charts need matplotlib"):
            draw(doc, tmp_path / "chart.png")
    chart = tmp_path / "cli.png"
    for args in (["funnel", "deal"], ["group", "client", "--by", "source"]):
        result = CliRunner().invoke(
            app, ["report", *args, "--model", str(CONTRACT), "--db", db, "--format", "png", "--output", str(chart)]
        )
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", PNG_LINE), args
    assert not chart.exists()
    # text reports need nothing more
    result = CliRunner().invoke(app, ["report", "funnel", "deal", "--model", str(CONTRACT), "--db", db])
    assert result.exit_code == 0 and "new" in result.stdout


def test_the_core_works_without_the_extras_in_a_fresh_process(tmp_path) -> None:
    """A process that cannot import matplotlib, numpy or psycopg: the SQLite CRM works end to end,
    and asking for a chart prints one line on stderr and exits 2 (no traceback)."""
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("matplotlib", "numpy", "psycopg"):
            sys.modules[name] = None
        import metacrm
        db = "sqlite:///{(tmp_path / "crm.db").as_posix()}"
        with metacrm.connect({str(CONTRACT)!r}, db) as crm:
            crm.migrate()
            client = crm.create("client", {{"name": "ООО Ромашка", "phone": "+7 495 123-45-67"}})
            assert client["phone"] == "+74951234567", client
            crm.funnel("deal")
        from metacrm.cli.main import main
        sys.argv = ["metacrm", "report", "funnel", "deal", "--model", {str(CONTRACT)!r}, "--db", db,
                    "-f", "png", "-O", {str(tmp_path / "f.png")!r}]
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", PNG_LINE)
