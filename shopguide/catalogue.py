"""Readers for a shop's catalogue: item id -> a title a person can read.

- `items.tsv` as shipped with the Toys data (`item<TAB>asin<TAB>text<TAB>attributes`, header);
- a generic CSV `item,title[,...]` (header optional).
"""
from __future__ import annotations

import csv
from pathlib import Path

from shopguide.errors import UserError


def read_titles(path: Path | str) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such catalogue file")
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if not rows:
        raise UserError(f"{path}: empty catalogue")
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("text") if "text" in header else header.index("title") if "title" in header else 1
    body = rows[1:] if header[0] == "item" else rows
    bad = next((n for n, row in enumerate(body, start=2) if len(row) <= column), None)
    if bad is not None:
        raise UserError(f"{path}:{bad}: expected at least {column + 1} fields")
    return {row[0].strip(): row[column].strip() for row in body}


def title(titles: dict[str, str], item, width: int = 40) -> str:
    """The item's title cut to `width`, or its id when the catalogue does not know it."""
    text = titles.get(str(item)) or f"item {item}"
    return text if len(text) <= width else text[:width - 1] + "…"
