"""Load + compile of a generated 50-entity model, against raw YAML parsing of the same file.

    python bench/bench_load.py [--entities 50] [--repeat 15]

Prints medians in milliseconds and the ratio to the raw baseline (libyaml's CSafeLoader).
Goal (issue 2): load + compile <= 150 ms on the 2-core CI machine class.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

import metacrm

FIELD_TYPES = ["string", "text", "integer", "money", "date", "email", "phone", "choice", "boolean", "percent"]


def generate(n: int) -> dict:
    entities = {}
    for i in range(n):
        fields = {}
        for j, ftype in enumerate(FIELD_TYPES):
            spec = {"type": ftype, "label": f"Поле {j}"}
            if ftype == "choice":
                spec["options"] = ["a", "b", {"value": "c", "label": "Вариант"}]
            if ftype == "string":
                spec.update(required=True, max_length=200)
            fields[f"f{j}_{ftype}"] = spec
        links = {}
        if i:
            links["parent"] = {"to": f"e{i - 1}", "inverse": f"children_{i}"}
            links["tags"] = {"to": f"e{(i * 7) % i}", "many": True}
        entity = {"label": f"Сущность {i}", "owner": True, "fields": fields, "links": links, "search": ["f0_string"]}
        if i % 3 == 0:
            entity["stages"] = {
                "initial": "new",
                "states": {
                    "new": {},
                    "qualified": {"probability": 0.2},
                    "proposal": {"probability": 0.5, "requires": ["f3_money"], "sla": "2d"},
                    "invoice": {"probability": 0.8},
                    "won": {"kind": "won"},
                    "lost": {"kind": "lost"},
                },
                "transitions": [
                    {"from": "new", "to": "qualified"},
                    {"from": "qualified", "to": ["proposal", "invoice"]},
                    {"from": "proposal", "to": "invoice"},
                    {"from": "invoice", "to": "won"},
                    {"from": "*", "to": "lost"},
                    {"from": "lost", "to": "new", "reopen": True},
                ],
            }
        entities[f"e{i}"] = entity
    return {"metacrm": 1, "name": "bench", "label": "Бенчмарк", "entities": entities}


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.yaml"
        path.write_text(yaml.safe_dump(generate(args.entities), allow_unicode=True, sort_keys=False), encoding="utf-8")
        metacrm.load_model(path)  # warm: imports, schema compilation
        text = path.read_text(encoding="utf-8")
        raw = median_ms(lambda: yaml.load(text, Loader=yaml.CSafeLoader), args.repeat)
        full = median_ms(lambda: metacrm.load_model(path), args.repeat)
        lines = text.count("\n")
    print(f"model: {args.entities} entities, {lines} YAML lines")
    print(f"raw yaml.load (CSafeLoader):      {raw:8.1f} ms   1.00x")
    print(
        f"metacrm.load_model (load+compile): {full:8.1f} ms  {full / raw:5.2f}x   goal <= 150 ms: {'ok' if full <= 150 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
