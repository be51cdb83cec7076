"""A host application using every public method of metacrm's CRM and its top-level functions,
with precise types: ``mypy --strict`` must pass on it without an error (tests/test_typing.py).
It also runs (on the trade example), so the calls are real ones, not only well-typed ones.

Every variable is annotated with the type the call must return: a wrong annotation in the
library (a union where the argument decides, a missing key of a document) fails here.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import metacrm
from metacrm import CRM, FieldIssue, Model
from metacrm.migrate.steps import Plan
from metacrm.model.metamodel import Form
from metacrm.runtime.access import Actor
from metacrm.runtime.filestore import FileStore
from metacrm.types import (
    AllowedMove,
    Board,
    BoardColumn,
    Card,
    DeliveryReport,
    DuplicateGroup,
    DuplicateMatch,
    FileDownload,
    FileInfo,
    Fired,
    FormInfo,
    FormSubmission,
    Funnel,
    FunnelGroup,
    FunnelStage,
    GroupReport,
    GroupRow,
    HistoryEntry,
    JournalEntry,
    OutboxMessage,
    PruneReport,
    Record,
    RecordedModel,
    RecordRef,
    SearchHit,
    TagCount,
    Task,
    TimelineEntry,
    UserInfo,
)

TRADE = Path(__file__).resolve().parents[2] / "examples" / "trade.yaml"


def open_crm(url: str) -> CRM:
    model: Model = metacrm.load_model(TRADE)
    crm: CRM = metacrm.connect(model, url)
    plan: Plan = crm.migrate(dry_run=True)
    steps: int = len(plan)
    statements: list[str] = plan.statements
    assert steps >= 0 and all(isinstance(s, str) for s in statements)
    crm.migrate()
    recorded: RecordedModel | None = crm.recorded_model()
    assert recorded is not None and recorded["sha256"] == model.sha256
    reindexed: list[str] = crm.ensure_search_index()
    assert reindexed == [] or all(isinstance(name, str) for name in reindexed)
    return crm


def users(crm: CRM) -> CRM:
    added: UserInfo = crm.add_user("anna", roles=["manager"], name="Anna", email="anna@example.com")
    roles: list[str] = added["roles"]
    changed: UserInfo = crm.set_user("anna", team="north")
    team: str | None = changed["team"]
    everyone: list[UserInfo] = crm.users()
    info: UserInfo = crm.user_info("anna")
    assert roles == ["manager"] and team == "north" and info in everyone
    crm.add_user("gone", roles=["manager"])
    off: UserInfo = crm.disable_user("gone")
    shut: set[str] = crm.disabled_users()
    on: UserInfo = crm.enable_user("gone")
    owned: dict[str, int] = crm.owned_records("gone")
    assert sum(owned.values()) == 0
    removed: dict[str, int] = crm.remove_user("gone")
    assert off["login"] == on["login"] == "gone" and "gone" in shut and "gone" not in crm.disabled_users()
    assert isinstance(removed, dict) and "gone" not in [u["login"] for u in crm.users()]
    anna: CRM = crm.as_user("anna")
    her_roles: frozenset[str] | None = anna.roles
    actor: Actor = anna.actor
    assert her_roles == frozenset({"manager"}) and actor.login == "anna" and crm.roles is None
    return anna


def records(crm: CRM) -> tuple[Record, Record]:
    client: Record = crm.create("client", {"name": "Acme", "inn": "7701234567", "city": "Tver"})
    client_id: int = client["id"]
    many: list[Record] = crm.create_many("client", [{"name": "Beta"}, {"name": "Gamma"}])
    loaded: int = crm.create_many("client", ({"name": f"Bulk {i}"} for i in range(3)), returning=False)
    assert len(many) == 2 and loaded == 3
    deal: Record = crm.create("deal", {"title": "Pumps", "client": client_id, "amount": Decimal("1500.00")})
    with crm.transaction() as tx:
        same: CRM = tx
        same.update("deal", deal["id"], {"margin": 12}, version=deal["version"])
    with crm.engine.begin() as conn, crm.joined(conn) as host:  # in the host's own transaction
        joined: CRM = host
        joined.update("deal", deal["id"], {"discount": 5})
    with crm.request() as request, request.primary() as primary:  # read-your-writes scopes (docs/scaling.md)
        on_replica: bool = primary.reads_replica
        assert not on_replica  # no read_url: every read is the database's
    deal = crm.get("deal", deal["id"])
    found: list[Record] = crm.find("deal", "amount > :least", {"least": 100}, order_by="-amount", limit=10)
    counted: int = crm.count("client", "city = 'Tver'")
    deals: list[Record] = crm.related("client", client_id, "deals")
    titles: dict[int, str] = crm.titles("client", [client_id, many[0]["id"]])
    checked = crm.validators["deal"].create({"title": "checked", "client": client_id})  # made on first use
    assert checked["title"] == "checked"
    assert found and counted == 1 and deals[0]["id"] == deal["id"] and titles[client_id] == "Acme"
    card: Card = crm.card("deal", deal["id"])
    target: RecordRef | list[RecordRef] | None = card["links"]["client"]
    assert isinstance(target, dict) and target["title"] == "Acme"
    product: Record = crm.create("product", {"name": "Pump", "sku": "P-1"})
    linked: Record = crm.link("deal", deal["id"], "products", product["id"])
    unlinked: Record = crm.unlink("deal", linked["id"], "products", product["id"])
    assert unlinked["products"] == []
    matches: list[DuplicateMatch] = crm.find_duplicates("client", {"name": "Acme"})
    groups: list[DuplicateGroup] = crm.duplicates("client")
    kept: Record = crm.merge("client", many[0]["id"], many[1]["id"])
    assert all(m["action"] in ("block", "warn") for m in matches) and isinstance(groups, list)
    gone: dict[str, list[int]] = crm.delete("client", kept["id"])
    assert gone == {"client": [kept["id"]]}
    purged: dict[str, list[int]] = crm.purge("product", product["id"])  # without archive: true, a delete
    assert purged == {"product": [product["id"]]}
    try:  # trade's entities do not declare archive: true
        back: Record = crm.restore("client", client_id)
        emptied: dict[str, list[int]] = crm.purge_archived("client")
        assert back and emptied is not None
    except metacrm.ValidationError:
        pass
    return client, deal


def stages(crm: CRM, deal: Record) -> None:
    moves: list[AllowedMove] = crm.allowed_moves("deal", deal["id"])
    possible: list[str] = [m["stage"] for m in moves if m["possible"]]
    moved: Record = crm.move("deal", deal["id"], possible[0], note="called them")
    stage: str = moved["stage"]
    history: list[HistoryEntry] = crm.history("deal", deal["id"])
    assert history[-1]["to_stage"] == stage and history[0]["from_stage"] is None
    note: JournalEntry = crm.note("deal", deal["id"], "Sent the price list", kind="email")
    timeline: list[TimelineEntry] = crm.timeline("deal", deal["id"], limit=20)
    at: dt.datetime = timeline[0]["at"]
    assert note["kind"] == "email" and at.tzinfo is not None
    fired: list[Fired] = crm.tick(now=dt.datetime.now(dt.UTC))
    assert all(f["automation"] for f in fired)


def reports(crm: CRM) -> None:
    funnel: Funnel = crm.funnel("deal", date_to=dt.date.today())
    first: FunnelStage = funnel["stages"][0]
    win_rate: float | None = funnel["win_rate"]
    amount: Decimal | None = first["amount"]
    assert first["reached"] >= first["now"] and (win_rate is None or 0 <= win_rate <= 1)
    per_owner: list[FunnelGroup] = crm.funnel("deal", by="owner")
    owner: object = per_owner[0]["value"] if per_owner else None
    group: GroupReport = crm.report_group("deal", "stage", sum="amount", period="month")
    rows: list[GroupRow] = group["rows"]
    total: int = group["total"]["count"]
    assert sum(r["count"] for r in rows) == total and (amount is None or amount >= 0) and owner is None
    board: Board = crm.board("deal", limit_per_stage=5)
    columns: list[BoardColumn] = board["columns"]
    shown: int = sum(len(c["records"]) for c in columns)
    assert shown <= board["count"]
    hits: list[SearchHit] = crm.search("acme", entity="client", limit=5)
    rank: float = hits[0]["rank"]
    assert rank > 0 or rank <= 0
    try:  # the trade model has no tags field: the refusal names it
        vocabulary: list[TagCount] = crm.tags("client")
    except metacrm.ValidationError as exc:
        assert "no tags field" in str(exc)
        vocabulary = []
    assert all(t["count"] > 0 for t in vocabulary)


def tasks(crm: CRM, deal: Record) -> None:
    lists: list[str] = crm.task_entities()
    due = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    crm.create(lists[0], {"title": "Call back", "subject": {"entity": "deal", "id": deal["id"]}, "due": due})
    open_tasks: list[Task] = crm.tasks(overdue=True, limit=10)
    blocked_by: list[int] = open_tasks[0]["blocked_by"]
    assert open_tasks[0]["overdue"] and blocked_by == []


def notifications(crm: CRM) -> None:
    report: DeliveryReport = crm.deliver(limit=10, webhooks=False, timeout=5.0)
    sent: int = report["sent"]
    messages: list[OutboxMessage] = crm.outbox(status="pending", limit=5)
    requeued: int = crm.retry_outbox([m["id"] for m in messages if m["status"] == "failed"])
    counts: dict[str, int] = crm.outbox_counts()
    assert sent >= 0 and requeued == 0 and set(counts) >= {"pending", "sent"}


def forms(crm: CRM) -> FormSubmission:
    listed: list[FormInfo] = crm.forms()
    form: Form = crm.form(listed[0]["name"])
    page: str = crm.form_html(form.name, f"/api/v1/forms/{form.name}")
    assert "<form" in page
    sent: FormSubmission = crm.submit_form(
        form.name, {"name": "Delta", "phone": "+7 900 000-00-00"}, source_ip="192.0.2.1"
    )
    lead: Record = crm.retrying(crm.get, sent["entity"], sent["id"], attempts=2)
    assert lead["name"] == "Delta" and sent["status"] == "created"
    return sent


def refusals(crm: CRM) -> list[str]:
    try:
        crm.create_many("client", [{"name": ""}, {"city": "Tver"}])
    except metacrm.ValidationError as exc:
        issues: Sequence[FieldIssue] = exc.issues
        return [issue.format() for issue in issues]
    raise AssertionError("an empty name must be refused")


FILES_MODEL = """\
metacrm: 1
name: papers
entities:
  paper:
    attachments: true
    fields:
      title: {type: string}
      scan: {type: file, accept: [".pdf"]}
