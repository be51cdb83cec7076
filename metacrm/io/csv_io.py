"""CSV in and out of a CRM: ``import_csv`` reads what ``export_csv`` writes (and what people and
spreadsheets write); ``export_csv`` writes what ``import_csv`` reads back.

Reading. Files are UTF-8, with or without a byte-order mark; the delimiter (``,`` ``;`` or tab)
is taken from the header line. Blank lines are skipped. Rows are numbered by the line of the
file where they start (the header is line 1), as an editor shows them.

Columns. A column fills the field, link, ``owner``, ``pipeline`` or ``stage`` of the same name,
else the one whose name or label matches it ignoring case, spaces, ``_`` and ``-`` (a column
"Close value" or "close-value" fills ``close_value``; "Subsidiary of" fills the link labelled
so). ``mapping={"column": "field"}`` says it explicitly; ``{"column": ""}`` ignores a column.
Any other column is an error naming it and listing the fields: nothing is dropped silently.
A ``stage`` column needs ``import_stages=True``; each row must then fit its stage (the stage's
``requires``; when every move into it has a ``when``, one of them true), as docs/csv.md says.
``automations=False`` creates the records without firing the model's automations.

The ``id`` column (what an export writes first) is the record's id in the source database.
The import never reuses it: records get new ids, and ``ImportResult.id_map`` says which (source
id -> new id). It serves two things: a link of the entity to itself (an account's parent) given
as an id refers to the row of the same file holding that id; and ``id_maps={"client": {...}}``
(the id maps of files imported before) translates link ids of an export into the new ids.

Links. A cell holds an id of an existing target (``3``), or the target's title (its ``title:``
field): matched exactly, else ignoring case and repeated spaces, else (``near_matches=True``)
ignoring everything but letters and digits ("GTXPro" is "GTX Pro"), which is reported. Titles are
looked up in bulk: one query per target entity (plus one full read of the target when some value
is not found exactly), never one per row. A many-link cell lists several (``1,4`` or
``Сервер, Ноутбук``); a polymorphic cell names its entity (``deal:5``). A value matching nothing,
or several records, rejects the row ("no client titled 'Foo'"). A link to the entity itself may
name another row of the file: that row is created first. An empty cell is no value (a declared
default applies); an empty link cell is reported as a note (kind ``empty_link``).

With ``near_matches=True`` a choice value that is not an option but is spelled close to exactly
one (``technolgy``) takes that option, also reported as a near match.

All or nothing. Every row is checked before anything is written: values (the record
validators), stages, links, and unique fields (inside the file and against the database). Any
bad row and nothing is imported: ``ImportRefused`` (a metacrm.ValidationError) lists every
problem, its FieldIssue ``index`` being the line. With ``skip_invalid=True`` the good rows are
imported and the rest reported. The records go to the database through one
``crm.create_many`` call: one transaction, which validates and writes in batches so memory
stays bounded. Rows linking to other rows of the file need the new ids of those rows, so the
file is written level by level (parents first), one call per level, all inside one
``crm.transaction()``: a refusal at any level rolls back every level.

The report (``report_path``; the CLI's default is FILE.report.csv, also for a refused import)
is a CSV: ``row, kind, column, value, reason`` and then the row's original cells; kinds are
``rejected`` and ``unresolved`` (the row was not imported), ``near_match`` and ``empty_link``
(imported; worth a look).

Writing. ``export_csv`` writes ``id``, the fields, the links (target ids; many-links ``1,4``,
polymorphic ``deal:5``), ``owner``, ``pipeline`` (entities with several), ``stage``, one page
of records at a time. Import it back with ``import_stages=True`` when it has a stage column.
No cell starts as a spreadsheet formula: a text starting with ``= + - @``, tab or carriage
return is written with a quote in front, which the import removes (``csv_cells.py``).
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import itertools
import json
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..errors import DuplicateWarning, FieldIssue, NotFound, ValidationError
from ..model.metamodel import Entity, Field, Link
from ..model.suggest import did_you_mean, listing
from .csv_cells import NUMERIC_TYPES, neutralise, restore, unterminated_quote
from .csv_cells import writer as csv_writer
from .paths import unwritable

PAGE_SIZE = 1000  # records per page of an export
PROGRESS_STEP = 500  # records between progress calls
CHUNK = 500  # values per lookup query
ID_COLUMN = "id"
SYSTEM_COLUMNS = frozenset(
    {"created_at", "updated_at", "version", "created_by", "updated_by", "stage_entered_at", "closed_at"}
    | {"archived_at", "archived_by"}
)

REJECTED, UNRESOLVED, NEAR_MATCH, EMPTY_LINK = "rejected", "unresolved", "near_match", "empty_link"
DUPLICATE = "duplicate"  # imported, but a `warn` duplicate rule matched
REPORT_HEADER = ("row", "kind", "column", "value", "reason")
_KIND_ORDER = {REJECTED: 0, UNRESOLVED: 1, NEAR_MATCH: 2, EMPTY_LINK: 3, DUPLICATE: 4}
_TEXT_TYPES = frozenset({"string", "text", "email", "phone", "url", "choice"})
_INT = re.compile(r"[0-9]{1,18}")
_PUNCT = re.compile(r"[\W_]+")
_SEPARATORS = re.compile(r"[\s_\-]+")

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RowIssue:
    """Something about one cell of one row: a reason it was rejected, or a note."""

    row: int  # the line of the file where the row starts (the header is line 1)
    column: str | None
    field: str | None
    value: str | None
    reason: str
    kind: str = REJECTED

    @property
    def rejects(self) -> bool:
        return self.kind in (REJECTED, UNRESOLVED)

    def format(self) -> str:
        where = f"line {self.row}"
        if self.column is not None:
            where += f", {self.column}" + (f" ({self.field})" if self.field and self.field != self.column else "")
        return f"{where}: {self.reason}"


@dataclass
class ImportResult:
    """What an import did: the ids it created (in file order) and every row it rejected or noted."""

    entity: str
    file: str
    header: list[str]
    rows: int = 0  # data rows read
    ids: list[int] = field(default_factory=list)
    rejected: list[RowIssue] = field(default_factory=list)  # kinds rejected / unresolved
    notes: list[RowIssue] = field(default_factory=list)  # kinds near_match / empty_link
    id_map: dict[int, int] = field(default_factory=dict)  # the file's id column -> new id
    report_path: str | None = None
    cells: dict[int, list[str]] = field(default_factory=dict, repr=False)  # line -> cells, rows with issues

    @property
    def created(self) -> int:
        return len(self.ids)

    @property
    def rejected_rows(self) -> list[int]:
        return sorted({issue.row for issue in self.rejected})

    @property
    def unresolved(self) -> dict[str, dict[str, int]]:
        """column -> link value that matched no record (or several) -> rows."""
        out: dict[str, Counter] = defaultdict(Counter)
        for issue in self.rejected:
            if issue.kind == UNRESOLVED:
                out[issue.column or ""][issue.value or ""] += 1
        return {column: dict(values) for column, values in out.items()}

    @property
    def renumbered(self) -> bool:
        """The new ids differ from the file's ``id`` column (links by id in other files would
        need ``id_maps``)."""
        return any(old != new for old, new in self.id_map.items())

    def count(self, kind: str) -> int:
        return sum(1 for issue in [*self.rejected, *self.notes] if issue.kind == kind)

    def summary(self) -> str:
        text = f"imported {self.created} {self.entity} record{'s' if self.created != 1 else ''}; "
        text += f"{len(self.rejected_rows)} rejected"
        near, empty = self.count(NEAR_MATCH), self.count(EMPTY_LINK)
        if near:
            text += f"; {near} near match{'es' if near != 1 else ''}"
        if empty:
            text += f"; {empty} empty link{'s' if empty != 1 else ''}"
        dupes = self.count(DUPLICATE)
        if dupes:
            text += f"; {dupes} possible duplicate{'s' if dupes != 1 else ''}"
        return text

    def to_dict(self) -> dict:
        return {
            "entity": self.entity,
            "file": self.file,
            "rows": self.rows,
            "created": self.created,
            "ids": self.ids,
            "rejected_rows": self.rejected_rows,
            "issues": [_issue_dict(i) for i in [*self.rejected, *self.notes]],
            "unresolved": self.unresolved,
            "id_map": {str(k): v for k, v in self.id_map.items()},
            "report": self.report_path,
        }

    def write_report(self, path: str | os.PathLike) -> None:
        """The report CSV: row, kind, column, value, reason, then the row's original cells."""
        issues = sorted([*self.rejected, *self.notes], key=lambda i: (i.row, _KIND_ORDER.get(i.kind, 9)))
        with open(path, "w", encoding="utf-8", newline="") as out:
            writer = csv_writer(out)
            writer.writerow([*REPORT_HEADER, *self.header])
            for issue in issues:
                cells = self.cells.get(issue.row, [])
                texts = [issue.column or "", issue.value or "", issue.reason, *cells]
                writer.writerow([issue.row, issue.kind, *map(neutralise, texts)])
        self.report_path = os.fspath(path)


