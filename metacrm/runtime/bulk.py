"""Helpers of ``crm.create_many``: the collector's pause around a bulk write, the switch that
keeps automations quiet for one call, and the list of every bad record of a batch.

Every record of a batch is checked, each check on the records that passed the ones before
(values, initial requires, owners, links, unique values, duplicate rules): a batch with a bad
amount in record 1 and a client that does not exist in record 2 reports both. The checks work
on the good records only, so their issues are numbered by position among them; ``Issues``
puts each back at the record's index in the batch.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace

from ..errors import FieldIssue, ValidationError

# set while a create_many(..., automations=False) runs (this thread or task only): the
# automation reactor is left out of every write the call makes, derived values still run
QUIET: ContextVar[bool] = ContextVar("metacrm_no_automations", default=False)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for the block (bulk writes allocate many small
    objects and no cycles: the collector's passes cost about a fifth of the time), and
    enabled again after it only if it was enabled before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def firing(on: bool) -> Iterator[None]:
    """``on=False``: the model's automations do not fire for the writes of the block."""
    if on:
        yield
        return
    token = QUIET.set(True)
    try:
        yield
    finally:
        QUIET.reset(token)


class Misplaced(ValidationError):
    """Imported records that do not fit the stage they were placed in (``issues`` by position)."""


class Issues:
    """The issues of one batch, by the record's index in the batch (see the module docstring)."""

    def __init__(self, issues: list[FieldIssue] | None = None) -> None:
        self.items: list[FieldIssue] = list(issues or ())

    @property
    def bad(self) -> set[int | None]:
        return {issue.index for issue in self.items}

    def collect(self, positions: list[int], check: Callable[[], object]) -> None:
        """Run ``check`` (a check over the good records, which are at ``positions`` in the
        batch); keep what it refuses, renumbered to the batch."""
        try:
            check()
        except ValidationError as exc:
            for issue in exc.issues:
                index = issue.index
                at = positions[index] if index is not None and 0 <= index < len(positions) else index
                self.items.append(replace(issue, index=at))

    def sorted(self) -> list[FieldIssue]:
        return sorted(self.items, key=lambda issue: -1 if issue.index is None else issue.index)
