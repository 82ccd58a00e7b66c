"""Settings: which controller, where the local controller keeps its data (embedded or MongoDB + MinIO),
the telemetry period of a controller the app starts, and the theme.

App preferences live in QSettings; store and blob URIs go to the controller's config.toml (mode 0600),
read when that controller starts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from tensorfleet_desktop.controller.settings import FileSettings, check_backends, load_settings, save_settings
from tensorfleet_desktop.local_cluster import AddressCheck, check_address
from tensorfleet_desktop.ui import theme as themes
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import guard_wheel

THEMES = themes.THEMES
THEME_LABELS = {"system": "System (follow the OS)", "light": "Light", "dark": "Dark"}


def app_settings() -> QSettings:
    return QSettings("TensorFleet", "tensorfleet")


def apply_theme(theme: str) -> bool:
    """Kept for callers of the old name: theme.apply (palette, style, plots); returns whether the result is dark."""
    return themes.apply(theme)


class SettingsView(View):
    title = "Settings"
    icon = "settings"

    def __init__(self, bridge: Bridge, notify: Notify, data_dir: Path) -> None:
        super().__init__(bridge, notify)
        self.data_dir = data_dir
        self.config_path = data_dir / "config.toml"
        prefs = app_settings()

        controller = QGroupBox("Controller")
        form = QFormLayout(controller)
        self.address = QLineEdit(bridge.address)
        self.address.setObjectName("controller_address")
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(self.connect_to)
        self.use_anyway_button = QPushButton("Use anyway")  # shown when the check found no controller
        self.use_anyway_button.setObjectName("use_anyway")
        self.use_anyway_button.clicked.connect(self._use_anyway)
        self.use_anyway_button.hide()
        row = QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(self.connect_button)
        row.addWidget(self.use_anyway_button)
        form.addRow("Address (HOST:PORT)", row)
        self.check_result = QLabel()  # what the check of a typed address found
        self.check_result.setObjectName("address_check")
        self.check_result.setWordWrap(True)
        form.addRow("", self.check_result)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._checked = ""  # the address the last check found no controller at
        form.addRow("", self.status)
        self.telemetry = QDoubleSpinBox()
        self.telemetry.setRange(0.2, 60.0)
        self.telemetry.setSingleStep(0.5)
        self.telemetry.setSuffix(" s")
        self.telemetry.setValue(float(prefs.value("telemetry_period", 1.0)))  # type: ignore[arg-type]
        self.telemetry.valueChanged.connect(lambda v: app_settings().setValue("telemetry_period", v))
        guard_wheel(self.telemetry)
        form.addRow("Telemetry period (controllers this app starts)", self.telemetry)

        storage = QGroupBox(f"Storage of the local controller ({self.config_path})")
        store_form = QFormLayout(storage)
        self.embedded = QRadioButton("Embedded: SQLite + files in the data dir")
        self.external = QRadioButton("MongoDB + S3 / MinIO")
        group = QButtonGroup(self)
        group.addButton(self.embedded)
        group.addButton(self.external)
        self.store_uri = QLineEdit()
        self.store_uri.setObjectName("store_uri")
        self.store_uri.setPlaceholderText("mongodb://user:password@db.lan:27017/tensorfleet")
        self.blobs_uri = QLineEdit()
        self.blobs_uri.setObjectName("blobs_uri")
        self.blobs_uri.setPlaceholderText("s3://models?endpoint=minio.lan:9000&secure=false")
        self.access_key = QLineEdit()
        self.secret_key = QLineEdit()
        self.secret_key.setEchoMode(QLineEdit.EchoMode.Password)
        store_form.addRow(self.embedded)
        store_form.addRow(self.external)
        store_form.addRow("Store URI", self.store_uri)
        store_form.addRow("Blobs URI", self.blobs_uri)
        store_form.addRow("S3 access key", self.access_key)
        store_form.addRow("S3 secret key", self.secret_key)
        self.test_button = QPushButton("Test connection")
        self.save_button = QPushButton("Save")
        self.test_button.clicked.connect(self.test_connection)
        self.save_button.clicked.connect(self.save)
        row = QHBoxLayout()
        row.addWidget(self.test_button)
        row.addWidget(self.save_button)
        row.addStretch(1)
        store_form.addRow(row)
        self.test_result = QLabel()
        self.test_result.setObjectName("test_result")
        self.test_result.setWordWrap(True)
        store_form.addRow(self.test_result)
        self.embedded.toggled.connect(self._mode_changed)

        look = QGroupBox("Appearance")
        look_form = QFormLayout(look)
        self.theme = QComboBox()
        self.theme.setObjectName("theme")
        for name in THEMES:
            self.theme.addItem(THEME_LABELS[name], name)
        self.theme.setCurrentIndex(max(0, self.theme.findData(str(prefs.value("theme", "system")))))
        self.theme.currentIndexChanged.connect(lambda _i: self._theme_changed(str(self.theme.currentData())))
        guard_wheel(self.theme)
        look_form.addRow("Theme", self.theme)

        layout = QVBoxLayout(self)
        layout.addWidget(controller)
        layout.addWidget(storage)
        layout.addWidget(look)
        layout.addStretch(1)
        self._load_config()
        bridge.connected.connect(self._connected)
        bridge.disconnected.connect(lambda why: self.status.setText(f"not connected: {why}"))

    def _connected(self, info: dict[str, object]) -> None:
        details = info["info"]
        assert isinstance(details, dict)
        self.status.setText(
            f"{info['message']} · version {details.get('version', '?')} · store {details.get('store', '?')} · "
            f"blobs {details.get('blobs', '?')}"
        )

    def _load_config(self) -> None:
        current = FileSettings()
        if self.config_path.exists():
            try:
                current = load_settings(self.config_path)
            except ValueError as exc:
                self.test_result.setText(str(exc))
        self._loaded = current  # what this form does not show ([http]) is saved back as it was
        self.store_uri.setText(current.store_uri)
        self.blobs_uri.setText(current.blobs_uri)
        self.access_key.setText(current.s3_access_key)
        self.secret_key.setText(current.s3_secret_key)
        (self.external if current.store_uri or current.blobs_uri else self.embedded).setChecked(True)
        self._mode_changed()

    def _mode_changed(self) -> None:
        external = self.external.isChecked()
        for w in (self.store_uri, self.blobs_uri, self.access_key, self.secret_key):
            w.setEnabled(external)

    def form_settings(self) -> FileSettings:
        """The loaded settings with this form's store and blob fields (the rest of the file, [http], kept)."""
        if not self.external.isChecked():
            return replace(self._loaded, store_uri="", blobs_uri="", s3_access_key="", s3_secret_key="")
        return replace(
            self._loaded,
            store_uri=self.store_uri.text().strip(),
            blobs_uri=self.blobs_uri.text().strip(),
            s3_access_key=self.access_key.text().strip(),
            s3_secret_key=self.secret_key.text(),
        )

    def connect_to(self) -> None:
        """Check the address first (off the GUI thread); save it and connect only when a controller answers."""
        address = self.address.text().strip()
        host, sep, port = address.rpartition(":")
        self.use_anyway_button.hide()
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.check_result.setText(f"{address!r} is not HOST:PORT")
            return
        self.check_result.setText(f"checking {address}…")
        self.connect_button.setEnabled(False)
        self.bridge.run_blocking(
            lambda: check_address(address),
            self._checked_address,
            lambda error: self._checked_address(AddressCheck(address, "unreachable", error)),
        )

    def _checked_address(self, found: AddressCheck) -> None:
        self.connect_button.setEnabled(True)
        if found.address != self.address.text().strip():
            return  # the user typed another address meanwhile
        if found.answering:
            self._use(found.address, f"{found.describe()}; connecting…")
            return
        self._checked = found.address
        self.check_result.setText(f"{found.describe()}. Not saved.")
        self.use_anyway_button.show()

    def _use_anyway(self) -> None:
        if self._checked and self._checked == self.address.text().strip():
            self._use(self._checked, f"saved {self._checked} although no controller answered; retrying there…")

    def _use(self, address: str, message: str) -> None:
        self.use_anyway_button.hide()
        app_settings().setValue("controller", address)
        self.check_result.setText(message)
        self.bridge.reconnect(address)

    def test_connection(self) -> None:
        settings = self.form_settings()
        self.test_result.setText("testing…")
        self.bridge.run_blocking(
            lambda: check_backends(settings, self.data_dir),
            lambda lines: self.test_result.setText("\n".join(lines)),
            lambda error: self.test_result.setText(f"failed: {error}"),
        )

    def save(self) -> None:
        settings = self.form_settings()
        if self.external.isChecked() and not (settings.store_uri or settings.blobs_uri):
            self.test_result.setText("name a store URI or a blobs URI, or choose Embedded")
            return
        try:
            save_settings(self.config_path, settings)
        except OSError as exc:
            self.test_result.setText(f"cannot write {self.config_path}: {exc.strerror}")
            return
        self.test_result.setText(f"saved to {self.config_path}; the local controller uses it from its next start")
        self.notify("settings saved", False)

    def _theme_changed(self, theme: str) -> None:
        """Saved and applied at once (the window's apply_theme when it has one, so it can restyle its own parts)."""
        app_settings().setValue("theme", theme)
        apply = getattr(self.window(), "apply_theme", None)
        if callable(apply):
            apply(theme)
        else:
            themes.apply(theme)