def _issue_dict(issue: RowIssue) -> dict:
    return {
        "row": issue.row,
        "kind": issue.kind,
        "column": issue.column,
        "field": issue.field,
        "value": issue.value,
        "reason": issue.reason,
    }


class ImportRefused(ValidationError):
    """An import wrote nothing because of bad rows: ``issues`` (FieldIssue, ``index`` = line)
    and ``result.rejected`` (RowIssue) list every problem."""

    def __init__(self, message: str, issues: Sequence[FieldIssue], result: ImportResult):
        super().__init__(message, issues)
        self.result = result


# --------------------------------------------------------------------------- reading


def sniff_delimiter(line: str) -> str:
    """``,`` ``;`` or tab, whichever the header line holds most of (outside quotes); ``,`` by default."""
    bare = re.sub(r'"[^"]*"', "", line)
    counts = {d: bare.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


class _Lines:
    """The lines handed to the csv reader, those of the record being read kept (the reader
    reads no further than the record it returns)."""

    def __init__(self, lines):
        self.lines = lines
        self.record: list[str] = []

    def __iter__(self):
        for line in self.lines:
            self.record.append(line)
            yield line

    def taken(self) -> list[str]:
        record, self.record = self.record, []
        return record


def read_csv(source) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """(file name, header, [(line, cells)]) of a path or a text or binary file object.

    Cells are read back as :func:`export_csv` wrote them (``'=1+2`` is ``=1+2``: see
    ``csv_cells.py``). A quoted value whose closing quote is missing (it would swallow the
    rest of the file) is refused, naming the line where it opens."""
    wrapper = None
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            stream = open(name, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"{name}: no such file") from None
        except OSError as exc:
            raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from exc
    else:
        name = str(getattr(source, "name", "<stream>"))
        stream = source
        if isinstance(source.read(0), bytes):
            stream = wrapper = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    reader = None
    try:
        first = stream.readline()
        first = first.removeprefix("\ufeff")
        if not first.strip():
            raise ValidationError(f"{name} is empty: its first line must name the columns")
        delimiter = sniff_delimiter(first)
        lines = _Lines(itertools.chain([first], stream))
        reader = csv.reader(lines, delimiter=delimiter)
        header = [cell.strip() for cell in next(reader)]
        rows: list[tuple[int, list[str]]] = []
        start, last, record = 1, reader.line_num, lines.taken()
        for cells in reader:
            line, last, record = last + 1, reader.line_num, lines.taken()
            start = line
            if any(cell.strip() for cell in cells):
                rows.append((line, [restore(cell) for cell in cells]))
        opened = unterminated_quote(record, delimiter)  # only the last record can run to the end of the file
        if opened is not None:
            raise ValidationError(
                f"{name}:{start + opened}: a quoted value opened on this line is never closed, so the rest of the "
                'file would be read as one cell: add the closing quote (a quote inside a quoted value is written "")'
            )
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{name} is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start}); "
            'save it as UTF-8 ("CSV UTF-8" in spreadsheets)'
        ) from exc
    except csv.Error as exc:
        raise ValidationError(f"{name}, line {reader.line_num if reader else 1}: not valid CSV: {exc}") from exc
    finally:
        if wrapper is not None:
            wrapper.detach()
        elif stream is not source:
            stream.close()
    return name, header, rows


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class _Column:
    index: int
    name: str
    target: str | None  # the field, link, owner, pipeline or stage it fills
    kind: str  # field, link, owner, pipeline, stage, id, ignore, unnamed


