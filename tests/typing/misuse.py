"""Mistakes a type checker must catch in code using metacrm: ``mypy --strict`` must report an
error on each line marked ``# E: <code>`` and on no other line (tests/test_typing.py). Never
run; every line is a plausible slip of a developer embedding the library."""

from __future__ import annotations

import metacrm
from metacrm import CRM
from metacrm.types import Funnel, FunnelGroup, Record, SearchHit


def mistakes(crm: CRM, rows: list[dict[str, object]]) -> None:
    created: int = crm.create_many("client", rows)  # E: assignment
    records: list[Record] = crm.create_many("client", rows, returning=False)  # E: assignment
    funnel: Funnel = crm.funnel("deal", by="owner")  # E: assignment
    groups: list[FunnelGroup] = crm.funnel("deal")  # E: assignment
    stages = crm.allowed_moves("deal", 1)[0]["stages"]  # E: typeddict-item
    rate: float = crm.funnel("deal")["win_rate"]  # E: assignment
    crm.move("deal", "7", "won")  # E: arg-type
    crm.get("deal")  # E: call-arg
    name: str = crm.user_info("anna")["name"]  # E: assignment
    crm.deliver(retries=3)  # E: call-arg
    crm.tasks(overdue="yes")  # E: arg-type
    metacrm.connect("examples/trade.yaml", "sqlite:///crm.db", user=1)  # E: arg-type
    crm.as_user("anna").no_such_method()  # E: attr-defined
    total: str = crm.report_group("deal", "stage")["total"]["count"]  # E: assignment
    hit: SearchHit = crm.search("acme")  # E: assignment
    crm.retry_outbox(ids=5)  # E: arg-type
    when = crm.timeline("deal", 1)[0]["when"]  # E: typeddict-item
    again: int = crm.retrying(crm.get, "deal", 1)  # E: assignment
    form_id: str = crm.submit_form("callback", {"name": "Delta"})["id"]  # E: assignment
    with crm.transaction() as tx:
        same: int = tx  # E: assignment
    print(created, records, funnel, groups, stages, rate, name, total, hit, when, again, form_id, same)
