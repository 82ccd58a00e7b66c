"""The Datasets view against a real controller (issue 20): a folder uploaded as versions, its tree shown, an image and
a text file previewed, versions switched, built-ins listed once, a folder version offered to image_classifier in the
submit dialog; every call to the controller and every decode runs off the GUI thread (a slow read leaves the window
answering)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QMessageBox

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_agent.workloads.datasets import BUILTIN
from tensorfleet_desktop.client import AsyncClient
from tensorfleet_desktop.ui import dataset_preview
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.main_window import MainWindow

pytestmark = pytest.mark.slow
WAIT_MS = 30_000
NETWORK = ("datasets", "dataset", "read_dataset_file", "upload_dataset_version", "delete_dataset")


@pytest.fixture(scope="module")
def window(
    gui_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MainWindow]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
        create_application()
        win = build_window(gui_cluster[0].address, data_dir=tmp_path_factory.mktemp("gui-data"), autostart=False)
        win.show()
        win.bridge.start()
        yield win
        win.close()


def image(path: Path, width: int, height: int, color: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = QImage(width, height, QImage.Format.Format_RGB32)
    picture.fill(QColor(color))
    assert picture.save(str(path), "PNG")


def test_a_folder_its_versions_tree_and_previews(
    qtbot: Any, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[tuple[str, str]] = []  # (what ran, on which thread)
    main = threading.main_thread().name
    for name in NETWORK:
        real = getattr(AsyncClient, name)

        def recorded(self: AsyncClient, *args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            threads.append((_name, threading.current_thread().name))
            return _real(self, *args, **kw)

        monkeypatch.setattr(AsyncClient, name, recorded)
    real_decode = dataset_preview.decode

    def decode(*args: Any) -> Any:
        threads.append(("decode", threading.current_thread().name))
        return real_decode(*args)

    monkeypatch.setattr(dataset_preview, "decode", decode)

    folder = tmp_path / "pets"
    image(folder / "cats" / "0.png", 40, 30, "orange")
    image(folder / "dogs" / "0.png", 20, 20, "brown")
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("two classes of pets\n" * 3)
    view = window.datasets
    window.show_view(view)
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    view.upload(folder, "gui-pets")
    qtbot.waitUntil(lambda: view.shown_ref == "gui-pets:1" and len(view.tree.files) == 3, timeout=WAIT_MS)
    assert view.tree.folders() == ["cats", "dogs", "notes"]
    row = view.selected()
    assert row is not None and (row["name"], row["latest_version"], row["builtin"]) == ("gui-pets", 1, False)
    assert view.model.columns[1].text(row) == "upload" and view.model.columns[4].text(row) == "3"
    assert "gui-pets:1 · upload" in view.version_info.text()

    # built-ins: each listed once, marked (the controller lists them; the view no longer adds its own on top)
    names = [r["name"] for r in view.model.rows]
    for d in BUILTIN:
        assert names.count(d.name) == 1
        assert view.model.rows[names.index(d.name)]["builtin"]
        assert view.model.columns[1].text(view.model.rows[names.index(d.name)]) == "builtin"

    # an image: its bytes fetched and decoded off the GUI thread, shown as a pixmap
    assert view.tree.select_path("cats/0.png")
    qtbot.waitUntil(lambda: view.pane.shown is not None and view.pane.shown.path == "cats/0.png", timeout=WAIT_MS)
    assert view.pane.shown.kind == "image" and view.pane.shown.image_size == (40, 30)
    pixmap = view.pane.image.pixmap()
    assert not pixmap.isNull() and (pixmap.width(), pixmap.height()) == (40, 30)
    assert "40 x 30 pixels" in view.preview_label.text()

    # text, read slowly: the window keeps answering meanwhile (nothing waits on the network)
    slow_read = AsyncClient.read_dataset_file

    async def slow(self: AsyncClient, *args: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.8)
        return await slow_read(self, *args, **kw)

    monkeypatch.setattr(AsyncClient, "read_dataset_file", slow)
    started = time.monotonic()
    assert view.tree.select_path("notes/readme.txt")
    assert time.monotonic() - started < 0.3 and "loading" in view.preview_label.text()
    qtbot.waitUntil(lambda: view.pane.shown is not None and view.pane.shown.kind == "text", timeout=WAIT_MS)
    assert view.pane.text.toPlainText() == "two classes of pets\n" * 3
    monkeypatch.setattr(AsyncClient, "read_dataset_file", slow_read)

    # a second version: the picker offers both, newest first; switching shows the older tree
    image(folder / "dogs" / "1.png", 20, 20, "black")
    view.upload(folder, "gui-pets")
    qtbot.waitUntil(lambda: view.shown_ref == "gui-pets:2" and len(view.tree.files) == 4, timeout=WAIT_MS)
    assert [view.versions.itemData(i) for i in range(view.versions.count())] == [2, 1]
    view.select_version(1)
    qtbot.waitUntil(lambda: view.shown_ref == "gui-pets:1" and len(view.tree.files) == 3, timeout=WAIT_MS)
    assert "dogs/1.png" not in view.tree.files and not view.tree.more_cursor()

    # Use in a new job: image_classifier with gui-pets:1 (a folder version; tables are not offered to it)
    view.use_button.click()
    qtbot.waitUntil(lambda: window.jobs.dialog is not None and window.jobs.dialog.isVisible(), timeout=WAIT_MS)
    dialog = window.jobs.dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.dataset.currentData() == "gui-pets:1", timeout=WAIT_MS)
    assert dialog.current_workload()["name"] == "image_classifier"
    offered = [dialog.dataset.itemData(i) for i in range(dialog.dataset.count())]
    assert offered[:2] == ["gui-pets:2", "gui-pets:1"] and offered[-1] == ""
    assert dialog.ok_button.isEnabled(), dialog.error_label.text()
    assert dialog.spec()["dataset"] == "gui-pets:1"
    dialog.reject()

    # delete version 1: gone from the picker, version 2 shown
    monkeypatch.setattr(QMessageBox, "question", lambda *_a: QMessageBox.StandardButton.Yes)
    view.ask_delete_version()
    qtbot.waitUntil(lambda: view.versions.count() == 1 and view.shown_ref == "gui-pets:2", timeout=WAIT_MS)

    ran = {what for what, _thread in threads}
    assert {"dataset", "read_dataset_file", "upload_dataset_version", "decode", "delete_dataset"} <= ran
    assert all(thread != main for _what, thread in threads), threads


def test_a_parquet_table_is_previewed_as_rows(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "flowers.parquet"
    parquet.write_table(pa.table({"petal": [1.0, 2.0, 3.0], "kind": ["a", "b", "a"]}), path)
    view = window.datasets
    window.show_view(view)
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    view.upload(path, "gui-flowers")
    qtbot.waitUntil(lambda: view.pane.shown is not None and view.pane.shown.ref == "gui-flowers:1", timeout=WAIT_MS)
    assert view.pane.shown.kind == "table" and view.preview.rowCount() == 3
    assert [view.preview.horizontalHeaderItem(i).text() for i in range(2)] == ["petal", "kind"]
