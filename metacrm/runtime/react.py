"""What the CRM does by itself after a write: the reactions to the journal's entries.

Every write of the CRM facade (create, update, delete, link, unlink, move, merge) ends by
journaling what it changed, in its transaction. :meth:`CRM._log` writes those entries and
then hands them to the model's *reactors*, in order, on the same connection and inside the
same transaction:

0. the task rules (``metacrm.runtime.tasks``: no closing a blocked task, no cycle of
   ``blocked_by``), which only refuse;
1. derived values (computed and roll-up fields, ``metacrm.runtime.derived``), so that
   what follows sees them correct;
2. automations (``metacrm.automation``): triggers matched against the entries, actions run.

A reactor is a callable ``reactor(crm, conn, entries)``; it may call the CRM's own methods:
while reactors run, ``crm._tx`` is the triggering connection (for this thread or task only:
see ``CRM._within``), so those calls join the transaction (each as a savepoint) and their own
entries are reacted to in turn. Whatever a reactor raises rolls the whole operation back. A
model without derived fields or automations has no reactors: a write then costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..model.metamodel import Model

Reactor = Callable[[Any, Any, Sequence[Mapping]], None]


def build_reactors(model: Model) -> tuple[Reactor, ...]:
    """The reactors of a model, in the order they run (compiled once per CRM): task rules
    first (a refused task write goes no further), then derived values, then automations.
    Each factory returns None when the model gives it nothing to do."""
    from ..automation import automation_reactor
    from .derived import derived_reactor
    from .tasks import task_reactor

    made = (factory(model) for factory in (task_reactor, derived_reactor, automation_reactor))
    return tuple(reactor for reactor in made if reactor is not None)
