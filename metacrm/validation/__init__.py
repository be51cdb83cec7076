"""Record validation: metamodel -> per-entity validators (create / patch), built once per model.

::

    validators = build_validators(model)        # {entity: RecordValidator}, cached by model.sha256
    validators["deal"].create({"title": "Поставка", "amount": "120 000,50", "client": "3"})
    validators["deal"].patch({"amount": 5})     # only the keys given
    validators["deal"].create_many(rows)        # one ValidationError naming every bad row

Values may be Python values (the API) or strings (the command line, CSV files); ``""`` means no
value. Errors are ``metacrm.ValidationError`` with one ``FieldIssue`` per bad value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from .records import SET_BY_SYSTEM, RecordValidator, build_validators
    from .values import Invalid, field_coercer

# imported on first use: metacrm.validation.values is read by commands that never validate a
# record, and importing the package must not build anything for them
__getattr__ = lazy_attributes(
    __name__,
    {
        "SET_BY_SYSTEM": "records",
        "RecordValidator": "records",
        "build_validators": "records",
        "Invalid": "values",
        "field_coercer": "values",
    },
)

__all__ = ["Invalid", "RecordValidator", "SET_BY_SYSTEM", "build_validators", "field_coercer"]
