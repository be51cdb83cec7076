"""'Did you mean ...?' hints for misspelled names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    if not isinstance(name, str):
        return None
    pool = [c for c in candidates if isinstance(c, str)]
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f"did you mean '{close[0]}'?" if close else None


def listing(names: Iterable[str], limit: int = 20) -> str:
    """'a, b, c' (cut after ``limit`` names), or 'none'."""
    names = list(names)
    if not names:
        return "none"
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
