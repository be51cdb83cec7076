"""The documents the CRM returns, as TypedDicts: for type checkers (``mypy``, ``pyright``) and
editors. At run time every one of them is a plain ``dict``; nothing here is checked or
converted. ``tests/test_typing.py`` compares them with what the methods really return.

Records stay ``dict[str, Any]`` (``Record``): their keys are the fields and links the YAML
model declares, which no static type can know. Money is ``Decimal``, dates ``datetime.date``,
moments ``datetime.datetime`` (UTC), as everywhere in metacrm.
"""

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NotRequired, TypeAlias, TypedDict

if TYPE_CHECKING:
    from .notify.senders import SmtpSettings

Record: TypeAlias = dict[str, Any]
"""A record: ``id``, ``version``, ``created_at``, ``updated_at``, the model's fields and links
(and ``owner``, ``pipeline``, ``stage``... when the entity has them)."""

When: TypeAlias = dt.date | dt.datetime
"""A report bound as the report read it (a date is a whole UTC day)."""


class UserInfo(TypedDict):
    """``crm.user_info(login)``, ``crm.users()``, ``crm.add_user(...)``."""

    login: str
    name: str | None
    roles: list[str]
    team: str | None
    email: str | None


class AllowedMove(TypedDict):
    """An entry of ``crm.allowed_moves(entity, id)``: a move out of the record's stage."""

    stage: str
    label: str
    kind: str  # "open", "won" or "lost"
    possible: bool
    reasons: list[str]  # why not (empty when possible)
    reopen: NotRequired[bool]  # present (True) on a reopen transition


class HistoryEntry(TypedDict):
    """An entry of ``crm.history(entity, id)``: one stage move, oldest first."""

    record_id: int
    pipeline: str
    from_stage: str | None  # None for the creation row
    to_stage: str
    at: dt.datetime
    by: str | None
    note: str | None
    seconds_in_stage: int | None
    source: str  # "create", "move", "reopen", "import"


class JournalEntry(TypedDict):
    """What ``crm.note(...)`` returns: the journal entry it added."""

    entity: str
    record_id: int
    action: str
    at: dt.datetime
    by: str | None
    changes: dict[str, list[Any]]  # name -> [old, new]
    kind: str | None
    text: str | None


class TimelineEntry(TypedDict):
    """An entry of ``crm.timeline(entity, id)``, newest first."""

    at: dt.datetime
    entity: str
    record_id: int
    action: str
    by: str | None
    changes: dict[str, list[Any]]
    kind: str | None
    text: str | None
    via: str | None  # the link through which a linked record's entry shows here
    source: str  # "journal" or "history"


class FunnelStage(TypedDict):
    """A stage of a funnel (see metacrm.runtime.reports for each number)."""

    stage: str
    label: str
    kind: str
    now: int
    reached: int
    amount: Decimal | None
    probability: float | None
    forecast: Decimal | None
    conversion_next: float | None
    conversion_won: float | None
    median_seconds: float | None
    # a currency field whose records name their currency: the sums per currency (``amount`` and
    # ``forecast`` are then None when the funnel holds several currencies)
    amounts: NotRequired[dict[str, Decimal]]
    forecasts: NotRequired[dict[str, Decimal] | None]


# functional syntax: "from" is a Python keyword
Funnel = TypedDict(
    "Funnel",
    {
        "entity": str,
        "pipeline": str,
        "amount_field": str | None,
        "from": When | None,
        "to": When | None,
        "as_of": When | None,
        "count": int,
        "won": int,
        "lost": int,
        "win_rate": float | None,
        "forecast": Decimal | None,
        "stages": list[FunnelStage],
        "currency": NotRequired[str | None],  # a currency amount field: its one currency (None: several)
        "forecasts": NotRequired[dict[str, Decimal]],  # ... whose records name theirs: per currency
    },
)
Funnel.__doc__ = """``crm.funnel(entity)``: the funnel of a pipeline."""


