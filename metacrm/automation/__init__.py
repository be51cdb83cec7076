"""Automations: what the CRM does by itself, declared in the model's ``automations:``.

Event-driven triggers (``created``, ``updated``, ``deleted``, ``enters``, ``leaves``) are
matched against the journal entries of every write by :func:`automation_reactor`, which
:mod:`metacrm.runtime.react` plugs into the CRM; time-based ones (``overdue``, ``sla``,
``at``, ``before``) are fired by ``crm.tick()`` / ``metacrm tick`` (:mod:`.tick`).

Semantics, in short (docs/model.md has the reference):

- ``updated: true`` fires on any change of a field or link (link, unlink and merge
  included); ``updated: [names]`` when one of them changed. ``enters`` / ``leaves`` fire on
  moves (``crm.move``), not on creation or an import's placement.
- ``if:`` is evaluated by the database on the record as it is after the write (one query
  per automation and batch); a deleted record's condition is tested on its last values.
- Actions run in order, in the triggering transaction, as the system user (permissions do
  not apply; stage guards and validation do). The journal shows who triggered them:
  ``alice (automation contract_review)``. A failing action raises
  :class:`metacrm.AutomationError` (automation, action number, cause) and the whole
  operation is rolled back.
- ``create``'s owner: ``assign: {role: R}`` -> the first user with role R by login;
  ``{owner: true}`` -> the triggering record's owner; ``{user: L}`` -> L; without
  ``assign`` -> the user who triggered it. When nobody fits, the record is created without
  an owner and a note in the triggering record's journal says so.
- ``notify`` writes one ``metacrm_outbox`` row per recipient (``metacrm deliver`` sends them).
  A recipient that resolves to nothing (an owner without an e-mail) is skipped with a note
  in the record's journal; the operation goes on.
- Chains: the actions' writes are reacted to in turn. A chain deeper than
  ``METACRM_AUTOMATION_DEPTH`` (default 8) stops with an AutomationError naming it; an
  automation re-triggered by the same event on the same record within its own chain (an
  update action firing its own ``updated``) is not fired again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..model.metamodel import Model
from .compiled import Compiled, compile_model, compiled_for

DEFAULT_DEPTH = 8  # how deep a chain of automations may go (METACRM_AUTOMATION_DEPTH)


def automation_reactor(model: Model):
    """The reactor running the model's event-driven automations after each write, or None
    when the model has none (a write then costs nothing)."""
    compiled = compiled_for(model)
    if not compiled.has_events:
        return None

    from .actions import Firing, fire

    def react(crm, conn, entries: Sequence[Mapping]) -> None:
        firings = []
        for entry in entries:
            for rule, event in compiled.match(entry):
                old = None
                if event == "deleted" and entry["action"] == "delete":  # an archived record is still there
                    old = {k: v[0] for k, v in (entry.get("changes") or {}).items()}
                    old["id"] = entry["record_id"]
                firings.append(Firing(rule, entry["entity"], entry["record_id"], event, old))
        if firings:
            fire(crm, conn, compiled, firings)

    react.automation = True  # type: ignore[attr-defined]  # left out by create_many(..., automations=False)
    return react


__all__ = ["DEFAULT_DEPTH", "Compiled", "automation_reactor", "compile_model"]
