"""Text folding shared by every comparison that ignores case: ``contains``/``startswith``
filters (in SQL and in Python), fuzzy ``name`` duplicate rules and search on SQLite.

Russian writes ``ё`` and ``е`` interchangeably (``Алёна``/``Алена``, ``ёлка``/``елка``), so
after case folding ``ё`` reads as ``е``. Only comparisons fold: stored values are never
altered (``ё`` stays ``ё`` in the record).
"""

from __future__ import annotations

YO = "ё"
YE = "е"


def fold(text: str) -> str:
    """``text`` case folded (beyond ASCII) with ``ё`` read as ``е``."""
    return text.casefold().replace(YO, YE)


def yo_variants(word: str) -> list[str]:
    """The spellings of a (folded) word a text may hold when ``ё`` and ``е`` are one letter:
    the word with every ``ё`` as ``е``, then the same with ``ё`` at each one ``е`` in turn (a
    Russian word holds at most one ``ё``). A word without either letter is its one spelling."""
    plain = word.replace(YO, YE)
    spellings = [plain]
    for i, letter in enumerate(plain):
        if letter == YE:
            spellings.append(plain[:i] + YO + plain[i + 1 :])
    return spellings


__all__ = ["fold", "yo_variants"]
