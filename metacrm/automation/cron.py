"""``at:`` schedules: strict 5-field cron (``minute hour day month weekday``), read in the
model's ``timezone:`` (UTC by default; ``0 9 * * *`` is 09:00 local time, daylight saving
included), computed with croniter; the moments returned are in UTC."""

from __future__ import annotations

import datetime as dt

FIELDS = ("minute", "hour", "day", "month", "weekday")
_SECOND = dt.timedelta(seconds=1)


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a 5-field cron expression (None: it is one)."""
    parts = expr.split()
    if len(parts) != 5:
        return f"'{expr}' is not a cron expression: it needs 5 fields ({' '.join(FIELDS)}), not {len(parts)}"
    from croniter import croniter

    if not croniter.is_valid(" ".join(parts)):
        return f"'{expr}' is not a valid cron expression ({' '.join(FIELDS)}; e.g. '0 9 * * 1')"
    return None


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _start(moment: dt.datetime, zone: str | None) -> dt.datetime:
    """``moment`` as local time of ``zone``: croniter reads the schedule in the start's zone."""
    from ..dates import local

    return local(_aware(moment), zone)


def occurrences(
    expr: str, after: dt.datetime | None, now: dt.datetime, *, cap: int, zone: str | None = None
) -> list[dt.datetime]:
    """The scheduled minutes in ``(after, now]``, oldest first, at most the ``cap`` latest;
    with no ``after`` only the latest one at or before ``now`` (history is not replayed).
    The schedule is read in ``zone`` (UTC when None)."""
    from croniter import croniter

    now = _aware(now)
    it = croniter(expr, _start(now.replace(second=0, microsecond=0) + _SECOND, zone))
    out: list[dt.datetime] = []
    while len(out) < (cap if after is not None else 1):
        moment = _aware(it.get_prev(dt.datetime))
        if after is not None and moment <= _aware(after):
            break
        out.append(moment)
    return out[::-1]


def first_at_or_after(expr: str, moment: dt.datetime, *, zone: str | None = None) -> dt.datetime:
    """The first scheduled minute at or after ``moment`` (the schedule read in ``zone``)."""
    from croniter import croniter

    moment = _aware(moment)
    return _aware(croniter(expr, _start(moment - _SECOND, zone)).get_next(dt.datetime))
