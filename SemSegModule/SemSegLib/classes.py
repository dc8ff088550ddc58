"""Class table: label value -> name and color, read from / written to `classes.csv` (value,name,r,g,b)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_bytes_atomic
from .errors import InputError

# Distinct default colors (r, g, b) for classes without a classes.csv.
DEFAULT_COLORS = [
    (128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
    (221, 130, 101), (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0),
]


@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"value": self.value, "name": self.name, "color": list(self.color)}

    @staticmethod
    def from_dict(d: dict) -> ClassInfo:
        return ClassInfo(int(d["value"]), str(d["name"]), tuple(int(c) for c in d["color"]))


def default_classes(values: list[int] | int) -> list[ClassInfo]:
    """Classes named after their values, for stacks without a classes.csv."""
    if isinstance(values, int):
        values = list(range(1, values + 1))
    return [ClassInfo(v, f"class {v}", DEFAULT_COLORS[(v - 1) % len(DEFAULT_COLORS)]) for v in values]


def read_classes_csv(path: str | Path) -> list[ClassInfo]:
    """Read `value,name,r,g,b` rows (separated by commas, semicolons or tabs; a header line is optional); values
    must be 1..K without gaps (0 means unlabeled)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"{path}: cannot read the classes file ({e.strerror}).") from e
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip(" ,;\t")]
    delimiter = _delimiter(lines[0][1]) if lines else ","
    rows = [(number, next(csv.reader([line], delimiter=delimiter))) for number, line in lines]
    if rows and rows[0][1][0].strip().lower() == "value":
        rows = rows[1:]
    classes = []
    for lineno, row in rows:
        try:
            value = int(row[0])
            name = row[1].strip()
            default = DEFAULT_COLORS[(value - 1) % len(DEFAULT_COLORS)]
            color = tuple(int(c) for c in row[2:5]) if len(row) >= 5 else default
        except (ValueError, IndexError) as e:
            raise InputError(
                f"{path}: line {lineno} {row!r} is not 'value,name,r,g,b' "
                "(value an integer >= 1, r,g,b integers 0-255)."
            ) from e
        if not all(0 <= c <= 255 for c in color):
            raise InputError(f"{path}: line {lineno}: colors must be 0-255, got {color}.")
        classes.append(ClassInfo(value, name or f"class {value}", color))
    values = sorted(c.value for c in classes)
    if values != list(range(1, len(values) + 1)):
        raise InputError(
            f"{path}: class values must be 1..K with no gaps or repeats (0 means unlabeled); got {values}."
        )
    for c in classes:
        same = [d.value for d in classes if d.name == c.name]
        if len(same) > 1:
            # Slicer's panel finds each class's pixels by its segment's name, and a model names its classes' maps.
            raise InputError(f"{path}: the classes of values {' and '.join(map(str, same))} are both named "
                             f"{c.name!r}. Give each class a name of its own.")
    return sorted(classes, key=lambda c: c.value)


def _delimiter(first_line: str) -> str:
    """The separator that makes `first_line` start with "value" or a class value: spreadsheets in many locales save
    "CSV" with semicolons, some with tabs, and a name may hold a comma."""
    for d in (",", ";", "\t"):
        first = next(csv.reader([first_line], delimiter=d))[0].strip().lower()
        if first == "value" or first.isdigit():
            return d
    return ","


def write_classes_csv(path: str | Path, classes: list[ClassInfo]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["value", "name", "r", "g", "b"])
    for c in classes:
        writer.writerow([c.value, c.name, *c.color])
    write_bytes_atomic(Path(path), buf.getvalue().encode("utf-8"))
