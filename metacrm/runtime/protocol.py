"""What the CRM facade's mixins (ReadsMixin, StagesMixin, UsersMixin, ReportsMixin,
SearchMixin, TasksMixin, DeliveryMixin, FormsMixin) use of the CRM object they are mixed into, as a
Protocol: type checkers read each mixin as a subclass of :class:`CRMHost`, so ``self.engine``,
``self.model``, ``self._reading()``... are known in the mixins. At run time the mixins derive
from ``object`` (see ``Host`` below) and :class:`metacrm.runtime.crm.CRM` provides it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from contextlib import AbstractContextManager

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql import Select

    from ..model.metamodel import Entity, Model
    from ..storage.tables import Storage
    from ..types import AllowedMove, JournalEntry, Record, TimelineEntry, UserInfo
    from ..validation.records import RecordValidator
    from .access import Actor


class CRMHost(Protocol):
    """The attributes and helpers of metacrm.runtime.crm.CRM that its mixins rely on."""

    model: Model
    engine: Engine
    user: str | None
    storage: Storage
    _roles: frozenset[str] | None
    _team: str | None
    _owns_engine: bool
    _by: str | None
    validators: Mapping[str, RecordValidator]

    @property
    def actor(self) -> Actor: ...

    @property
    def _tx(self) -> Connection | None: ...

    def _ready(self) -> None: ...

    def _entity(self, name: str) -> Entity: ...

    def _reading(self) -> AbstractContextManager[Connection]: ...

    def _writing(self, before: Callable[[Connection], object] | None = None) -> AbstractContextManager[Connection]: ...

    def _get_row(
        self, conn: Connection, entity: Entity, record_id: Any, action: str = "read", query: Any = None, *, archived: bool = False
    ) -> Mapping[str, Any]: ...

    def _log(
        self, conn: Connection, entries: Sequence[Mapping[str, Any]], extra: Sequence[Mapping[str, Any]] = ()
    ) -> None: ...

    def _derived_values(self, conn: Connection, ent: Entity, records: Sequence[Record]) -> None: ...

    def _check_rules(
        self,
        conn: Connection,
        ent: Entity,
        ids: Sequence[int],
        *,
        first: int | None = None,
        created: bool = False,
        row: Mapping[str, Any] | None = None,
        touched: Sequence[str] = (),
    ) -> None: ...

    def _moves_of(self, conn: Connection, ent: Entity, row: Mapping[str, Any]) -> list[AllowedMove]: ...

    def _timeline_of(self, conn: Connection, ent: Entity, rid: int, limit: int) -> list[TimelineEntry]: ...

    def _select(
        self,
        ent: Entity,
        where: str | None,
        params: Mapping[str, Any] | None,
        *,
        action: str = "read",
        ids: Iterable[int] | None = None,
        archived: str = "exclude",
    ) -> Select[Any]: ...

    def _within(self, conn: Connection) -> AbstractContextManager[Connection]: ...

    def transaction(self) -> AbstractContextManager[Self]: ...

    def user_info(self, login: str) -> UserInfo: ...

    def as_user(self, login: str | None) -> Self: ...

    def update(
        self, entity: str, record_id: int, data: Mapping[str, Any], *, version: int | None = None, _action: str = ...
    ) -> Record: ...

    def disabled_users(self) -> set[str]: ...

    def create(self, entity: str, data: Mapping[str, Any]) -> Record: ...

    def note(self, entity: str, record_id: int, text: str, *, kind: str = "note") -> JournalEntry: ...


if TYPE_CHECKING:
    Host = CRMHost
else:
    Host = object  # the mixins' run-time base: CRM itself holds what CRMHost describes

__all__ = ["CRMHost", "Host"]
