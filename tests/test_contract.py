"""The Python example of ../shared/CONTRACT.md runs as written (on the trade example), on
SQLite and PostgreSQL. The snippet is read from the contract itself when it is there, so the
two cannot drift apart; a copy keeps the test meaningful in a checkout without ../shared."""

from __future__ import annotations

import re
from pathlib import Path

import metacrm

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
COPY = """
import metacrm
model = metacrm.load_model("examples/trade.yaml")      # raises metacrm.ModelError (.problems)
crm = metacrm.connect(model, "sqlite:///crm.db")       # model or a path to one
crm.migrate()                                          # create / alter tables to fit the model
c = crm.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru"})
d = crm.create("deal", {"title": "Поставка", "amount": "120000.00", "client": c["id"]})
crm.move("deal", d["id"], "qualified")
crm.move("deal", d["id"], "proposal")                 # new -> proposal directly would be refused
crm.find("deal", where="stage = 'proposal' and amount > 1000", order_by="-amount", limit=50)
crm.related("client", c["id"], "deals")            # through a link or its inverse
crm.count("deal", where="stage = 'won'")
crm.funnel("deal")
"""


def _snippet() -> str:
    if CONTRACT.is_file():
        match = re.search(r"## Python\n```python\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), re.S)
        assert match, "CONTRACT.md has no Python example"
        return match.group(1)
    return COPY


def test_contract_python_example_runs_as_written(db_url) -> None:
    code = _snippet()
    code = code.replace('"examples/trade.yaml"', repr(str(ROOT / "examples" / "trade.yaml")))
    code = code.replace('"sqlite:///crm.db"', repr(db_url))
    namespace: dict = {}
    exec(compile(code, "CONTRACT.md", "exec"), namespace)  # noqa: S102 - our own documentation
    crm = namespace["crm"]
    try:
        deal = crm.get("deal", namespace["d"]["id"])
        assert deal["stage"] == "proposal"
        assert [h["to_stage"] for h in crm.history("deal", deal["id"])] == ["new", "qualified", "proposal"]
        try:
            crm.move("deal", crm.create("deal", {"title": "x", "client": namespace["c"]["id"]})["id"], "proposal")
        except metacrm.TransitionError as exc:
            assert "allowed next" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("new -> proposal must be refused")
    finally:
        crm.close()
