"""Datasets users upload: content-addressed files in the blob store, checked once at upload (blocking helpers).

A CSV is stored as uploaded. A Parquet file is converted once, here, into the same CSV form (values
written so that they read back exactly), so that agents need no Parquet reader and one loader serves
both; the entry keeps the original file's name and sha256. Each column is profiled at upload, so a
submit can refuse text or missing values in features, and infer the task from the target, without
reading the file again.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import file_sha256

MAX_CLASSES_FOR_INTEGERS = 20
MAX_TABLE_BYTES = 8 << 30  # a one-file version profiled as a table (what UploadDataset always took)
FORMATS = (".csv", ".parquet")


class DatasetError(ValueError):
    """The file cannot serve as a dataset; the message says why."""


def parquet_to_csv(path: Path, filename: str, out: Path) -> None:
    """Write the Parquet file's table as CSV (nulls become empty cells, floats keep every digit)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            "reading Parquet needs pyarrow on the controller: pip install 'tensorfleet[parquet]', or upload a CSV"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for every kind of damage
        raise DatasetError(f"{filename} is not a readable Parquet file: {exc}") from None
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.column_names)
        for row in zip(*columns, strict=True):
            writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def inspect(path: Path, filename: str) -> tuple[str, int, list[str], dict[str, dict[str, Any]]]:
    """(format, data rows, columns, profile per column) of an uploaded CSV."""
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise DatasetError(f"{filename}: unsupported format {suffix or '(none)'}; upload a .csv or .parquet file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DatasetError(f"{filename} has no header row")
            columns = [h.strip() for h in header]
            if len(set(columns)) != len(columns):
                raise DatasetError(f"{filename} repeats a column name")
            profiles = [_Profile() for _ in columns]
            rows = 0
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(columns):
                    raise DatasetError(f"{filename} row {line} has {len(row)} fields; the header has {len(columns)}")
                rows += 1
                for profile, cell in zip(profiles, row, strict=True):
                    profile.add(cell, line)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{filename} is not a readable UTF-8 CSV file: {exc}") from None
    if rows == 0:
        raise DatasetError(f"{filename} has a header but no data rows")
    return suffix[1:], rows, columns, {c: p.summary() for c, p in zip(columns, profiles, strict=True)}


class _Profile:
    """What a submit needs to know about one column."""

    def __init__(self) -> None:
        self.text: tuple[int, str] | None = None  # first non-number: (row, value)
        self.missing: int | None = None  # first empty or NaN cell's row
        self.integers = True
        self.distinct: set[str] = set()

    def add(self, cell: str, line: int) -> None:
        value = cell.strip()
        if len(self.distinct) <= MAX_CLASSES_FOR_INTEGERS:
            self.distinct.add(value)
        if not value:
            self.missing = self.missing or line
            return
        try:
            number = float(value)
        except ValueError:
            self.text = self.text or (line, value[:40])
            return
        if math.isnan(number):
            self.missing = self.missing or line
        elif not number.is_integer():
            self.integers = False

    def summary(self) -> dict[str, Any]:
        return {
            "numeric": self.text is None,
            "first_text": list(self.text) if self.text else None,
            "first_missing_row": self.missing,
            "integers": self.integers and self.text is None,
            "distinct": len(self.distinct),  # capped just above MAX_CLASSES_FOR_INTEGERS
        }


def check_features(columns: list[str], profile: dict[str, dict[str, Any]], target: str) -> None:
    """Features must be numbers without gaps; the message names the first offending column and row."""
    for column in columns:
        if column == target:
            continue
        p = profile[column]
        if not p["numeric"]:
            row, value = p["first_text"]
            raise DatasetError(
                f"feature column {column!r} holds text (row {row}: {value!r}); features must be numbers — "
                "encode it, drop it, or choose it as the target"
            )
        if p["first_missing_row"]:
            raise DatasetError(f"feature column {column!r} has a missing value (row {p['first_missing_row']})")
    if profile[target]["first_missing_row"]:
        raise DatasetError(f"target column {target!r} has a missing value (row {profile[target]['first_missing_row']})")


def infer_task(profile: dict[str, Any]) -> str:
    """classification for text labels or a few integer values, else regression."""
    if not profile["numeric"]:
        return "classification"
    if profile["integers"] and profile["distinct"] <= MAX_CLASSES_FOR_INTEGERS:
        return "classification"
    return "regression"


def head_rows(path: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    """The header and the first `rows` data rows (blocking)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        body: list[list[str]] = []
        for row in reader:
            if len(body) >= rows:
                break
            if row:
                body.append(row)
    return header, body


def prepare_upload(tmp: Path, filename: str) -> tuple[Path, str, dict[str, str], tuple[Any, ...]]:
    """(file, file name, source, inspect()) of an upload; a Parquet file becomes its CSV form first.

    Blocking. Leaves no stray file on errors.
    """
    source: dict[str, str] = {}
    if filename.lower().endswith(".parquet"):
        converted = tmp.with_name(tmp.name + ".csv")
        try:
            parquet_to_csv(tmp, filename, converted)
            source = {"filename": filename, "sha256": file_sha256(tmp)}
        except BaseException:
            converted.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        tmp, filename = converted, filename[: -len(".parquet")] + ".csv"
    try:
        return tmp, filename, source, inspect(tmp, filename)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