"""


def files() -> None:
    """Files on a model of their own (trade has none), in an in-memory database."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "papers.yaml"
        path.write_text(FILES_MODEL, encoding="utf-8")
        with metacrm.connect(path, "sqlite://", files=Path(folder) / "store") as crm:
            crm.migrate()
            paper: Record = crm.create("paper", {"title": "Договор"})
            scan: FileInfo = crm.attach("paper", paper["id"], b"%PDF-1.4", name="scan.pdf", field="scan")
            note: FileInfo = crm.attach("paper", paper["id"], b"hello", name="note.txt")
            listed: list[FileInfo] = crm.files("paper", paper["id"])
            info: FileInfo = crm.file_info("paper", paper["id"], scan["id"])
            meta, stream = crm.open_file("paper", paper["id"], scan["id"])
            with stream:
                content: bytes = stream.read()
            written: FileDownload = crm.download("paper", paper["id"], scan["id"], folder)
            gone: FileInfo = crm.detach("paper", paper["id"], note["id"])
            store: FileStore = crm.file_store
            pruned: PruneReport = crm.prune(dry_run=True, grace=0)
            assert len(listed) == 2 and info["field"] == "scan" and meta["size"] == len(content)
            assert written["path"].endswith("scan.pdf") and gone["field"] is None and store.location
            assert pruned["removed"] == 1 and pruned["dry_run"]


def main(url: str) -> None:
    with open_crm(url) as crm:
        anna = users(crm)
        _, deal = records(crm)
        stages(crm, deal)
        reports(crm)
        tasks(crm, deal)
        notifications(crm)
        forms(crm)
        assert refusals(crm) and anna.user == "anna"
        files()
        hidden: str = metacrm.HIDDEN
        version: str = metacrm.__version__
        assert hidden and version
    crm.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///:memory:")
