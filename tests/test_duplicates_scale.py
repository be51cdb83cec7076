"""Fuzzy duplicate rules at scale: names are compared within blocks (metacrm.runtime.fuzzy),
not all pairs, and find what comparing every pair finds. The reference here compares every
pair with rapidfuzz's token sort ratio directly, independently of the blocking code."""

from __future__ import annotations

import functools
import random
import warnings
from pathlib import Path

import pytest
from rapidfuzz import fuzz

import metacrm
from metacrm.errors import DuplicateWarning
from metacrm.runtime.fuzzy import FORMS_BELOW, MIN_BLOCKED, Blocks, block_keys, sort_tokens

SYLLABLES = [c + v for c in "бвгдклмнпрстш" for v in "аеиоу"] + [c + v for c in "bdgklmnprst" for v in "aeiou"]
FORMS = ["ооо", "ип", "ао", "llc", "gmbh", ""]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def _variant(rng: random.Random, name: str) -> str:
    words = name.split()
    j = rng.randrange(len(words))
    kind = rng.choice(("typo", "typo", "reorder", "form", "add"))
    if kind == "typo":
        w = words[j]
        i = rng.randrange(len(w))
        words[j] = w[:i] + rng.choice("аеиоуxyz") + w[i + (rng.random() < 0.5) :]
    elif kind == "reorder":
        rng.shuffle(words)
    elif kind == "form":
        words = [w for w in words if w not in FORMS] + [rng.choice(FORMS)]
    else:
        words.append(_word(rng))
    return " ".join(w for w in words if w) or name


def names(count: int, seed: int, *, compound: bool = False) -> tuple[list[str], set[int]]:
    """Generated names, three in ten a variant (one edit) of an earlier original; with
    ``compound``, of any earlier name (variants of variants: several edits apart). Also the
    positions (from 1) of the originals."""
    rng = random.Random(seed)
    out: list[str] = []
    originals: list[str] = []
    firsts: set[int] = set()
    while len(out) < count:
        if out and rng.random() < 0.3:
            out.append(_variant(rng, rng.choice(out if compound else originals)))
        else:
            originals.append(
                " ".join(filter(None, [rng.choice(FORMS), *(_word(rng) for _ in range(rng.randint(1, 3)))]))
            )
            out.append(originals[-1])
            firsts.add(len(out))
    return [" ".join(n.casefold().split()) for n in out], firsts


def reference_pairs(items: list[tuple[int, str]], threshold: float, *, keyed: bool = False) -> set[tuple[int, int]]:
    """Every pair scoring at or above ``threshold``; with ``keyed``, those sharing a block key."""
    return {
        (a, b)
        for n, (a, x) in enumerate(items)
        for b, y in items[n + 1 :]
        if fuzz.token_sort_ratio(x, y) >= threshold and (not keyed or _shares_a_key(x, y, threshold))
    }


def reference_best(items: list[tuple[int, str]], threshold: float) -> dict[int, int]:
    """Each name's best earlier match among those sharing a block key (the first among equals)."""
    best = {}
    for n, (a, x) in enumerate(items):
        scored = [(fuzz.token_sort_ratio(x, y), -b) for b, y in items[:n] if _shares_a_key(x, y, threshold)]
        top = max(scored, default=(-1, 0))
        if top[0] >= threshold:
            best[a] = -top[1]
    return best


def test_sorted_tokens_and_ratio_score_as_token_sort_ratio() -> None:
    sample = names(400, 7)[0] + ["ёлка ёж", "z a", "a z", "ооо «ромашка»", "x-y z_w", "東京 会社", "a\u0301b c"]
    rng = random.Random(1)
    for _ in range(5000):
        x, y = rng.choice(sample), rng.choice(sample)
        assert fuzz.ratio(sort_tokens(x), sort_tokens(y)) == fuzz.token_sort_ratio(x, y), (x, y)


