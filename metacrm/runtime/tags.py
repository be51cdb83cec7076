"""``crm.tags(entity)``: the vocabulary of an entity's ``tags`` field (docs/types.md).

Read from the field's value index (storage/valueindex.py) in one GROUP BY: the tags the records
the acting user may read carry (archived records left out), each with how many records carry
it, most used first.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..errors import ValidationError
from ..model.suggest import did_you_mean, listing
from ..storage.valueindex import index_table
from ..types import TagCount
from .access import row_clause
from .protocol import Host


class TagsMixin(Host):
    def tags(self, entity: str, field: str | None = None) -> list[TagCount]:
        """The tags in use on ``entity``'s records: ``[{"tag": "vip", "count": 3}, ...]``,
        most used first, then by tag. ``field`` names the tags field when the entity has
        several. ValidationError when it has none (or ``field`` is not one)."""
        self._ready()
        ent = self.model.entity(entity)
        names = [f.name for f in ent.fields.values() if f.type == "tags"]
        if field is None:
            if len(names) != 1:
                why = "no tags field" if not names else f"several tags fields ({listing(names)}): name one"
                raise ValidationError(f"{ent.name} has {why}")
            field = names[0]
        elif field not in names:
            hint = did_you_mean(field, names)
            raise ValidationError(
                f"{ent.name}.{field} is not a tags field; tags fields: {listing(names) if names else 'none'}"
                + (f" ({hint})" if hint else "")
            )
        table, index = self.storage.table(ent.name), index_table(ent.name, field)
        count = func.count().label("count")
        query = (
            select(index.c.value.label("tag"), count)
            .select_from(index.join(table, table.c.id == index.c.record_id))
            .group_by(index.c.value)
            .order_by(count.desc(), index.c.value)
        )
        clause = row_clause(self.storage, ent, self.actor)
        if clause is not None:
            query = query.where(clause)
        with self._reading() as conn:
            return [{"tag": row.tag, "count": int(row.count)} for row in conn.execute(query)]


__all__ = ["TagsMixin"]
