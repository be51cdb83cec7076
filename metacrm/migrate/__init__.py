"""Schema migrations: from the model a database records to the model being loaded.

- ``plan_migration(old, new, conn=None)``: the typed, classed, counted steps and their SQL;
- ``migrate_database(engine, model, dry_run=..., allow_data_loss=...)``: plan and apply under
  the migration lock, in one transaction, recording the new model (``CRM.migrate`` calls it);
- ``diff_files(old_path, new_path)``: the plan between two model files (``metacrm diff``).

See ``docs/migrations.md`` for every change kind and its plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from .apply import apply_plan, migrate_database, plan_for_database
    from .plan import diff_files, plan_migration
    from .steps import DESTRUCTIVE, NEEDS_DATA, SAFE, Plan, Step

# imported on first use: the runtime reads metacrm.migrate.ids on every command, which must
# not pull in the planner and the executor
_LAZY = {
    "apply_plan": "apply",
    "migrate_database": "apply",
    "plan_for_database": "apply",
    "diff_files": "plan",
    "plan_migration": "plan",
    "DESTRUCTIVE": "steps",
    "NEEDS_DATA": "steps",
    "SAFE": "steps",
    "Plan": "steps",
    "Step": "steps",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "DESTRUCTIVE",
    "NEEDS_DATA",
    "SAFE",
    "Plan",
    "Step",
    "apply_plan",
    "diff_files",
    "migrate_database",
    "plan_for_database",
    "plan_migration",
]
