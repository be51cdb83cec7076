"""What the suite needs is there, or CI fails: a missing optional test dependency (aiosmtpd) or
data set (the Maven sample) skips its tests on a developer's machine and fails them under
``CI=true``, as a missing PostgreSQL does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import MAVEN_DATA, ROOT, require_module, require_path


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_module_or_file_skips_here_and_fails_in_ci(monkeypatch, tmp_path, ci) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match=r"metacrm_absent is not installed \(to test\)"):
        require_module("metacrm_absent", why="to test")
    with pytest.raises(expected, match=r"the data is not at .*absent"):
        require_path(tmp_path / "absent", what="the data")
    assert require_module("json", why="to test") is json
    assert require_path(tmp_path, what="the data") == tmp_path


def test_the_maven_sample_is_in_the_repository() -> None:
    assert MAVEN_DATA == ROOT / "tests" / "data" / "maven-crm"
    names = {"accounts.csv", "products.csv", "sales_pipeline.csv", "sales_teams.csv", "README.md"}
    assert names <= {p.name for p in MAVEN_DATA.iterdir()}
    readme = (MAVEN_DATA / "README.md").read_text(encoding="utf-8")
    assert "Maven Analytics" in readme and "CC0" in readme  # source and licence


def test_ci_fails_the_notification_tests_without_aiosmtpd(tmp_path) -> None:
    blocked = tmp_path / "aiosmtpd"
    blocked.mkdir()
    (blocked / "__init__.py").write_text('raise ImportError("aiosmtpd blocked by the test")\n', encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    command.append(str(ROOT / "tests" / "test_notify.py"))
    ci = subprocess.run(command, env={**env, "CI": "true"}, cwd=ROOT, capture_output=True, text=True)
    assert ci.returncode != 0 and "CI requires aiosmtpd.controller is not installed" in ci.stdout
    here = subprocess.run(command, env={**env, "CI": ""}, cwd=ROOT, capture_output=True, text=True)
    assert here.returncode == 5 and "no tests collected" in here.stdout, here.stdout  # skipped, no error
