"""The ``created_by`` / ``updated_by`` system columns (docs/sysfields.md) on a database made by
an earlier metacrm: its entity tables lack them, and a migration adds them (nullable: the
records already there were made by nobody the database remembers). Until then the CRM refuses
to work on it (:func:`missing_audit_columns`), as it does for a model that changed."""

from __future__ import annotations

from ..runtime.earlier import AUDIT_COLUMNS, missing_audit_columns
from .context import SAFE, Ctx
from .members import add_columns


def audit_columns(ctx: Ctx, old_table: str, new_table: str) -> list[str]:
    """The audit columns the live table has (for the column map); a step adds the others."""
    if not ctx.live_has_table(old_table):
        return list(AUDIT_COLUMNS)
    live = ctx.live_columns(old_table)
    have = [c for c in AUDIT_COLUMNS if c in live]
    missing = [ctx.sn.table(new_table).c[c] for c in AUDIT_COLUMNS if c not in live]
    if missing:
        step = ctx.step(
            "add_system_columns",
            new_table,
            None,
            SAFE,
            f"add columns {', '.join(c.name for c in missing)} to {new_table} (who created and last changed each "
            "record; empty for the records already there)",
        )
        add_columns(ctx, step, new_table, missing)
        step.measure = ctx.count_rows(old_table)
    return have


__all__ = ["AUDIT_COLUMNS", "audit_columns", "missing_audit_columns"]
