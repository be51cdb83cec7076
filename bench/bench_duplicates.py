"""Fuzzy duplicate rules: blocking (metacrm.runtime.fuzzy) against the all-pairs comparison
metacrm did before, on the same generated names, in the same run.

    python bench/bench_duplicates.py [--names 30000] [--threshold 85] [--seed 1] [--db sqlite|postgresql|both|none]

Names: company names as a Russian or international CRM holds them: a legal form (ООО, ИП, АО,
LLC, GmbH, or none) and one to three words made of syllables (Cyrillic or Latin); one in five is
a variant of an earlier name: words reordered, a typo (a letter changed, added or dropped), the
legal form added, dropped or changed, the case or the spacing changed, a word added. Every name
is casefolded and whitespace-normalised, as the rule's key is.

1. groups: the duplicate groups of all the names (what ``crm.duplicates`` computes): the old
   loop (each name against every later one with rapidfuzz ``process.extract``, union-find)
   against ``Blocks(...).pairs()``; the groups are checked equal (or the difference is printed:
   what blocking missed).
2. batch: each name against the earlier ones (what ``create_many`` / import does for a batch):
   the old ``extractOne`` over every earlier name against ``Blocks.best``; the matches are
   compared the same way.
3. with ``--db``: ``crm.create_many`` of the names as clients under a ``warn`` name rule, then
   ``crm.duplicates("client")``, on each dialect (no baseline: the old code is phases 1-2).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

from rapidfuzz import fuzz, process

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metacrm.runtime.fuzzy import Blocks  # noqa: E402

CYR = "бвгдклмнпрстфхцчш", "аеиоуяю"
LAT = "bcdfgklmnprstvz", "aeiou"
FORMS = ["ооо", "ип", "ао", "зао", "llc", "gmbh", "ltd", ""]


def word(rng: random.Random) -> str:
    consonants, vowels = CYR if rng.random() < 0.7 else LAT
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4)))


def typo(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text))
    kind = rng.choice(("change", "add", "drop"))
    letter = rng.choice("абвгдеклмнопрстaeiou")
    if kind == "change":
        return text[:i] + letter + text[i + 1 :]
    if kind == "add":
        return text[:i] + letter + text[i:]
    return text[:i] + text[i + 1 :] if len(text) > 3 else text


def variant(rng: random.Random, name: str) -> str:
    words = name.split()
    kind = rng.choice(("reorder", "typo", "typo", "form", "case", "add"))
    if kind == "reorder":
        rng.shuffle(words)
    elif kind == "typo":
        j = rng.randrange(len(words))
        words[j] = typo(rng, words[j])
    elif kind == "form":
        words = [w for w in words if w not in FORMS] + ([rng.choice(FORMS)] if rng.random() < 0.5 else [])
    elif kind == "case":
        return "  ".join(w.upper() for w in words)
    else:
        words.append(word(rng))
    return " ".join(w for w in words if w) or name


def make_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < count:
        if names and rng.random() < 0.2:
            names.append(variant(rng, rng.choice(names)))
        else:
            form = rng.choice(FORMS)
            names.append(" ".join(filter(None, [form, *(word(rng) for _ in range(rng.randint(1, 3)))])))
    return [" ".join(n.casefold().split()) for n in names]


def _root(parent: dict, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def clusters(rows, pairs) -> list[list[int]]:
    parent = {rid: rid for rid, _ in rows}
    for a, b in pairs:
        parent[_root(parent, b)] = _root(parent, a)
    out: dict = {}
    for rid, _ in rows:
        out.setdefault(_root(parent, rid), []).append(rid)
    return sorted(sorted(ids) for ids in out.values() if len(ids) > 1)


def old_pairs(rows, threshold):
    """The all-pairs loop metacrm ran before blocking (runtime/duplicates.py, duplicate_groups)."""
    for n, (rid, key) in enumerate(rows[:-1]):
        rest = {oid: okey for oid, okey in rows[n + 1 :]}
        for _, _, oid in process.extract(key, rest, scorer=fuzz.token_sort_ratio, score_cutoff=threshold, limit=None):
            yield rid, oid


def old_batch(rows, threshold) -> dict:
    """Each name against every earlier one (runtime/duplicates.py, find_duplicates' ``seen``)."""
    seen: dict = {}
    found = {}
    for i, key in rows:
        if seen:
            hit = process.extractOne(key, seen, scorer=fuzz.token_sort_ratio, score_cutoff=threshold)
            if hit is not None:
                found[i] = hit[2]
        seen[i] = key
    return found


def new_batch(rows, threshold) -> dict:
    blocks = Blocks(threshold)
    found = {}
    for i, key in rows:
        hit = blocks.best(key)
        if hit is not None:
            found[i] = hit
        blocks.add(i, key)
    return found


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def compare(what: str, old, new, old_s: float, new_s: float) -> None:
    print(f"{what:<8} all pairs {old_s:9.2f} s   blocking {new_s:7.2f} s   ratio {old_s / new_s:7.1f}x", end="   ")
    if old == new:
        print("same result")
        return
    if isinstance(old, dict):
        missed = {k: v for k, v in old.items() if new.get(k) != v}
        print(f"DIFFERENT: {len(missed)} of {len(old)} matches differ, e.g. {list(missed.items())[:5]}")
    else:
        print(f"DIFFERENT: {len(old)} groups before, {len(new)} with blocking")


def run_db(names: list[str], threshold: float, dialects: list[str]) -> None:
    import bench_records

    import metacrm
    from metacrm.errors import DuplicateWarning

    model = (
        "metacrm: 1\nentities:\n  client:\n    fields:\n      name: {type: string, required: true}\n"
        f"    duplicates:\n      - {{match: name, field: name, threshold: {threshold}, action: warn}}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.yaml"
        path.write_text(model, encoding="utf-8")
        for dialect in dialects:
            with bench_records.fresh_url(dialect, Path(tmp)) as url:
                crm = metacrm.connect(path, url)
                crm.migrate()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DuplicateWarning)
                    _, created = timed(
                        lambda crm=crm: crm.create_many("client", [{"name": n} for n in names], returning=False)
                    )
                groups, listed = timed(lambda crm=crm: crm.duplicates("client"))
                crm.close()
                print(
                    f"{dialect:<10} create_many {len(names):,} under a name rule {created:6.2f} s   "
                    f"duplicates(): {len(groups):,} groups in {listed:6.2f} s"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=30_000)
    parser.add_argument("--threshold", type=float, default=85)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both", "none"), default="none")
    args = parser.parse_args()
    names = make_names(args.names, args.seed)
    rows = list(enumerate(names, start=1))
    print(f"{len(names):,} names, threshold {args.threshold:g}, e.g. {names[:3]}")
    new, new_s = timed(lambda: clusters(rows, Blocks(args.threshold, rows).pairs()))
    old, old_s = timed(lambda: clusters(rows, old_pairs(rows, args.threshold)))
    print(f"groups: {len(new):,} with blocking, {sum(map(len, new)):,} names in them")
    compare("groups", old, new, old_s, new_s)
    new, new_s = timed(lambda: new_batch(rows, args.threshold))
    old, old_s = timed(lambda: old_batch(rows, args.threshold))
    compare("batch", old, new, old_s, new_s)
    if args.db != "none":
        import bench_records

        run_db(names, args.threshold, bench_records.dialects_to_run(args.db))


if __name__ == "__main__":
    main()