def test_block_keys_drop_legal_forms_and_keep_word_ends() -> None:
    assert block_keys("ооо ромашка") == block_keys("ромашка ооо") == block_keys("ромашка")
    assert block_keys("ооо ромашка") == {"<ром", "<ома", ">шка", ">ашк"}
    assert block_keys("ромашкаа") & block_keys("рромашка")  # edits at opposite ends: still a key
    assert block_keys("ооо ромашка") & block_keys("ооо рамашка")  # a typo near the start: the end
    assert block_keys("acme trading") & block_keys("akme tradinq")
    assert block_keys("ип ли") & block_keys("ип лю")  # very short words: their first letter
    assert block_keys("ооо") == {"<ооо", ">ооо", "<<оо", ">>оо", "<<<о"}  # only a legal form: kept
    assert not block_keys("рвмашка") & block_keys("ромашпа")  # what blocking misses (score 71)
    assert "=ооо" in block_keys("ооо ромашка", forms=True)


@functools.cache
def _keys(name: str, forms: bool) -> frozenset:
    return frozenset(block_keys(name, forms=forms))


def _shares_a_key(x: str, y: str, threshold: float) -> bool:
    if threshold < MIN_BLOCKED:
        return True
    forms = threshold < FORMS_BELOW
    return bool(_keys(x, forms) & _keys(y, forms))


@pytest.mark.parametrize(
    ("threshold", "compound"),
    [(MIN_BLOCKED - 5, False), (75, False), (80, False), (85, False), (90, False), (95, False), (85, True)],
)
def test_blocking_misses_only_pairs_without_a_common_key(threshold, compound) -> None:
    """Against comparing every pair: blocking finds no pair that does not score, misses none
    that shares a key, and every pair it misses has no key in common (the class the module
    docstring describes); a name edited once is always found with its original. Each name's
    best earlier match is the best among the names that share a key with it."""
    generated, originals = names(1000 if compound else 500, threshold, compound=compound)
    items = list(enumerate(generated, start=1))
    text = dict(items)
    expected = reference_pairs(items, threshold)
    assert len(expected) > 20  # the data has duplicates to find
    got = {tuple(sorted(p)) for p in Blocks(threshold, items).pairs()}
    assert got <= expected
    missed = expected - got
    assert all(not _shares_a_key(text[a], text[b], threshold) for a, b in missed)
    assert not [(a, b) for a, b in missed if a in originals or b in originals]
    assert len(missed) <= len(expected) // 100, [(text[a], text[b]) for a, b in missed]
    blocks = Blocks(threshold)
    for rid, name in items:
        hit = blocks.best(name)
        keyed = [(fuzz.token_sort_ratio(name, y), -b) for b, y in items[: rid - 1] if _shares_a_key(name, y, threshold)]
        top = max(keyed, default=(-1, 0))
        assert hit == (-top[1] if top[0] >= threshold else None), (rid, name)
        blocks.add(rid, name)


MODEL = """\
metacrm: 1
entities:
  client:
    fields:
      name: {type: string, required: true}
      city: {type: string}
    duplicates:
      - {match: name, field: name, within: city, threshold: 85, action: warn}
"""


@pytest.fixture
def crm(db_url, tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_groups_and_batch_warnings_match_all_pairs_on_both_dialects(crm) -> None:
    raw, _ = names(400, 11)
    rows = [{"name": n.title() if i % 3 else n, "city": "Москва" if i % 2 else "Казань"} for i, n in enumerate(raw)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateWarning)
        created = crm.create_many("client", rows)
    by_city: dict = {}
    for record in created:
        by_city.setdefault(record["city"], []).append((record["id"], " ".join(record["name"].casefold().split())))
    expected_best: dict = {}
    parent: dict = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for items in by_city.values():
        for a, b in reference_pairs(items, 85, keyed=True):
            parent[root(b)] = root(a)
        first = {record["id"]: n for n, record in enumerate(created)}
        expected_best.update({first[a]: first[b] for a, b in reference_best(items, 85).items()})
    assert len(caught) == 1  # one warning for the call, holding every match
    flagged = {m.index for w in caught if issubclass(w.category, DuplicateWarning) for m in w.message.matches}
    assert flagged == set(expected_best) and len(flagged) > 10
    clusters: dict = {}
    for record in created:
        clusters.setdefault(root(record["id"]), []).append(record["id"])
    expected_groups = sorted(sorted(ids) for ids in clusters.values() if len(ids) > 1)
    got = sorted(g["records"] for g in crm.duplicates("client"))
    assert got == expected_groups
    one = created[next(iter(sorted(expected_best)))]
    found = crm.find_duplicates("client", {"name": one["name"], "city": one["city"]})
    assert one["id"] in {f["id"] for f in found}
