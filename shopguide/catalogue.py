"""Readers for a shop's catalogue: item id -> a title a person can read, or each item's fields.

- `items.tsv` as shipped with the Toys data (`item<TAB>asin<TAB>text<TAB>attributes`, header);
- a generic CSV `item,title[,...]` (header optional for titles; `item_rows` needs it, with the
  columns of CSV_COLUMNS: categories `|`-separated, brand, price and in_stock optional).
"""
from __future__ import annotations

import csv
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from shopguide.errors import UserError


TOYS_COLUMNS = ["item", "asin", "text", "attributes"]
CSV_COLUMNS = ("item", "title", "categories", "brand", "price", "in_stock")
TRUE, FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


@dataclass(frozen=True)
class Row:
    line: int
    fields: dict | None  # item, title, categories, in_stock and, when given, brand and price
    problem: str | None = None  # why `fields` is None: a reason code like the records' own


def read_titles(path: Path | str) -> dict[str, str]:
    path = _existing(path)
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


def simulated_query(title: str, rng: random.Random) -> str | None:
    """Two or three consecutive words of the title; None when it has fewer than two."""
    words = title.split()
    if len(words) < 2:
        return None
    span = min(len(words), rng.choice((2, 3)))
    start = rng.randrange(len(words) - span + 1)
    return " ".join(words[start:start + span])


def title(titles: dict[str, str], item, width: int = 40) -> str:
    """The item's title cut to `width`, or its id when the catalogue does not know it."""
    text = titles.get(str(item)) or f"item {item}"
    return text if len(text) <= width else text[:width - 1] + "…"


def item_rows(path: Path | str) -> Iterator[Row]:
    """Each data row of `items.tsv` or a generic CSV with a header, in file order. A row that
    cannot be read comes with its problem; a file that cannot be read at all is a UserError, at
    once for its header and while iterating for the rest."""
    path = _existing(path)
    tsv = path.suffix == ".tsv"
    with _reader(path, tsv) as rows:
        header = [cell.strip().lower() for cell in next(rows, [])]
    _check_header(path, header, tsv)
    return _rows(path, tsv, header)


@contextmanager
def _reader(path: Path, tsv: bool):
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(f)
        try:
            yield rows
        except UnicodeDecodeError:
            raise UserError(f"{path}:{_first_undecodable(path)}: not UTF-8 text") from None
        except csv.Error as exc:
            raise UserError(f"{path}:{rows.line_num}: {exc}") from None


def _first_undecodable(path: Path) -> int:
    """The first line that is not UTF-8 (text is decoded in blocks: the reader cannot tell)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _rows(path: Path, tsv: bool, header: list[str]) -> Iterator[Row]:
    parse = _toys_row if tsv else _csv_row
    with _reader(path, tsv) as rows:
        next(rows)
        for row in rows:
            if row:
                yield _row(rows.line_num, parse, dict(zip(header, row)) if len(row) == len(header) else None)


def count_rows(path: Path | str) -> int:
    """Lines after the header (a progress bar's total)."""
    with _existing(path).open("rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def _existing(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such catalogue file")
    return path


def _check_header(path: Path, header: list[str], tsv: bool) -> None:
    if not header:
        raise UserError(f"{path}: empty catalogue")
    if tsv and header != TOYS_COLUMNS:
        raise UserError(f"{path}: expected the header {chr(9).join(TOYS_COLUMNS)!r} of items.tsv")
    unknown = [column for column in header if column not in CSV_COLUMNS]
    if not tsv and (unknown or not {"item", "title"} <= set(header) or len(set(header)) < len(header)):
        raise UserError(f"{path}: expected a header of distinct columns item,title and optionally "
                        f"categories,brand,price,in_stock" + (f" (not {unknown[0]!r})" if unknown else ""))


def _row(line: int, parse, cells: dict | None) -> Row:
    if cells is None:
        return Row(line, None, "field_count")
    try:
        return Row(line, parse(cells))
    except ValueError as exc:
        return Row(line, None, f"bad_field:{exc}")


def _toys_row(cells: dict) -> dict:
    return {"item": cells["item"].strip(), "title": cells["text"].strip(), "categories": cells["attributes"].split(),
            "in_stock": True}


def _csv_row(cells: dict) -> dict:
    fields = {"item": cells["item"].strip(), "title": cells["title"].strip(),
              "categories": [name.strip() for name in cells.get("categories", "").split("|") if name.strip()],
              "in_stock": _flag(cells.get("in_stock", "").strip().lower())}
    if brand := cells.get("brand", "").strip():
        fields["brand"] = brand
    if price := cells.get("price", "").strip():
        try:
            fields["price"] = float(price)
        except ValueError:
            raise ValueError("price") from None
    return fields


def _flag(text: str) -> bool:
    if text in TRUE or not text:  # no column, or an empty cell: in stock
        return True
    if text in FALSE:
        return False
    raise ValueError("in_stock")
