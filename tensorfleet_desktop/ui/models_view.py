"""Models: the registry browser (filter, pages, versions, lineage), aliases, download, delete, statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import best_metric, clock, human_bytes, metric_text
from tensorfleet_desktop.ui.plots import BarChart
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View, attach_empty_state
from tensorfleet_desktop.ui.widgets import action_button, add_row_menu, data_table, menu_action

PAGE_SIZE = 50
FORMATS = ("native", "skops", "safetensors", "onnx", "joblib", "pickle")
NO_MODELS = (
    "No models yet.\nTrain a job (Jobs → Submit…, Ctrl+N, or the welcome page's demo jobs): "
    "every job that succeeds registers its model here."
)
NO_MATCH = "No model version matches these filters."


def ref_of(model: dict[str, Any]) -> str:
    return f"{model['name']}:{model['version']}"


class ModelsView(View):
    title = "Models"
    icon = "models"
    open_job = Signal(str)

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.page = 1
        self.pages = 1
        self.total = 0
        self._listing = 0  # the latest listing asked for: an earlier one answering late is dropped
        self.filters: dict[str, QLineEdit] = {}
        bar = QHBoxLayout()
        for key, hint in (
            ("name", "name"),
            ("algorithm", "algorithm"),
            ("tag", "tag"),
            ("alias", "alias"),
            ("min_metric", "metric>=, e.g. test_accuracy=0.9"),
        ):
            edit = QLineEdit()
            edit.setObjectName(f"filter_{key}")
            edit.setPlaceholderText(hint)
            edit.returnPressed.connect(self.search)
            self.filters[key] = edit
            bar.addWidget(edit, 2 if key == "min_metric" else 1)
        self.search_button = QPushButton("Filter")
        self.search_button.clicked.connect(self.search)
        bar.addWidget(self.search_button)

        self.model = RowTableModel(
            [
                Column("Name", lambda m: m["name"]),
                Column("Version", lambda m: str(m["version"]), sort=lambda m: m["version"]),
                Column("Algorithm", lambda m: m["algorithm"]),
                Column("Aliases", lambda m: ", ".join(m["aliases"])),
                Column("Tags", lambda m: ", ".join(m["tags"])),
                Column("Metric", metric_text, sort=lambda m: (best_metric(m) or ("", 0.0))[1]),
                Column("Dataset", lambda m: m["dataset"].get("name", "")),
                Column("Registered", lambda m: clock(m["created_at"]), sort=lambda m: m["created_at"]),
                Column("Size", lambda m: human_bytes(m["size"]), sort=lambda m: m["size"]),
                Column("Format", lambda m: m["format"]),
                Column(  # MISSING / DAMAGED in the controller's blob store: downloads of it fail
                    "File",
                    lambda m: m.get("blob_status") or "ok",
                    color=lambda m: "#c0392b" if m.get("blob_status") else "",
                ),
            ],
            key=ref_of,
        )
        self.table, self.proxy = data_table(self.model, sort_column=7, descending=True, name="models_table")
        for column, width in ((0, 200), (2, 140), (5, 170), (7, 140)):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_detail())
        self.table.doubleClicked.connect(lambda _index: self._open_job())
        add_row_menu(self.table, self._row_actions)
        self.empty = attach_empty_state(self.table, NO_MODELS)

        self.prev_button = QPushButton("◀")
        self.next_button = QPushButton("▶")
        self.page_label = QLabel()
        self.prev_button.clicked.connect(lambda: self.go(self.page - 1))
        self.next_button.clicked.connect(lambda: self.go(self.page + 1))
        self.promote_button = action_button("Promote…", "point an alias (e.g. production) at this version")
        self.tag_button = action_button("Tag…")
        self.download_button = action_button("Download…", "save the model file (native, or an export format)")
        self.delete_button = action_button("Delete", "delete this version")
        self.job_button = action_button("Open job", "the job that trained this version")
        self.promote_button.clicked.connect(self.ask_promote)
        self.tag_button.clicked.connect(self.ask_tag)
        self.download_button.clicked.connect(self.ask_download)
        self.delete_button.clicked.connect(self.ask_delete)
        self.job_button.clicked.connect(self._open_job)
        actions = QHBoxLayout()
        for w in (self.promote_button, self.tag_button, self.download_button, self.delete_button, self.job_button):
            actions.addWidget(w)
        actions.addStretch(1)
        actions.addWidget(self.prev_button)
        actions.addWidget(self.page_label)
        actions.addWidget(self.next_button)

        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setObjectName("model_detail")
        self.format = QComboBox()
        self.format.addItems(list(FORMATS))
        browser = QWidget()
        browser_layout = QVBoxLayout(browser)
        browser_layout.addLayout(bar)
        browser_layout.addLayout(actions)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setSizes([380, 200])
        browser_layout.addWidget(split, 1)

        self.count_chart = BarChart()
        self.accuracy_chart = BarChart()
        self.stats_label = QLabel()
        stats = QWidget()
        stats_layout = QVBoxLayout(stats)
        stats_layout.addWidget(self.stats_label)
        charts = QVBoxLayout()  # one above the other: each bar gets the tab's width for its algorithm's name
        charts.addWidget(self.count_chart)
        charts.addWidget(self.accuracy_chart)
        self._bar_labels: list[str] = []
        for chart in (self.count_chart, self.accuracy_chart):
            chart.installEventFilter(self)
        stats_layout.addLayout(charts, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(browser, "Registry")
        self.tabs.addTab(stats, "Statistics")
        self.tabs.currentChanged.connect(lambda i: self.load_stats() if i == 1 else None)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        bridge.job_finished.connect(lambda job: self.search() if job.get("model") else None)
        bridge.connected.connect(lambda _info: self.search())
        self._update_buttons()

    def activated(self) -> None:
        self.search()

    def refresh(self) -> None:
        self.go(self.page)

    def focus_filter(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.filters["name"].setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filters["name"].selectAll()

    # ---- listing

    def search(self) -> None:
        self.go(1)

    def go(self, page: int) -> None:
        page = max(1, page)
        query = {k: e.text().strip() for k, e in self.filters.items()}
        self._listing += 1
        listing = self._listing

        def latest_only(result: dict[str, Any]) -> None:
            if listing == self._listing:
                self.show_page(result)

        self.run(lambda c: c.models(page=page, limit=PAGE_SIZE, **query), latest_only, "cannot list models")

    def show_page(self, result: dict[str, Any]) -> None:
        pagination = result["pagination"]
        self.page, self.pages, self.total = pagination["page"], max(1, pagination["pages"]), pagination["total"]
        filtered = any(e.text().strip() for e in self.filters.values())
        self.empty.set_text(NO_MATCH if filtered else NO_MODELS)
        self.model.set_rows(result["models"])
        self.page_label.setText(f"page {self.page}/{self.pages} · {self.total} versions")
        self.prev_button.setEnabled(self.page > 1)
        self.next_button.setEnabled(self.page < self.pages)
        self._show_detail()

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ROW_ROLE) if rows else None

    def select(self, ref: str) -> None:
        position = self.model.find(ref)
        if position >= 0:
            self.table.selectRow(self.proxy.mapFromSource(self.model.index(position, 0)).row())

    def _update_buttons(self) -> None:
        chosen = self.selected() is not None
        for b in (self.promote_button, self.tag_button, self.download_button, self.delete_button, self.job_button):
            b.setEnabled(chosen)

    def _show_detail(self) -> None:
        self._update_buttons()
        m = self.selected()
        if m is None:
            self.detail.setPlainText("")
            return
        lines = [
            f"{ref_of(m)}  ({m['algorithm']}, {m['format']}, {human_bytes(m['size'])}, sha256 {m['sha256'][:16]}…)",
            *([f"file: {m['blob_status']} in the controller's blob store"] if m.get("blob_status") else []),
            f"aliases: {', '.join(m['aliases']) or '-'}    tags: {', '.join(m['tags']) or '-'}",
            f"description: {m['description'] or '-'}",
            f"trained by job {m['job_id']} on {m['dataset'].get('name', '-')}"
            + (f" (sha256 {m['dataset']['sha256'][:12]})" if m["dataset"].get("sha256") else "")
            + f", split seed {m['dataset'].get('split_seed', '-')}",
            "metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(m["metrics"].items())),
            "hyperparameters: " + json.dumps(m["hyperparameters"], sort_keys=True),
            "framework: " + ", ".join(f"{k} {v}" for k, v in sorted(m["framework_versions"].items())),
            f"features: {', '.join(m['feature_names'][:30])}{' …' if len(m['feature_names']) > 30 else ''}",
            f"classes: {', '.join(m['classes'][:30])}",
        ]
        self.detail.setPlainText("\n".join(lines))

    # ---- actions

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[Any]:
        one = len(rows) == 1
        return [
            menu_action("Open job", self._open_job, one and bool(rows[0]["job_id"])),
            None,
            menu_action("Promote…", self.ask_promote, one),
            menu_action("Tag…", self.ask_tag, one),
            menu_action("Download…", self.ask_download, one),
            None,
            menu_action("Delete…", self.ask_delete, one),
        ]

    def _open_job(self) -> None:
        m = self.selected()
        if m is not None and m["job_id"]:
            self.open_job.emit(m["job_id"])

    def ask_promote(self) -> None:
        m = self.selected()
        if m is None:
            return
        alias, ok = QInputDialog.getText(self, "Promote", f"Alias for {ref_of(m)}:", text="production")
        if ok and alias.strip():
            self.promote(ref_of(m), alias.strip())

    def promote(self, ref: str, alias: str) -> None:
        self.run(lambda c: c.set_alias(ref, alias), lambda _m: self._changed(f"{ref} is now @{alias}"), "promote")

    def ask_tag(self) -> None:
        m = self.selected()
        if m is None:
            return
        tag, ok = QInputDialog.getText(self, "Tag", f"Tag for {ref_of(m)}:")
        if ok and tag.strip():
            ref = ref_of(m)
            self.run(lambda c: c.tag_model(ref, tag.strip()), lambda _m: self._changed(f"tagged {ref}"), "tag")

    def ask_download(self) -> None:
        m = self.selected()
        if m is None:
            return
        fmt, ok = QInputDialog.getItem(self, "Download", "Format:", list(FORMATS), 0, False)
        if not ok:
            return
        suffix = {"native": m["format"], "joblib": "joblib", "pickle": "pkl"}.get(fmt, fmt)
        path, _ = QFileDialog.getSaveFileName(self, "Save model", f"{m['name']}-{m['version']}.{suffix}")
        if path:
            self.download(ref_of(m), Path(path), "" if fmt == "native" else fmt)

    def download(self, ref: str, path: Path, fmt: str = "") -> None:
        self.run(
            lambda c: c.download_model(ref, path, fmt),
            lambda r: self.notify(f"saved {ref} to {path} ({human_bytes(r['size'])}, sha256 verified)", False),
            f"cannot download {ref}",
        )

    def ask_delete(self) -> None:
        m = self.selected()
        if m is None:
            return
        ref = ref_of(m)
        answer = QMessageBox.question(self, "Delete model version", f"Delete {ref}? Its file is freed by gc.")
        if answer == QMessageBox.StandardButton.Yes:
            force = bool(m["aliases"])
            self.run(lambda c: c.delete_model(ref, force), lambda _m: self._changed(f"deleted {ref}"), "delete")

    def _changed(self, message: str) -> None:
        self.notify(message, False)
        self.go(self.page)

    # ---- statistics

    def load_stats(self) -> None:
        self.run(lambda c: c.model_stats(), self.show_stats, "cannot load model statistics")

    def show_stats(self, stats: dict[str, Any]) -> None:
        rows = stats["algorithm_stats"]
        self.stats_label.setText(f"{stats['total_models']} model versions in the registry")
        labels = [r["algorithm"] for r in rows]
        self._bar_labels = labels
        self.count_chart.show_bars(labels, [float(r["count"]) for r in rows], "versions per algorithm")
        self.accuracy_chart.show_bars(
            labels, [float(r["best_accuracy"] or 0.0) for r in rows], "best test accuracy per algorithm"
        )
        for chart in (self.count_chart, self.accuracy_chart):
            self._fit_bar_labels(chart)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize and watched in (self.count_chart, self.accuracy_chart):
            self._fit_bar_labels(watched)
        return super().eventFilter(watched, event)

    def _fit_bar_labels(self, chart: BarChart) -> None:
        """pyqtgraph cannot rotate tick labels and draws them over each other (`gradient_boostlogistic_regression`):
        each name is elided to its bar's slot, the full names are in the chart's tooltip."""
        labels = self._bar_labels
        if not labels:
            chart.setToolTip("")
            return
        slot = shortened_width(chart.width(), len(labels))
        shown = elide_labels(labels, QFontMetrics(chart.font()), slot)
        chart.plotItem.getAxis("bottom").setTicks([list(enumerate(shown))])
        chart.setToolTip(
            "\n".join(f"{s}: {full}" if s != full else full for s, full in zip(shown, labels, strict=True))
        )


def shortened_width(chart_width: int, bars: int) -> int:
    """The px a bar's label may take: the plot's width (less the value axis) over the bars, less a gap."""
    return max(24, (chart_width - 60) // max(1, bars) - 8)


def elide_labels(labels: list[str], metrics: QFontMetrics, width: int) -> list[str]:
    """Each label as it fits `width` px: whole when it fits, else cut at the end with an ellipsis."""
    return [metrics.elidedText(label, Qt.TextElideMode.ElideRight, width) for label in labels]