class FunnelGroup(Funnel):
    """An entry of ``crm.funnel(entity, by=...)``: the funnel of the records with one value."""

    by: str
    value: Any  # the owner's login, the field's value or the link's target id (None: no value)
    label: str | None
    hidden: NotRequired[bool]  # link targets the acting user may not read, as one group


class GroupRow(TypedDict):
    """A row of a group report."""

    period: NotRequired[str | None]  # with ``period``: "2024-03", "2024-Q1" (None: no date)
    value: Any
    label: str | None
    hidden: NotRequired[bool]  # by a link: the targets the acting user may not read, as one row
    count: int
    sum: NotRequired[Decimal | int]  # with ``sum``
    currency: NotRequired[str | None]  # summing a currency field: the currency of ``sum``


class GroupTotal(TypedDict):
    count: int
    sum: NotRequired[Decimal | int | None]  # a currency field in several currencies: None (see sums)
    currency: NotRequired[str | None]  # a currency field: the one currency of ``sum``
    sums: NotRequired[dict[str | None, Decimal]]  # a currency field: the total of each currency


GroupReport = TypedDict(
    "GroupReport",
    {
        "entity": str,
        "by": str,
        "pipeline": str | None,
        "sum": str | None,
        "period": str | None,
        "date": str,
        "from": When | None,
        "to": When | None,
        "rows": list[GroupRow],
        "total": GroupTotal,
    },
)
GroupReport.__doc__ = """``crm.report_group(entity, by)``: counts (and sums) per value, per period."""


class BoardColumn(TypedDict):
    stage: str
    label: str
    kind: str
    probability: float | None
    count: int
    amount: Decimal | None
    more: int  # records in the stage beyond ``records``
    records: list[Record]


class Board(TypedDict):
    """``crm.board(entity)``: the kanban of a pipeline."""

    entity: str
    pipeline: str
    amount_field: str | None
    count: int
    amount: Decimal | None
    columns: list[BoardColumn]


class RecordRef(TypedDict):
    """Another record as a card shows it (a hidden one has no title); a user of a ``to: user``
    link is ``{"entity": "user", "id": LOGIN, "title": their name or login, "hidden": False}``."""

    entity: str
    id: int | str
    title: str | None
    hidden: bool
    stage: NotRequired[str]  # in ``related`` lists of entities with stages
    link: NotRequired[dict[str, Any]]  # a many-link with fields: this pair's values (``{"qty": 3}``)


class Card(TypedDict):
    """``crm.card(entity, id)``: a record with its links both ways."""

    entity: str
    record: Record
    links: dict[str, RecordRef | list[RecordRef] | None]
    related: dict[str, list[RecordRef]]
    moves: NotRequired[list[AllowedMove]]  # with ``moves=True`` on an entity with stages
    timeline: NotRequired[list[TimelineEntry]]  # with ``timeline=N``


class SearchHit(TypedDict):
    """An entry of ``crm.search(text)``."""

    entity: str
    id: int
    title: str
    snippet: str
    rank: float


class TagCount(TypedDict):
    """An entry of ``crm.tags(entity)``: a tag in use and how many records carry it."""

    tag: str
    count: int


class TaskSubject(TypedDict):
    entity: str
    id: int


class Task(TypedDict):
    """An entry of ``crm.tasks()``."""

    entity: str
    id: int
    title: str | None
    due: dt.date | dt.datetime | None
    priority: Any
    owner: str | None
    done: bool
    overdue: bool
    blocked: bool
    blocked_by: list[int]
    subject: TaskSubject | None
    subject_title: str | None
    subject_hidden: bool
    record: Record


class FormInfo(TypedDict):
    """An entry of ``crm.forms()``: a form of the model."""

    name: str
    label: str | None
    entity: str
    fields: list[str]
    values: dict[str, Any]
    assign: list[str]
    token: bool  # token-bound: only a caller with an API token may submit
    rate: str | None  # "10/minute" (None for a token-bound form)
    honeypot: str | None


