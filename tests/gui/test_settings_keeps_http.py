"""Saving the store/blobs form of Settings keeps what the form does not show: a user's [http] section of the
controller's config file (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from tensorfleet_desktop.controller.settings import FileSettings, load_settings, save_settings
from tensorfleet_desktop.ui.settings_view import SettingsView


def test_saving_the_store_form_keeps_the_http_section(qtbot: Any, bridge: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_settings(path, FileSettings(store_uri="sqlite:///old.db", http_port=8080, http_host="0.0.0.0"))
    view = SettingsView(bridge, lambda *_: None, tmp_path)
    qtbot.addWidget(view)
    view.store_uri.setText("sqlite:///new.db")
    view.save()
    assert load_settings(path) == FileSettings(store_uri="sqlite:///new.db", http_port=8080, http_host="0.0.0.0")
    view.embedded.setChecked(True)  # back to the embedded store: the URIs go, [http] stays
    view.save()
    assert load_settings(path) == FileSettings(http_port=8080, http_host="0.0.0.0")
