"""Blocking for fuzzy ``name`` duplicate rules: compare a name only with the names that share
a *block key* with it, instead of with every stored name (30,000 names: 450 million pairs).

A name's keys come from its words after normalising: casefolded (the rule's key already is),
split on anything but letters and digits, legal forms dropped (ООО, ИП, LLC, GmbH...; a name
made only of them keeps them). Each remaining word gives its first three characters and the
three after its first, its last three and the three before its last (so that an edit of its
first or last character leaves a key in common); a word of six characters or fewer also its
first two and its last two, and one of three or fewer also its first letter. Two names are
compared (with the rule's scorer, unchanged: rapidfuzz token sort ratio) when they share a
key, so the scores and the threshold mean what they meant before. Below a threshold of 85 two
names can match on little more than a shared legal form ('ltd фораго' and 'ltd рорага' score
80): there the legal forms are keys too (bigger blocks, slower); below 75 every pair is compared,
as before blocking.

What blocking can miss: two names above the threshold that share no key: every word of one
differs from every word of the other both near its start (an edit at its second or third
character) and near its end (at its second- or third-last). One name edited once is always
found; two variants of one name are missed only when one was edited near the start and the
other near the end of each word ('рвмашка' and 'ромашпа', which score 71: under most
thresholds anyway). Names differing only in their legal form ('ООО Ромашка', 'Ромашка')
share keys (they are compared, as before).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

LEGAL_FORMS = frozenset(
    """
    ооо оао зао пао нао ао ип чп тоо одо нко ано пк гк тд гуп муп фгуп ук
    llc ltd inc corp co gmbh ag plc sa sas sarl srl spa bv nv oy ab as kg llp lp pte pty limited company
    """.split()
)
_WORD = re.compile(r"[^\W_]+")


def block_keys(name: str, *, forms: bool = False) -> set[str]:
    """The block keys of a name (already casefolded and whitespace-normalised); with
    ``forms``, its legal forms are keys too."""
    words = _WORD.findall(name)
    core = [w for w in words if w not in LEGAL_FORMS] or words
    keys: set[str] = {"=" + w for w in words if w in LEGAL_FORMS} if forms else set()
    for word in core:
        keys.add("<" + word[:3])
        keys.add(">" + word[-3:])
        if len(word) > 3:  # the same past the first or before the last character: a typo there
            keys.add("<" + word[1:4])
            keys.add(">" + word[-4:-1])
        if len(word) <= 6:
            keys.add("<<" + word[:2])
            keys.add(">>" + word[-2:])
        if len(word) <= 3:
            keys.add("<<<" + word[:1])
    return keys or {"="}  # no letters or digits: compared with the other such names


MIN_BLOCKED = 75  # below this threshold blocking would miss too much: every pair is compared
FORMS_BELOW = 85  # below this threshold names sharing a legal form are compared too
_ROWS = 1024  # rows of one score matrix (rapidfuzz cdist): bounded memory for big blocks


def sort_tokens(name: str) -> str:
    """The form token sort ratio compares: words sorted, joined by one space. Sorted once per
    name here, the scorer is then plain ``fuzz.ratio`` (the same scores, checked in
    tests/test_duplicates_scale.py) instead of sorting both names for every pair."""
    return " ".join(sorted(name.split()))


class Blocks:
    """Names by block key, in the order they were added (ids ascending when added so), for one
    rule's ``threshold``; below MIN_BLOCKED all names share one block (all pairs, as before)."""

    def __init__(self, threshold: float, items: Iterable[tuple[object, str]] = ()):
        self.threshold = threshold
        self.blocks: dict[str, tuple[list, list[str]]] = {}
        for rid, name in items:
            self.add(rid, name)

    def _keys(self, name: str) -> set[str]:
        if self.threshold < MIN_BLOCKED:
            return {"*"}
        return block_keys(name, forms=self.threshold < FORMS_BELOW)

    def add(self, rid, name: str) -> None:
        sorted_name = sort_tokens(name)
        for key in self._keys(name):
            ids, names = self.blocks.setdefault(key, ([], []))
            ids.append(rid)
            names.append(sorted_name)

    def best(self, name: str):
        """The id of the most similar name at or above the threshold (the first added among
        equals, as a scan of every name in order would choose), or None."""
        from rapidfuzz import fuzz, process  # imported when a name is first compared

        query = sort_tokens(name)
        found = None  # (score, id)
        for key in self._keys(name):
            block = self.blocks.get(key)
            if block is None:
                continue
            ids, names = block
            hit = process.extractOne(query, names, scorer=fuzz.ratio, score_cutoff=self.threshold)
            if hit is not None:
                score, rid = hit[1], ids[hit[2]]
                if found is None or score > found[0] or (score == found[0] and rid < found[1]):
                    found = (score, rid)
        return None if found is None else found[1]

    def pairs(self) -> Iterator[tuple[object, object]]:
        """Every pair of ids whose names score at or above the threshold (some more than once,
        when they share several keys)."""
        import numpy as np
        from rapidfuzz import fuzz, process

        for ids, names in self.blocks.values():
            for start in range(0, len(names) - 1, _ROWS):
                scores = process.cdist(
                    names[start : start + _ROWS], names[start:], scorer=fuzz.ratio, score_cutoff=self.threshold
                )
                rows, cols = np.nonzero(scores >= self.threshold)
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                    if c > r:  # column c is names[start + c]; row r is names[start + r]
                        yield ids[start + r], ids[start + c]


__all__ = ["FORMS_BELOW", "LEGAL_FORMS", "MIN_BLOCKED", "Blocks", "block_keys", "sort_tokens"]