def _norm_name(text: str) -> str:
    return " ".join(part for part in _SEPARATORS.split(text.casefold()) if part)


def _members(ent: Entity) -> dict[str, str]:
    members = dict.fromkeys(ent.fields, "field")
    members.update(dict.fromkeys(ent.links, "link"))
    if ent.owner:
        members["owner"] = "owner"
    if ent.has_stages:
        members["pipeline"] = "pipeline"
        members["stage"] = "stage"
    return members


def map_columns(
    ent: Entity,
    header: Sequence[str],
    mapping: Mapping[str, str] | None,
    *,
    import_stages: bool,
    name: str = "the file",
) -> list[_Column]:
    """Which member each column fills; raises ValidationError naming every column it cannot place."""
    members = _members(ent)
    by_caption: dict[str, list[str]] = defaultdict(list)
    for member in members:
        by_caption[_norm_name(member)].append(member)
    for item in [*ent.fields.values(), *ent.links.values()]:
        if item.label:
            by_caption[_norm_name(item.label)].append(item.name)
    mapping = dict(mapping or {})
    problems: list[tuple[str | None, str]] = []
    for column, count in Counter(header).items():
        if count > 1 and column:
            problems.append((column, f"column {column!r} appears {count} times in the header"))
    for column in mapping:
        if column not in header:
            problems.append(
                (column, f"the mapping names column {column!r}, which {name} does not have; columns: {listing(header)}")
            )
    shown = listing(members, 40)
    columns: list[_Column] = []
    filled: dict[str, str] = {}
    for index, column in enumerate(header):
        if column in mapping:
            target = (mapping[column] or "").strip()
            if not target:
                columns.append(_Column(index, column, None, "ignore"))
                continue
            if target != ID_COLUMN and target not in members:
                hint = did_you_mean(target, members)
                problems.append(
                    (
                        column,
                        f"column {column!r} is mapped to {target!r}, which {ent.name} does not have"
                        + (f" ({hint})" if hint else "")
                        + f"; fields: {shown}",
                    )
                )
                continue
        elif not column:
            columns.append(_Column(index, f"column {index + 1}", None, "unnamed"))
            continue
        elif column in members or column == ID_COLUMN:
            target = column
        else:
            found = list(dict.fromkeys(by_caption.get(_norm_name(column), ())))
            if len(found) != 1:
                problems.append((column, _unknown_column(ent, column, found, members, shown)))
                continue
            target = found[0]
        kind = "id" if target == ID_COLUMN else members[target]
        if kind == "field" and (ent.fields[target].derived or ent.fields[target].text_of or ent.fields[target].kind == "file"):
            # computed (a rich_text's plain text too), or a file's id (files are attached, not imported): an
            # export's column, read back as nothing
            columns.append(_Column(index, column, None, "ignore"))
            continue
        if kind == "stage" and not import_stages:
            problems.append(
                (
                    column,
                    f"column {column!r} holds the stage: importing stages needs --with-stages "
                    "(import_stages=True in Python); or map the column to '' to ignore it",
                )
            )
            continue
        if target in filled and filled[target] != column:  # (a repeated column is reported above)
            problems.append((column, f"columns {filled[target]!r} and {column!r} both fill {target!r}"))
            continue
        filled[target] = column
        columns.append(_Column(index, column, target, kind))
    if problems:
        issues = [FieldIssue(ent.name, None, message, column) for column, message in problems]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationError(f"{ent.name}: {name}: {problems[0][1]}{more}", issues)
    return columns


def _unknown_column(ent: Entity, column: str, found: list[str], members, shown: str) -> str:
    if found:
        return f"column {column!r} could fill {' or '.join(repr(f) for f in found)}; map it to one"
    if column in SYSTEM_COLUMNS:
        return f"column {column!r} is set by the system; map it to '' to ignore it"
    if column in ent.inverses:
        inverse = ent.inverses[column]
        return (
            f"column {column!r} is the other side of {inverse.source}.{inverse.link}; import it with {inverse.source}"
        )
    hint = did_you_mean(column, members)
    return (
        f"unknown column {column!r}"
        + (f" ({hint})" if hint else "")
        + f"; {ent.name} fields: {shown}; map the column to a field, or to '' to ignore it"
    )


# --------------------------------------------------------------------------- lookups


def _norm_value(text: str) -> str:
    return " ".join(text.casefold().split())


def _near_value(text: str) -> str:
    return _PUNCT.sub("", text.casefold())


class _Titles:
    """Records (or rows) by title at three levels: exact, normalised, near."""

    def __init__(self) -> None:
        self.levels: tuple[dict, dict, dict] = ({}, {}, {})

    def add(self, title: str, ref: tuple) -> None:
        for level, key in zip(self.levels, (title, _norm_value(title), _near_value(title)), strict=True):
            if key:
                level.setdefault(key, []).append(ref)

    def find(self, value: str, level: int) -> list:
        key = value if level == 0 else _norm_value(value) if level == 1 else _near_value(value)
        return self.levels[level].get(key, [])


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _TargetLookup:
    """The records of one target entity that link values name, looked up in bulk."""

    def __init__(self, crm, target: str):
        self.crm = crm
        self.entity = crm.model.entity(target)
        self.title = self.entity.title
        self.existing: set[int] = set()
        self.exact: dict[str, list] = {}
        self.full: _Titles | None = None

    def load(self, values: set[str], *, by_id: bool) -> None:
        pending = set(values)
        ints = sorted({int(v) for v in values if _INT.fullmatch(v)})
        if by_id and ints:
            for chunk in _chunks(ints, CHUNK):
                self.existing.update(self.crm.titles(self.entity.name, chunk))
            pending = {v for v in pending if not (_INT.fullmatch(v) and int(v) in self.existing)}
        if not pending or self.title is None:
            return
        title_type = self.entity.fields[self.title].type
        if title_type in _TEXT_TYPES:
            where = f"{self.title} in :metacrm_values"
            for chunk in _chunks(sorted(pending), CHUNK):
                for record in self.crm.find(self.entity.name, where, {"metacrm_values": list(chunk)}):
                    text = str(record[self.title])
                    self.exact.setdefault(text, []).append(("id", record["id"], text))
            if all(v in self.exact for v in pending):
                return
        self.full = _Titles()  # some value is not a title as written: read every title once
        for record in self.crm.find(self.entity.name):
            if record[self.title] not in (None, ""):
                text = _plain(record[self.title])
                self.full.add(text, ("id", record["id"], text))

    def candidates(self, value: str, level: int) -> list:
        if self.full is not None:
            return self.full.find(value, level)
        return self.exact.get(value, []) if level == 0 else []


