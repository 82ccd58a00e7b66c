"""The Datasets view's preview of one file of a version: an image, the first KBs of text, the first rows of a CSV
table, or the first bytes in hex. The bytes come through the bridge (ReadDatasetFile, a byte limit per kind) and are
decoded on the bridge's side too (an image into a QImage scaled to the pane, a CSV parsed): the GUI thread only puts
the result on screen."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QPlainTextEdit,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import AsyncClient, TensorFleetError
from tensorfleet_desktop.ui.formatting import human_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
TABLE_SUFFIXES = {".csv", ".tsv"}
IMAGE_BYTES = 4 << 20  # the most the controller reads in one call: a larger image is named, not fetched
TEXT_BYTES = 64 << 10  # the first 64 KiB of a text file
TABLE_BYTES = 256 << 10  # enough for PREVIEW_ROWS rows of most tables
BINARY_BYTES = 512  # a file that is no text: its first bytes in hex
PREVIEW_ROWS = 50
IMAGE_SIDE = 480  # the preview's longest side, in pixels: decoded and scaled off the GUI thread


@dataclass
class Preview:
    """What to show for one file (built on the bridge's side): kind is image, text, table, hex or message."""

    ref: str
    path: str
    kind: str
    size: int = 0
    truncated: bool = False
    text: str = ""
    image: QImage | None = None
    image_size: tuple[int, int] = (0, 0)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def kind_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in TABLE_SUFFIXES:
        return "table"
    return "text"


async def fetch_preview(client: AsyncClient, ref: str, file: dict[str, Any]) -> Preview:
    """Read as much of the file as its kind needs, and decode it in a worker thread."""
    path, size = file["path"], int(file["size"])
    kind = kind_of(path)
    if kind == "image" and size > IMAGE_BYTES:
        text = f"{path}: an image of {human_bytes(size)}, over the {human_bytes(IMAGE_BYTES)} previewed"
        return Preview(ref, path, "message", size, text=text)
    if path.lower().endswith(".parquet"):  # a table version's file: the controller reads it (no pyarrow here)
        try:
            rows = await client.preview_dataset(ref, PREVIEW_ROWS)
        except TensorFleetError:
            pass  # not a version of one table: its first bytes, as any other file
        else:
            return Preview(ref, path, "table", size, columns=rows["columns"], rows=rows["rows"])
    limit = {"image": IMAGE_BYTES, "table": TABLE_BYTES}.get(kind, TEXT_BYTES)
    read = await client.read_dataset_file(ref, path, limit)
    return await asyncio.to_thread(decode, ref, path, kind, read["data"], size, read["truncated"])


def decode(ref: str, path: str, kind: str, data: bytes, size: int, truncated: bool) -> Preview:
    """Bytes into what the pane shows (blocking: runs off the GUI thread)."""
    if kind == "image":
        image = QImage.fromData(data)
        if image.isNull():
            return Preview(ref, path, "message", size, text=f"{path}: not an image Qt can read")
        shown = image.scaled(
            min(image.width(), IMAGE_SIDE),
            min(image.height(), IMAGE_SIDE),
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        return Preview(ref, path, "image", size, truncated, image=shown, image_size=(image.width(), image.height()))
    if b"\0" in data[:4096]:
        head = data[:BINARY_BYTES]
        lines = [f"{i:08x}  {head[i : i + 16].hex(' ')}" for i in range(0, len(head), 16)]
        return Preview(ref, path, "hex", size, size > len(head), text="\n".join(lines))
    text = data.decode("utf-8", errors="replace")
    if truncated:  # a character cut by the limit is not shown as a replacement
        text = text[: text.rfind("\n") + 1] or text
    if kind == "table":
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        if rows:
            return Preview(ref, path, "table", size, truncated, columns=rows[0], rows=rows[1 : PREVIEW_ROWS + 1])
    return Preview(ref, path, "text", size, truncated, text=text)


class PreviewPane(QWidget):
    """A caption and one of: an image, text, a table, a message."""

    def __init__(self) -> None:
        super().__init__()
        self.label = QLabel("Select a file to preview it")
        self.label.setObjectName("dataset_preview_label")
        self.label.setWordWrap(True)
        self.image = QLabel()
        self.image.setObjectName("dataset_preview_image")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QPlainTextEdit()
        self.text.setObjectName("dataset_preview_text")
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.table = QTableWidget()
        self.table.setObjectName("dataset_preview")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.empty = QLabel()
        self.stack = QStackedWidget()
        for widget in (self.empty, self.image, self.text, self.table):
            self.stack.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.stack, 1)
        self.shown: Preview | None = None

    def clear(self, message: str) -> None:
        self.shown = None
        self.label.setText(message)
        self.image.clear()
        self.text.clear()
        self.set_rows([], [])
        self.stack.setCurrentWidget(self.empty)

    def set_rows(self, columns: list[str], rows: list[list[str]]) -> None:
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(columns)
        for r, row in enumerate(rows):
            for c, value in enumerate(row[: len(columns)]):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.stack.setCurrentWidget(self.table)

    def show_preview(self, p: Preview) -> None:
        self.shown = p
        more = " (the start of it)" if p.truncated else ""
        where = f"{p.ref} · {p.path} · {human_bytes(p.size)}"
        if p.kind == "image" and p.image is not None:
            width, height = p.image_size
            self.label.setText(f"{where} · {width} x {height} pixels")
            self.image.setPixmap(QPixmap.fromImage(p.image))
            self.stack.setCurrentWidget(self.image)
        elif p.kind == "table":
            self.label.setText(f"{where} · first {len(p.rows)} rows{more}")
            self.set_rows(p.columns, p.rows)
        elif p.kind in ("text", "hex"):
            self.label.setText(f"{where} · {'first bytes in hex' if p.kind == 'hex' else 'text'}{more}")
            self.text.setPlainText(p.text)
            self.stack.setCurrentWidget(self.text)
        else:
            self.clear(p.text)
