"""The README's generated sections, each between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
`outputs` (the data dictionary, from the registry in `sweep/outputs.py`) and `keys` (every
configuration key with its kind, default and meaning, from `TrainConfig`'s fields).

    python -m sweep.docs        rewrites them; tests/test_docs.py checks they are current
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sweep import outputs
from sweep import vocabulary as vocab
from sweep.config import BOOLEAN, CATEGORY, TARGETS, TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def data_dictionary() -> str:
    """The quantities every row carries after its axis columns."""
    rows = ["| column | unit | type | meaning |", "|---|---|---|---|"]
    for q in outputs.QUANTITIES:
        rows.append(f"| `{q.name}` | {q.unit or '-'} | {q.dtype} | {q.doc}"
                    + (" (objective)" if q.device else "") + " |")
    return "\n".join(rows)


def _default(f: dataclasses.Field) -> str:
    kind = f.metadata["kind"]
    if kind == CATEGORY:
        return vocab.CATEGORIES[f.name][int(f.default)]
    if kind == BOOLEAN:
        return str(bool(f.default)).lower()
    if kind == TARGETS:
        return "all-linear"
    if f.name == "gpus_per_node":
        return "the GPU's node"
    return f"{f.default:g}"


def keys_table() -> str:
    """Every configuration key: grid axis, `explain` flag, Parquet column."""
    rows = ["| key (grid axis, Parquet column) | `explain` flag | values | default | meaning |",
            "|---|---|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        kind = f.metadata["kind"]
        flag = "--" + f.name.replace("_", "-")
        if kind == BOOLEAN:
            flag = f"{flag}, --no-{flag[2:]}"
        values = {CATEGORY: ", ".join(vocab.CATEGORIES.get(f.name, ())),
                  BOOLEAN: "true, false", TARGETS: "module names, all-linear, attention"
                  }.get(kind, kind)
        rows.append(f"| `{f.name}` | `{flag}` | {values} | {_default(f)} | "
                    f"{f.metadata['doc']} |")
    return "\n".join(rows)


SECTIONS = {"outputs": data_dictionary, "keys": keys_table}


def rendered(text: str) -> str:
    """`text` with every generated section rewritten."""
    for name, build in SECTIONS.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        start, stop = text.index(begin) + len(begin), text.index(end)
        text = text[:start] + "\n" + build() + "\n" + text[stop:]
    return text


def update(path: Path = README) -> None:
    path.write_text(rendered(path.read_text("utf-8")), "utf-8")


if __name__ == "__main__":
    update()
    print(f"rewrote the generated sections of {README}")