@dataclass
class _FileKeys:
    """The rows of the file itself, for links of the entity to itself."""

    ids: dict[int, int] = field(default_factory=dict)  # source id -> row index
    titles: _Titles = field(default_factory=_Titles)


# --------------------------------------------------------------------------- import


class _Importer:
    def __init__(self, crm, ent: Entity, name, header, rows, columns, *, options: dict):
        self.crm = crm
        self.ent = ent
        self.header = header
        self.rows = rows
        self.columns = columns
        self.by_target = {c.target: c for c in columns if c.target}
        self.skip_invalid: bool = options["skip_invalid"]
        self.import_stages: bool = options["import_stages"] and ent.has_stages
        self.near: bool = options["near_matches"]
        self.id_maps: Mapping[str, Mapping[int, int]] = options["id_maps"] or {}
        self.progress: Progress | None = options["progress"]
        self.automations: bool = options.get("automations", True)
        self.result = ImportResult(ent.name, name, list(header), rows=len(rows))
        self.issues: dict[int, list[RowIssue]] = defaultdict(list)  # row index -> rejections
        self.records: list[dict] = []
        self.deferred: list[dict[str, tuple[list[int], list[int]]]] = []  # link -> (ids, row indexes)
        self.source_ids: dict[int, int] = {}  # row index -> the file's id
        self.lookups: dict[str, _TargetLookup] = {}
        self.polymorphic: dict[str, set[int]] = {}  # entity -> existing ids named by polymorphic cells
        self.file_keys: _FileKeys | None = None
        self._seen_ids: dict[int, int] = {}  # the file's id -> row index
        self._choices: dict[str, dict[str, str | None]] = defaultdict(dict)
        self._folded: dict[str, dict[str, str]] = {}

    # -- recording ------------------------------------------------------------------------
    def reject(self, i: int, column: str | None, member: str | None, value, reason: str, kind=REJECTED) -> None:
        line = self.rows[i][0]
        self.issues[i].append(RowIssue(line, column, member, None if value is None else str(value), reason, kind))

    def note(self, i: int, column: str, member: str, value, reason: str, kind: str) -> None:
        self.result.notes.append(RowIssue(self.rows[i][0], column, member, value, reason, kind))

    def cell(self, i: int, column: _Column) -> str:
        cells = self.rows[i][1]
        return cells[column.index] if column.index < len(cells) else ""

    def column_of(self, member: str | None) -> str | None:
        column = self.by_target.get(member)
        return column.name if column else member

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> ImportResult:
        self.crm.find(self.ent.name, limit=0)  # a MigrationError now, before any work
        self.load_lookups()
        for i in range(len(self.rows)):
            self.build(i)
        self.validate()
        self.check_unique()
        levels = self.order()
        if self.issues and not self.skip_invalid:
            self.rehearse(levels)
            raise self.refusal("nothing was imported")
        created = self.write(levels)
        self.finish(created)
        return self.result

    # -- links ------------------------------------------------------------------------------
    def load_lookups(self) -> None:
        wanted: dict[str, set[str]] = defaultdict(set)
        for column in self.columns:
            if column.kind != "link":
                continue
            link = self.ent.links[column.target]
            if link.polymorphic:
                self.load_polymorphic(link, column)
                continue
            for i in range(len(self.rows)):
                text = self.cell(i, column).strip()
                if text:
                    wanted[link.target].add(text)
                    if link.many:
                        wanted[link.target].update(p.strip() for p in text.split(",") if p.strip())
        for target, values in wanted.items():
            lookup = self.lookups[target] = _TargetLookup(self.crm, target)
            lookup.load(values, by_id=target not in self.id_maps)
        if self.ent.name in wanted:
            self.file_keys = _FileKeys()
            title = self.by_target.get(self.ent.title) if self.ent.title else None
            ids = self.by_target.get(ID_COLUMN)
            for i in range(len(self.rows)):
                if title is not None and (text := self.cell(i, title).strip()):
                    self.file_keys.titles.add(text, ("row", i, f"line {self.rows[i][0]}"))
                if ids is not None and _INT.fullmatch(source := self.cell(i, ids).strip()):
                    self.file_keys.ids.setdefault(int(source), i)

    def load_polymorphic(self, link: Link, column: _Column) -> None:
        """Which ``entity:id`` values of a polymorphic column name existing records."""
        wanted: dict[str, set[int]] = defaultdict(set)
        for i in range(len(self.rows)):
            entity, sep, number = self.cell(i, column).partition(":")
            if sep and entity.strip() in link.targets and _INT.fullmatch(number.strip()):
                wanted[entity.strip()].add(int(number))
        for entity, ids in wanted.items():
            if entity in self.id_maps:
                continue  # translated through the map, so they exist
            found = self.polymorphic.setdefault(entity, set())
            for chunk in _chunks(sorted(ids), CHUNK):
                found.update(self.crm.titles(entity, chunk))

    def find(self, link: Link, value: str) -> tuple[list, int]:
        """The records (``("id", id, title)``) or rows (``("row", index, where)``) a value names,
        and the level it matched at (0 exact, 1 normalised, 2 near)."""
        target = link.target
        rows = self.file_keys if target == self.ent.name else None
        lookup = self.lookups[target]
        if _INT.fullmatch(value):
            number = int(value)
            if rows is not None and number in rows.ids:
                return [("row", rows.ids[number], f"line {self.rows[rows.ids[number]][0]}")], 0
            if target in self.id_maps:
                new = self.id_maps[target].get(number)
                return ([("id", new, value)] if new is not None else []), 0
            if number in lookup.existing:
                return [("id", number, value)], 0
        for level in range(3 if self.near else 2):
            found = lookup.candidates(value, level) + (rows.titles.find(value, level) if rows else [])
            if found:
                return list(dict.fromkeys(found)), level
        return [], -1

    def link_value(self, i: int, column: _Column, text: str, record: dict, deferred: dict) -> None:
        link = self.ent.links[column.target]
        if link.polymorphic:
            entity, sep, number = (part.strip() for part in text.partition(":"))
            if sep and _INT.fullmatch(number) and entity in link.targets:  # else the validator says what is wrong
                if entity in self.id_maps:
                    new = self.id_maps[entity].get(int(number))
                    if new is None:
                        self.reject(
                            i, column.name, link.name, text, f"no {entity} with id {number} in the id map", UNRESOLVED
                        )
                        return
                    text = f"{entity}:{new}"
                elif int(number) not in self.polymorphic.get(entity, ()):
                    self.reject(i, column.name, link.name, text, f"no {entity} with id {int(number)}", UNRESOLVED)
                    return
            record[link.name] = text
            return
        parts = [text]
        if link.many:
            split = [p.strip() for p in text.split(",") if p.strip()]
            whole, level = self.find(link, text) if len(split) > 1 else ([], -1)
            if not (len(whole) == 1 and level < 2):
                parts = split
        ids: list[int] = []
        refs: list[int] = []
        failed = False
        for part in parts:
            found, level = self.find(link, part)
            if len(found) != 1:
                failed = True
                self.reject(i, column.name, link.name, part, self.unresolved_reason(link, part, found), UNRESOLVED)
                continue
            kind, ref, title = found[0]
            if level == 2:  # a record: its title and id; a row of the file: its line ("line N")
                taken = f"{link.target} {title!r} (id {ref})" if kind == "id" else f"the {link.target} of {title}"
                self.note(i, column.name, link.name, part, f"near match: {part!r} taken as {taken}", NEAR_MATCH)
            (ids if kind == "id" else refs).append(ref)
        if failed:
            record[link.name] = [1] if link.many else 1  # the row is rejected; keep the validator quiet
            return
        if refs:
            deferred[link.name] = (ids, refs)
            record[link.name] = ids + [1] * len(refs) if link.many else 1
        else:
            record[link.name] = ids if link.many else ids[0]

    def unresolved_reason(self, link: Link, value: str, found: list) -> str:
        target = link.target
        if found:
            where = ", ".join(f"id {ref}" if kind == "id" else title for kind, ref, title in found[:5])
            more = f", ... ({len(found) - 5} more)" if len(found) > 5 else ""
            return f"{len(found)} {target} records match {value!r} ({where}{more}); give the id"
        if target in self.id_maps and _INT.fullmatch(value):
            return f"no {target} with id {value} in the id map of the {target} import"
        if self.lookups[target].title is None:
            return f"no {target} with id {value!r} ({target} has no title field to look names up)"
        if _INT.fullmatch(value):
            return f"no {target} with id {value} or titled {value!r}"
        return f"no {target} titled {value!r}"

    # -- rows -> records --------------------------------------------------------------------
    def build(self, i: int) -> None:
        line, cells = self.rows[i]
        record: dict[str, Any] = {}
        deferred: dict = {}
        if any(c.strip() for c in cells[len(self.header) :]):
            self.reject(
                i, None, None, None, f"the row has {len(cells)} cells; the header names {len(self.header)} columns"
            )
        for column in self.columns:
            raw = self.cell(i, column)
            text = raw.strip()
            kind = column.kind
            if kind == "ignore":
                continue
            if kind == "unnamed":
                if text:
                    self.reject(i, column.name, None, text, "a value under a column with no name in the header")
                continue
            if kind == "id":
                self.source_id(i, column, text)
                continue
            if not text:
                if kind == "link":
                    link = self.ent.links[column.target]
                    if not link.required or link.many:
                        self.note(
                            i, column.name, link.name, "", f"no {' or '.join(link.targets)} (empty cell)", EMPTY_LINK
                        )
                continue
            if kind == "field":
                record[column.target] = self.choice_value(i, column, raw)
            elif kind == "link":
                self.link_value(i, column, text, record, deferred)
            else:
                record[column.target] = text
        self.records.append(record)
        self.deferred.append(deferred)

    def source_id(self, i: int, column: _Column, text: str) -> None:
        if not text:
            return
        if not _INT.fullmatch(text) or int(text) < 1:
            self.reject(
                i,
                column.name,
                None,
                text,
                f"{text!r} is not a record id: the id column holds the ids of an export; "
                "map the column to a field, or to '' to ignore it",
            )
            return
        number = int(text)
        if number in self._seen_ids:
            self.reject(
                i, column.name, None, text, f"id {number} is on line {self.rows[self._seen_ids[number]][0]} too"
            )
            return
        self._seen_ids[number] = i
        self.source_ids[i] = number

    def choice_value(self, i: int, column: _Column, raw: str) -> str:
        f = self.ent.fields[column.target]
        if not self.near or f.type not in ("choice", "multichoice"):
            return raw
        parts = [raw.strip()] if f.type == "choice" else [p.strip() for p in raw.split(",") if p.strip()]
        if f.type == "multichoice" and self._option(f, raw.strip(), near=False):
            return raw
        fixed = []
        for part in parts:
            option = self._option(f, part, near=False)
            if option is None:
                option = self._option(f, part, near=True)
                if option is not None:
                    self.note(
                        i, column.name, f.name, part, f"near match: {part!r} taken as option {option!r}", NEAR_MATCH
                    )
            fixed.append(option or part)
        return fixed[0] if f.type == "choice" else ",".join(fixed)

    def _option(self, f, text: str, *, near: bool) -> str | None:
        """The option a text names (value or label, any case); with ``near``, the one option
        spelled close to it, or None."""
        folded = self._folded.get(f.name)
        if folded is None:
            folded = self._folded[f.name] = {}
            for option in f.options:
                if option.label:
                    folded.setdefault(_norm_value(option.label), option.value)
            for option in f.options:
                folded[option.value.casefold()] = option.value
        if not near:
            return folded.get(_norm_value(text))
        cache = self._choices[f.name]
        if text not in cache:
            close = difflib.get_close_matches(text.casefold(), list(folded), n=3, cutoff=0.8)
            same = [v for k, v in folded.items() if _near_value(k) == _near_value(text)]
            options = set(same) or {folded[k] for k in close}
            cache[text] = options.pop() if len(options) == 1 else None
        return cache[text]

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        validator = self.crm.validators[self.ent.name]
        self.values: list[dict | None] = []
        for i, record in enumerate(self.records):
            data = {k: v for k, v in record.items() if k != "stage"}
            try:
                values = validator.create(data, index=i)
            except ValidationError as exc:
                for issue in exc.issues:
                    column = self.by_target.get(issue.field)
                    shown = self.cell(i, column).strip() if column else issue.value
                    self.reject(i, self.column_of(issue.field), issue.field, shown, issue.message)
                self.values.append(None)
                if self.ent.has_stages:  # what the row's stage needs too, but for the values already said
                    self.check_stage(i, record, data, said={issue.field for issue in exc.issues})
                continue
            self.values.append(values)
            if self.ent.has_stages:
                self.check_stage(i, record, values)

    def check_stage(self, i: int, record: dict, values: dict, said: set | frozenset = frozenset()) -> None:
        name = values.get("pipeline") or (values.get(self.ent.pipeline_field) if self.ent.pipeline_field else None)
        pipeline = self.ent.pipelines.get(name) or next(iter(self.ent.pipelines.values()))  # as the CRM picks it
        stage = record.get("stage")
        if stage is not None and stage not in pipeline.stages:
            labels = {(s.label or "").casefold(): s.name for s in pipeline.stages.values() if s.label}
            if stage.casefold() not in labels:
                self.reject(
                    i,
                    self.column_of("stage"),
                    "stage",
                    stage,
                    f"{stage!r} is not a stage of pipeline '{pipeline.name}'; stages: "
                    + listing([f"{s.name} ({s.label})" if s.label else s.name for s in pipeline.stages.values()]),
                )
            else:
                stage = labels[stage.casefold()]
        initial = pipeline.stages[pipeline.initial]
        for name in initial.requires:
            if values.get(name) in (None, [], "") and name not in said:
                self.reject(i, self.column_of(name), name, "", f"is required to enter stage '{initial.name}'")
        if stage in pipeline.stages and stage != initial.name:  # placed further: it must fit there
            for name in pipeline.stages[stage].requires:
                if values.get(name) in (None, [], "") and name not in initial.requires and name not in said:
                    self.reject(i, self.column_of(name), name, "", f"is required to be in stage '{stage}'")

    def check_unique(self) -> None:
        keys: list[tuple[str, ...]] = [(f.name,) for f in self.ent.fields.values() if f.unique]
        keys += [tuple(k) for k in self.ent.unique if all(n in self.ent.fields for n in k)]
        alive = [i for i, v in enumerate(self.values) if v is not None and i not in self.issues]
        for key in keys:
            first: dict[tuple, int] = {}
            for i in alive:
                value = tuple(self.values[i].get(n) for n in key)
                if None in value:
                    continue
                if value in first:
                    self.reject(
                        i,
                        self.column_of(key[0]),
                        "+".join(key),
                        self.shown(i, key, value),
                        f"{_show(value)} is already used on line {self.rows[first[value]][0]}",
                    )
                else:
                    first[value] = i
            if len(key) != 1 or not first:
                continue  # composite keys against the database: the runtime's own check
            where = f"{key[0]} in :metacrm_values"
            distinct = [v[0] for v in first]
            for chunk in _chunks(distinct, CHUNK):
                for record in self.crm.find(self.ent.name, where, {"metacrm_values": list(chunk)}):
                    stored = (record[key[0]],)
                    if stored in first:
                        self.reject(
                            first[stored],
                            self.column_of(key[0]),
                            key[0],
                            self.shown(first[stored], key, stored),
                            f"{_show(stored)} is already used by {self.ent.name} {record['id']}",
                        )

    def shown(self, i: int, key: tuple[str, ...], value: tuple) -> str:
        """The cell as written for a one-field key, else the values."""
        column = self.by_target.get(key[0])
        return self.cell(i, column).strip() if len(key) == 1 and column else _show(value)

    def order(self) -> list[list[int]]:
        """Rows in levels: a row linking to another row of the file comes after it."""
        pending = [i for i in range(len(self.rows)) if i not in self.issues]
        placed: set[int] = set()
        levels: list[list[int]] = []
        while pending:
            level, waiting, changed = [], [], False
            for i in pending:
                refs = [(name, r) for name, (_, rs) in self.deferred[i].items() for r in rs]
                bad = [(name, r) for name, r in refs if r in self.issues]
                if bad:
                    name, r = bad[0]
                    self.reject(
                        i,
                        self.column_of(name),
                        name,
                        self.cell(i, self.by_target[name]).strip(),
                        f"links to line {self.rows[r][0]}, which is rejected",
                    )
                    changed = True
                elif all(r in placed for _, r in refs):
                    level.append(i)
                else:
                    waiting.append(i)
            if level:
                levels.append(level)
                placed.update(level)
            elif not changed:  # what is left links in a cycle, or to rows of a cycle
                lines = ", ".join(str(self.rows[i][0]) for i in waiting[:10])
                for i in waiting:
                    name = next(iter(self.deferred[i]))
                    self.reject(
                        i,
                        self.column_of(name),
                        name,
                        self.cell(i, self.by_target[name]).strip(),
                        f"rows link to each other in a cycle (lines {lines})",
                    )
                waiting = []
            pending = waiting
        return levels

    # -- writing ----------------------------------------------------------------------------
    def rehearse(self, levels: list[list[int]]) -> None:
        """A refused import of rows placed in stages entered only under ``when`` conditions:
        write the good rows in a transaction (or savepoint) rolled back at once, so the
        refusal names the rows whose conditions do not hold too (the database reads them)."""
        if not self.import_stages or not any(self.guarded(i) for level in levels for i in level):
            return
        notes, progress, automations = len(self.result.notes), self.progress, self.automations
        self.progress, self.automations = None, False
        try:
            with self.crm._writing() as conn, self.crm._within(conn):
                created: dict[int, int] = {}
                total = sum(len(level) for level in levels)
                for level in levels:
                    self.write_level(level, created, total)
                raise _Rehearsed
        except (_Rehearsed, ImportRefused):
            pass  # rolled back; the rows refused were rejected on the way
        finally:
            del self.result.notes[notes:]  # what a write noted (duplicates) did not happen
            self.progress, self.automations = progress, automations

    def guarded(self, i: int) -> bool:
        """Row ``i`` is placed in a stage whose ways in all have a ``when``."""
        from ..runtime.moves import entry_guards

        stage = self.records[i].get("stage")
        values = self.values[i] or {}
        name = values.get("pipeline") or (values.get(self.ent.pipeline_field) if self.ent.pipeline_field else None)
        pipeline = self.ent.pipelines.get(name) or next(iter(self.ent.pipelines.values()))
        if stage not in pipeline.stages:
            labels = {(s.label or "").casefold(): s.name for s in pipeline.stages.values() if s.label}
            stage = labels.get(str(stage).casefold())
        return stage is not None and bool(entry_guards(pipeline, stage))

    def write(self, levels: list[list[int]]) -> dict[int, int]:
        """One ``create_many`` (one transaction, batched inside the CRM) per level of rows."""
        created: dict[int, int] = {}  # row index -> new id, in creation order
        total = sum(len(level) for level in levels)
        if self.progress:
            self.progress(0, total)
        with self.crm.transaction():  # all levels, or (on a refusal) none of them
            for level in levels:
                self.write_level(level, created, total)
        return created

    def final_record(self, i: int, created: dict[int, int]) -> dict:
        record = dict(self.records[i])
        for name, (ids, refs) in self.deferred[i].items():
            new = [created[r] for r in refs]
            record[name] = ids + new if self.ent.links[name].many else new[0]
        return record

    def write_level(self, level: list[int], created: dict[int, int], total: int) -> None:
        base = len(created)
        rows = []
        for i in level:
            missing = [r for _, refs in self.deferred[i].values() for r in refs if r not in created]
            if missing:  # its row was refused by the CRM (skip_invalid)
                name = next(n for n, (_, refs) in self.deferred[i].items() if missing[0] in refs)
                self.reject(
                    i,
                    self.column_of(name),
                    name,
                    self.cell(i, self.by_target[name]).strip(),
                    f"links to line {self.rows[missing[0]][0]}, which was not imported",
                )
            else:
                rows.append(i)

        def stream(rows: list[int]):
            for n, i in enumerate(rows, 1):
                yield self.final_record(i, created)
                if self.progress and (n % PROGRESS_STEP == 0 or n == len(rows)):
                    self.progress(base + n, total)

        while rows:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DuplicateWarning)
                    out = self.crm.create_many(
                        self.ent.name,
                        stream(rows),
                        import_stages=self.import_stages,
                        automations=self.automations,
                        permission="import",
                    )
                matched = [m for w in caught if isinstance(w.message, DuplicateWarning) for m in w.message.matches]
                for m in matched:  # a `warn` duplicate rule: imported, and reported on its row
                    if 0 <= m.index < len(rows):
                        i = rows[m.index]
                        value = self.records[i].get(m.field)
                        self.note(i, self.column_of(m.field), m.field, value, str(m).split(": ", 1)[-1], DUPLICATE)
            except ValidationError as exc:
                bad = {rows[x.index] for x in exc.issues if x.index is not None and 0 <= x.index < len(rows)}
                for x in exc.issues:
                    if x.index is not None and 0 <= x.index < len(rows):
                        self.reject(rows[x.index], self.column_of(x.field), x.field, x.value, x.message)
                if not self.skip_invalid or not bad:
                    created.clear()  # the import's transaction rolls back every level
                    if not bad:
                        raise
                    raise self.refusal("nothing was imported") from exc
                rows = [i for i in rows if i not in bad]
                continue
            for i, record in zip(rows, out, strict=True):
                created[i] = record["id"]
            return

    # -- the outcome ------------------------------------------------------------------------
    def finish(self, created: dict[int, int]) -> None:
        result = self.result
        result.ids = [created[i] for i in sorted(created)]
        result.id_map = {self.source_ids[i]: created[i] for i in sorted(created) if i in self.source_ids}
        self.collect()

    def collect(self) -> None:
        result = self.result
        result.rejected = [issue for i in sorted(self.issues) for issue in self.issues[i]]
        result.notes.sort(key=lambda n: (n.row, _KIND_ORDER.get(n.kind, 9)))
        lines = {issue.row for issue in [*result.rejected, *result.notes]}
        result.cells = {line: cells for line, cells in self.rows if line in lines}

    def refusal(self, outcome: str) -> ImportRefused:
        self.collect()
        rejected = self.result.rejected
        first = rejected[0]
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        message = f"{self.ent.name}: {first.format()}{more}; {outcome}"
        issues = [FieldIssue(self.ent.name, r.field, r.reason, r.value, r.row) for r in rejected]
        return ImportRefused(message, issues, self.result)


