"""A bounded retry of an operation that failed on a transient database failure.

``crm.retrying(fn, *args, **kw)`` calls ``fn(*args, **kw)``; when it raises a *retryable*
error (``error.retryable``: a ``ConflictError`` from a deadlock, a serialization failure or a
lock wait that ran out, or ``ConnectionLost``), it waits and calls it again, up to
``attempts`` calls in all, then raises the last error. Any other error (a validation, a
transition refused, an optimistic-locking conflict: the caller must look again first)
propagates at once. The wait doubles from ``delay`` up to ``max_delay`` seconds, each one cut
by a random factor (0.5 to 1) so that two writers that collided do not collide again.

Only for idempotent operations, or operations whose failure wrote nothing: a transient failure
rolls the whole transaction back, so calling again is safe for one metacrm operation (or a
function running one ``crm.transaction()``), but not for a function with side effects outside
the database. Each retry is logged as a warning on the ``metacrm.retry`` logger.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import MetaCRMError

T = TypeVar("T")

log = logging.getLogger("metacrm.retry")


def retrying(
    fn: Callable[..., T],
    *args: Any,
    attempts: int = 3,
    delay: float = 0.05,
    max_delay: float = 1.0,
    **kw: Any,
) -> T:
    """``fn(*args, **kw)``, called again (up to ``attempts`` calls in all) while it raises a
    retryable metacrm error; see the module's docstring."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be a whole number >= 1, not {attempts!r}")
    for name, value in (("delay", delay), ("max_delay", max_delay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
            raise ValueError(f"{name} must be a number of seconds from 0 to 3600, not {value!r}")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kw)
        except Exception as exc:
            if not (isinstance(exc, MetaCRMError) and exc.retryable) or attempt == attempts:
                raise
            wait = min(max_delay, delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning(
                "%s failed (attempt %d of %d): %s: %s; retrying in %.3f s",
                name,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
