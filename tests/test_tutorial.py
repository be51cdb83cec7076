"""docs/tutorial.md cannot go stale: its commands run, in order, in an empty folder, and their
output must be what the document shows.

The tutorial is read as a script: a ```yaml block whose first line is ``# file: NAME`` is written
to NAME; in a ```console block each ``$ metacrm ...`` line is a command and the lines up to the
next ``$`` are its output (stdout and stderr as a terminal shows them). A command whose output
starts with ``error:`` must exit 1, every other one 0. Only what must vary is normalised: times
(ISO timestamps, durations) and runs of spaces or of dashes (table widths follow the times); a
line ``...`` stands for any lines (the long SQL of a dry run).

After a deliberate change of an output, refresh the document with
``METACRM_TUTORIAL_WRITE=1 pytest tests/test_tutorial.py -k sqlite --no-cov`` and read the diff.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from metacrm.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
WRITE = os.environ.get("METACRM_TUTORIAL_WRITE") == "1"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:\+00:00|Z)?")
DURATION = re.compile(r"(?<![\w+-])(?:\d+[dhm] )?\d+[dhms](?!\w)")


@dataclass
class Command:
    line: str  # as written after "$ "
    expected: list[str] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)  # where its output lines sit in the document


@dataclass
class Step:
    kind: str  # "write" or "run"
    path: str = ""
    text: str = ""
    command: Command | None = None


def read_steps(doc: str) -> list[Step]:
    steps: list[Step] = []
    for match in BLOCK.finditer(doc):
        lang, body = match.group(1), match.group(2)
        if lang == "yaml" and body.startswith("# file: "):
            first, _, rest = body.partition("\n")
            steps.append(Step("write", path=first.removeprefix("# file: ").strip(), text=rest))
        elif lang == "console":
            offset = match.start(2)
            current = None
            for line in body.splitlines(keepends=True):
                if line.startswith("$ "):
                    current = Command(line[2:].rstrip("\n"), span=(offset + len(line), offset + len(line)))
                    steps.append(Step("run", command=current))
                elif current is not None:
                    current.expected.append(line.rstrip("\n"))
                    current.span = (current.span[0], offset + len(line))
                offset += len(line)
    return steps


def normalise(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = DURATION.sub("<duration>", TIME.sub("<time>", line))
        lines.append(re.sub(r"-{2,}", "--", re.sub(r"[ \t]+", " ", line)).rstrip())
    return "\n".join(lines)


def matches(expected: list[str], actual: str) -> bool:
    """``actual`` equals ``expected`` after normalising both; a line ``...`` matches any lines."""
    pattern = ""
    for line in normalise("\n".join(expected)).split("\n") if expected else []:
        pattern += r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n"
    return re.fullmatch(pattern, normalise(actual) + "\n" if actual.strip() else "") is not None


def run_tutorial(folder: Path, db: str, monkeypatch) -> list[tuple[Command, int, str]]:
    """Every step, in order, in ``folder``; the commands' exit codes and outputs."""
    monkeypatch.chdir(folder)
    env = {"METACRM_MODEL": "model.yaml", "METACRM_DB": db, "METACRM_USER": None, "METACRM_TENANT": None}
    runner = CliRunner()
    results = []
    for step in read_steps(TUTORIAL.read_text(encoding="utf-8")):
        if step.kind == "write":
            (folder / step.path).write_text(step.text, encoding="utf-8")
            continue
        words = shlex.split(step.command.line)
        assert words[0] == "metacrm", f"the tutorial runs metacrm commands only: {step.command.line}"
        result = runner.invoke(app, words[1:], env=env)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        results.append((step.command, result.exit_code, result.output))
    return results


def rewrite(doc: str, results) -> str:
    """The document with each command's output replaced by the actual one (a ``...`` tail kept)."""
    for command, _, output in sorted(results, key=lambda r: r[0].span[0], reverse=True):
        lines = output.splitlines()
        if "..." in command.expected:
            lines = lines[: command.expected.index("...")] + ["..."]
        start, end = command.span
        doc = doc[:start] + "".join(f"{line}\n" for line in lines) + doc[end:]
    return doc


def test_the_tutorial_reads_as_a_script() -> None:
    steps = read_steps(TUTORIAL.read_text(encoding="utf-8"))
    commands = [s.command.line.split()[1] for s in steps if s.kind == "run"]
    writes = [s.path for s in steps if s.kind == "write"]
    # from an empty folder: the model is written before the first command that reads it
    assert steps[0].kind == "write" and steps[0].path == "model.yaml"
    assert len(writes) >= 4 and {"check", "migrate", "create", "move", "report", "init"} <= set(commands)
    assert all(s.command.expected for s in steps if s.kind == "run"), "every command shows its output"


def test_the_tutorial_outputs_are_what_the_commands_print(db_url, tmp_path, monkeypatch) -> None:
    """On SQLite, which the tutorial targets: each output exactly as shown (times normalised). On
    PostgreSQL the same, but for migrations, which go between the same model versions in the
    dialect's own steps (PostgreSQL alters a column in place where SQLite rebuilds the table)."""
    sqlite = db_url.startswith("sqlite")
    folder = tmp_path / "shop"
    folder.mkdir()
    results = run_tutorial(folder, db_url, monkeypatch)
    if WRITE and sqlite:
        TUTORIAL.write_text(rewrite(TUTORIAL.read_text(encoding="utf-8"), results), encoding="utf-8")
    stale = []
    for command, code, output in results:
        refused = bool(command.expected) and command.expected[0].startswith("error:")
        expected = command.expected
        if not sqlite and command.line.startswith("metacrm migrate"):
            expected = [expected[0].replace("(sqlite)", "(postgresql)"), "..."]
        if code != (1 if refused else 0):
            stale.append(f"$ {command.line}: exit code {code}\n{output}")
        elif not matches(expected, output):
            shown = "\n".join(expected)
            stale.append(f"$ {command.line}\n--- the tutorial shows:\n{shown}\n--- it prints:\n{output}")
    assert not stale, "docs/tutorial.md is stale:\n\n" + "\n\n".join(stale)