class _Rehearsed(Exception):
    """Rolls back the rehearsal of a refused import (see _Importer.rehearse)."""


def _show(value: tuple) -> str:
    return ", ".join(repr(_plain(v)) for v in value)


def import_csv(
    crm,
    entity: str,
    path_or_file,
    *,
    mapping: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    report_path: str | os.PathLike | None = None,
    import_stages: bool = False,
    near_matches: bool = False,
    id_maps: Mapping[str, Mapping[int, int]] | None = None,
    progress: Progress | None = None,
    automations: bool = True,
) -> ImportResult:
    """Import the rows of a CSV file as records of ``entity`` (see the module docstring).

    Returns an ImportResult; raises ImportRefused (a ValidationError listing every bad row)
    when some row is bad and ``skip_invalid`` is false, having imported nothing. The report at
    ``report_path`` is written either way. ``progress(done, total)`` is called as records go
    to the database.
    """
    ent = crm.model.entity(entity)
    if report_path is not None and (why := unwritable(report_path)) is not None:
        raise ValidationError(f"{ent.name}: cannot write the report: {why}; nothing was imported")
    name, header, rows = read_csv(path_or_file)
    columns = map_columns(ent, header, mapping, import_stages=import_stages, name=name)
    options = {
        "skip_invalid": skip_invalid,
        "import_stages": import_stages,
        "near_matches": near_matches,
        "id_maps": id_maps,
        "progress": progress,
        "automations": automations,
    }
    importer = _Importer(crm, ent, name, header, rows, columns, options=options)
    try:
        result = importer.run()
    except ImportRefused as exc:
        if report_path is not None:
            exc.result.write_report(report_path)
        raise
    if report_path is not None:
        result.write_report(report_path)
    return result


