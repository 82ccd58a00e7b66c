"""Datasets users upload: content-addressed files in the blob store, checked once at upload (blocking helpers)."""

from __future__ import annotations

import csv
from pathlib import Path

MAX_CLASSES_FOR_INTEGERS = 20


class DatasetError(ValueError):
    """The file cannot serve as a dataset; the message says why."""


def inspect(path: Path, filename: str) -> tuple[str, int, list[str]]:
    """(format, data rows, columns) of an uploaded file."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".parquet":
        raise DatasetError("Parquet files need pyarrow, which this controller does not have; upload a CSV")
    if suffix != ".csv":
        raise DatasetError(f"{filename}: unsupported format {suffix or '(none)'}; upload a .csv file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = sum(1 for row in reader if row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{filename} is not a readable UTF-8 CSV file: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise DatasetError(f"{filename} has no header row")
    if rows == 0:
        raise DatasetError(f"{filename} has a header but no data rows")
    columns = [h.strip() for h in header]
    if len(set(columns)) != len(columns):
        raise DatasetError(f"{filename} repeats a column name")
    return "csv", rows, columns


def infer_task(path: Path, target: str) -> str:
    """classification for text labels or a few integer values, else regression."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        values = [row[target].strip() for row in reader if row.get(target) is not None]
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "classification"
    if all(n.is_integer() for n in numbers) and len(set(numbers)) <= MAX_CLASSES_FOR_INTEGERS:
        return "classification"
    return "regression"
