"""What a migration plan is made of: typed steps, each classed, counted, with its SQL.

A :class:`Step` is one model-level change (add a field, rename a stage, keep a removed
column...). It carries what the user reads (kind, entity, target, class, description, the
number of records it touches, the SQL) and, privately, the actions that do it: callables run
against alembic's ``Operations`` in *phases*, so that every table rename happens before any
column rename, every new table before any new column, and so on (see ``Phase``).

A :class:`Plan` is the list of steps (it *is* a list, so an empty plan is ``[]``) plus the two
model versions, the dialect and the verdict: ``plan.refusals`` names every step that stops the
migration, ``plan.statements`` is the SQL in execution order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SAFE = "safe"
NEEDS_DATA = "needs data"
DESTRUCTIVE = "destructive"
CLASSES = (SAFE, NEEDS_DATA, DESTRUCTIVE)


class Phase:
    """The order in which the actions of all steps run (then step order, then sub-order)."""

    RENAME_TABLE = 10
    RENAME_COLUMN = 20
    CREATE = 30
    ADD_COLUMN = 40
    DATA = 50
    DROP_INDEX = 55
    ALTER = 60  # PostgreSQL: ALTER in place; SQLite: one table rebuild per table (batch mode)
    INDEX = 75
    DROP = 80
    DERIVED = 85  # recompute_derived steps: run by apply.fill_derived once the others are done
    RECORD = 90


@dataclass(eq=False)
class Contribution:
    """A change SQLite cannot make with ALTER TABLE: done in place on PostgreSQL, gathered
    into one rebuild of the table on SQLite. ``run(batch, ex)`` receives alembic's batch
    operations (or an equivalent bound to the table on PostgreSQL)."""

    table: str  # the table's name when the ALTER phase runs (the new name)
    old_table: str | None  # its name before the migration (for counting), None if new
    why: str
    run: Callable[[Any, Any], None]
    order: int = 2  # inside the ALTER phase: 0 drop constraints, 1 drop columns, 2 alter, 3 add


@dataclass(eq=False)
class Step:
    kind: str
    entity: str | None
    target: str | None
    klass: str
    description: str
    count: int | None = None
    sql: list[str] = field(default_factory=list)
    refusal: str | None = None
    examples: list[Any] = field(default_factory=list)
    # -- private: how to do it and how to measure it --------------------------------------------
    actions: list[tuple[tuple[int, int], Callable[..., Any]]] = field(default_factory=list, repr=False)
    contributions: list[Contribution] = field(default_factory=list, repr=False)
    measure: Callable[..., Any] | None = field(default=None, repr=False)  # conn -> None; sets count/refusal
    informational: bool = field(default=False, repr=False)  # the measure only counts: skipped when applying

    @property
    def phase(self) -> int:
        """Where the step stands in execution order (its first action's phase)."""
        if self.kind == "record_model":
            return 1000
        if self.kind == "recompute_derived":
            return Phase.DERIVED
        if self.actions:
            return min(key[0] for key, _ in self.actions)
        return Phase.ALTER if self.contributions else Phase.DATA

    @property
    def where(self) -> str:
        """``entity.target`` (or what there is of it) to name the step in messages."""
        return ".".join(part for part in (self.entity, self.target) if part) or self.kind

    def act(self, phase: int, fn: Callable, sub: int = 0) -> Step:
        self.actions.append(((phase, sub), fn))
        return self

    def contribute(self, table: str, old_table: str | None, why: str, run: Callable, order: int = 2) -> Step:
        self.contributions.append(Contribution(table, old_table, why, run, order))
        return self

    def refused(self, allow_data_loss: bool) -> str | None:
        """Why this step stops the migration (None when it may run)."""
        if self.refusal:
            return self.refusal
        if self.klass == DESTRUCTIVE and not allow_data_loss:
            return f"destructive: {self.description} (pass --allow-data-loss to apply it)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity": self.entity,
            "target": self.target,
            "class": self.klass,
            "description": self.description,
            "count": self.count,
            "refusal": self.refusal,
            "examples": list(self.examples),
            "sql": list(self.sql),
        }


class Plan(list[Step]):
    """The steps of a migration (a list of :class:`Step`) and what it goes from and to."""

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        model: str = "",
        old_sha256: str | None = None,
        new_sha256: str = "",
        dialect: str = "",
        allow_data_loss: bool = False,
        counted: bool = False,
    ) -> None:
        super().__init__(steps)
        self.model = model
        self.old_sha256 = old_sha256
        self.new_sha256 = new_sha256
        self.dialect = dialect
        self.allow_data_loss = allow_data_loss
        self.counted = counted

    def __repr__(self) -> str:
        return (
            f"<Plan {self.model} {_short(self.old_sha256) or 'new database'} -> {_short(self.new_sha256)}: "
            f"{len(self)} steps>"
        )

    @property
    def refusals(self) -> list[str]:
        """One line per step that stops the migration: ``entity.target: reason``."""
        out = []
        for step in self:
            reason = step.refused(self.allow_data_loss)
            if reason:
                out.append(f"{step.where}: {reason}")
        return out

    @property
    def statements(self) -> list[str]:
        """Every SQL statement of the plan, in execution order."""
        ordered = getattr(self, "ordered_sql", None)
        if ordered is None:
            return [sql for step in self for sql in step.sql]
        last = ("recompute_derived", "record_model")  # run after the actions, in this order
        return [*ordered, *[sql for step in self if step.kind in last for sql in step.sql]]

    def reason(self) -> str:
        """The one-line reason a refused plan gives (empty when nothing is refused)."""
        refusals = self.refusals
        if not refusals:
            return ""
        head = f"migration refused ({len(refusals)} step{'s' if len(refusals) > 1 else ''}): "
        return head + "; ".join(refusals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "from": self.old_sha256,
            "to": self.new_sha256,
            "dialect": self.dialect,
            "allow_data_loss": self.allow_data_loss,
            "counted": self.counted,
            "refused": self.refusals,
            "steps": [step.to_dict() for step in self],
        }

    def format(self, *, counts: bool = True, sql: bool = False) -> str:
        """The plan as text: a header, one line per step, the refusals, then the SQL."""
        head = f"plan for {self.model}: {_short(self.old_sha256) or 'new database'} -> {_short(self.new_sha256)}"
        lines = [head + (f" ({self.dialect})" if self.dialect else "")]
        if not self:
            lines.append("nothing to do: the database holds this model")
            return "\n".join(lines)
        rows = [["#", "class", "change", "entity", "target", *(["rows"] if counts else []), "description"]]
        for number, step in enumerate(self, 1):
            count = "" if step.count is None else str(step.count)
            mark = "  REFUSED" if step.refused(self.allow_data_loss) else ""
            rows.append(
                [
                    str(number),
                    step.klass,
                    step.kind.replace("_", " "),
                    step.entity or "",
                    step.target or "",
                    *([count] if counts else []),
                    step.description + mark,
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [
                cell.rjust(w) if i in (0,) or (counts and i == 5) else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=False))
            ]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        refusals = self.refusals
        if refusals:
            lines.append("")
            lines.append("refused:")
            lines += [f"  - {r}" for r in refusals]
        if sql:
            lines.append("")
            for number, step in enumerate(self, 1):
                if step.sql:
                    where = step.where if (step.entity or step.target) else ""
                    lines.append(f"-- {number}. {step.kind.replace('_', ' ')} {where}".rstrip())
                    lines += [s.rstrip().rstrip(";") + ";" for s in step.sql]
        return "\n".join(lines)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else ""