# --------------------------------------------------------------------------- export


def _plain(value) -> str:
    """A stored value as the text import reads back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict) and set(value) == {"entity", "id"}:
        return f"{value['entity']}:{value['id']}"
    if isinstance(value, list | tuple):
        return ",".join(_plain(v) for v in value)
    return str(value)


def _json_text(value) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, default=_plain)


def _number(f: Field) -> Callable[[Any], str]:
    """A number's cell: at its field's scale (a currency amount at its currency's decimals; a
    duration in whole seconds, which import reads back)."""
    from ..model.field_types import at_scale

    return lambda value: _plain(at_scale(f, value))


def export_columns(ent: Entity, names: Sequence[str] | None = None) -> list[tuple[str, Callable[[Any], str]]]:
    """(column, formatter) pairs of an export, in order (``names``: only these, in that order;
    any column of a record may be named)."""
    columns: list[tuple[str, Callable[[Any], str]]] = [(ID_COLUMN, _plain)]
    columns += [
        (f.name, _json_text if f.type == "json" else _number(f) if f.type in NUMERIC_TYPES else _plain)
        for f in ent.fields.values()
    ]
    columns += [(name, _plain) for name in ent.links]
    if ent.owner:
        columns.append(("owner", _plain))
    if ent.multi_pipeline:
        columns.append(("pipeline", _plain))
    if ent.has_stages:
        columns.append(("stage", _plain))
    if names is not None:
        known = dict(columns)
        return [(name, known.get(name, _plain)) for name in names]
    return columns


def _pages(crm, entity: str, where, params, order_by, size: int):
    """Pages of records: by id (keyset) when no order is asked, else by offset."""
    params = dict(params or {})
    if order_by is None:
        if where:  # its errors point into the text given, not into the paging condition around it
            from ..expr import compile_sql

            compile_sql(crm.storage, crm.model.entity(entity).name, where, params)
        after = 0
        condition = "id > :metacrm_after" + (f" and ({where})" if where else "")
        while True:
            page = crm.find(
                entity, condition, {**params, "metacrm_after": after}, order_by="id", limit=size, action="export"
            )
            if page:
                yield page
            if len(page) < size:
                return
            after = page[-1]["id"]
    offset = 0
    while True:
        page = crm.find(entity, where, params or None, order_by=order_by, limit=size, offset=offset, action="export")
        if page:
            yield page
        if len(page) < size:
            return
        offset += size


def export_csv(
    crm,
    entity: str,
    file,
    *,
    where: str | None = None,
    params: Mapping[str, Any] | None = None,
    order_by: str | Sequence[str] | None = None,
    page_size: int = PAGE_SIZE,
    columns: Sequence[str] | None = None,
    transform: Callable[[list[dict]], list[dict]] | None = None,
) -> int:
    """Write the records of ``entity`` (filtered by ``where``, ordered by ``order_by``) as CSV
    to a path or a text (or binary) file; returns how many were written. ``columns``: only
    these columns, in that order; ``transform``: applied to each page of records before it
    is written (e.g. links replaced by their targets' titles)."""
    ent = crm.model.entity(entity)
    names = columns
    columns = export_columns(ent, names)
    wrapper = None
    if isinstance(file, str | os.PathLike):
        out = open(file, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    elif isinstance(file, io.RawIOBase | io.BufferedIOBase):
        out = wrapper = io.TextIOWrapper(file, encoding="utf-8", newline="")
    else:
        out = file
    count = 0
    try:
        pages = _pages(crm, ent.name, where, params, order_by, max(1, int(page_size)))
        first = next(pages, [])  # a bad filter fails before the header is written
        writer = csv_writer(out)
        writer.writerow([name for name, _ in columns])
        numeric = [name in ent.fields and ent.fields[name].type in NUMERIC_TYPES for name, _ in columns]
        cells = list(zip(columns, numeric, strict=True))
        for page in itertools.chain([first], pages):  # no cell a spreadsheet would run as a formula
            if transform is not None:
                page = transform(page)
            writer.writerows(
                [neutralise(fmt(record.get(name)), numeric=num) for (name, fmt), num in cells] for record in page
            )
            count += len(page)
    finally:
        if wrapper is not None:
            wrapper.flush()
            wrapper.detach()
        elif out is not file:
            out.close()
    return count


__all__ = [
    "ImportRefused",
    "ImportResult",
    "RowIssue",
    "export_columns",
    "export_csv",
    "import_csv",
    "map_columns",
    "read_csv",
    "sniff_delimiter",
]