class FormSubmission(TypedDict):
    """What ``crm.submit_form(name, data)`` did: created a record, or noted a duplicate."""

    status: str  # "created" or "duplicate"
    id: int
    form: str
    entity: str
    owner: NotRequired[str | None]  # when created: who the assignment chose


class Fired(TypedDict):
    """An entry of ``crm.tick()``: an automation that fired."""

    automation: str
    entity: str
    record_id: int
    event: str
    occurrence: str
    status: str


class DuplicateMatch(TypedDict):
    """An entry of ``crm.find_duplicates(entity, data)``."""

    rule: str
    match: str
    action: str  # "block" or "warn"
    field: str
    id: int | None


class DuplicateGroup(TypedDict):
    """An entry of ``crm.duplicates(entity)``."""

    rule: str
    match: str
    action: str
    records: list[int]


class OutboxMessage(TypedDict):
    """An entry of ``crm.outbox()``: a stored outbox message."""

    id: int
    created_at: dt.datetime
    automation: str | None
    entity: str | None
    record_id: int | None
    channel: str  # "email" or "webhook"
    recipient: str
    subject: str | None
    body: str
    payload: Any
    status: str  # "pending", "sending", "sent" or "failed"
    attempts: int
    next_attempt_at: dt.datetime
    claimed_until: dt.datetime | None
    last_error: str | None
    sent_at: dt.datetime | None


class Delivered(TypedDict):
    """A message a delivery run attempted."""

    id: int
    channel: str
    recipient: str
    status: str
    attempts: int
    error: str | None
    next_attempt_at: dt.datetime | None


class DeliverOptions(TypedDict, total=False):
    """The keyword options of ``crm.deliver(...)``: see :func:`metacrm.notify.deliver`."""

    now: dt.datetime | None
    limit: int | None
    smtp: "SmtpSettings | str | None"
    sender: str | None
    starttls: bool | None
    webhooks: bool
    batch: int
    max_attempts: int
    backoff: float
    backoff_cap: float
    lease: float
    timeout: float


class DeliveryReport(TypedDict):
    """``crm.deliver()``: what one delivery run did."""

    sent: int
    retry: int
    failed: int
    waiting: int
    messages: list[Delivered]


class RecordedModel(TypedDict):
    """``crm.recorded_model()``: the model version the database holds."""

    id: int
    sha256: str
    name: str
    canonical: str
    applied_at: dt.datetime
    applied_by: str | None
    metacrm_version: str


class FileInfo(TypedDict):
    """``crm.attach()``, ``crm.files()``, ``crm.file_info()``, ``crm.detach()``: one attached file."""

    id: int
    entity: str
    record_id: int
    field: str | None  # the file field it fills; None for an attachment
    name: str
    size: int
    mime: str
    sha256: str
    created_at: dt.datetime
    created_by: str | None


class FileDownload(FileInfo):
    """``crm.download()``: the file's metadata and where its content was written."""

    path: str


class PruneReport(TypedDict):
    """``crm.prune()``: file rows of records that are gone, stored contents removed and kept."""

    rows: int
    removed: int
    kept: int
    dry_run: bool


__all__ = [
    "AllowedMove",
    "Board",
    "BoardColumn",
    "Card",
    "DeliverOptions",
    "Delivered",
    "DeliveryReport",
    "DuplicateGroup",
    "DuplicateMatch",
    "Fired",
    "FormInfo",
    "FileDownload",
    "FileInfo",
    "FormSubmission",
    "Funnel",
    "FunnelGroup",
    "FunnelStage",
    "GroupReport",
    "GroupRow",
    "GroupTotal",
    "HistoryEntry",
    "JournalEntry",
    "OutboxMessage",
    "PruneReport",
    "Record",
    "RecordRef",
    "RecordedModel",
    "SearchHit",
    "TagCount",
    "Task",
    "TaskSubject",
    "TimelineEntry",
    "UserInfo",
    "When",
]
