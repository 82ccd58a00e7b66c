"""A client (the SDK, the CLI's and GUI's connection to a controller) loads no controller, store or Qt code."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("tensorfleet_desktop.controller", "sqlite3", "_sqlite3", "pymongo", "PySide6", "pyqtgraph", "shiboken6")


def test_importing_the_sdk_loads_no_controller_store_or_qt_module() -> None:
    code = "import json, sys; import tensorfleet_desktop.client; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    offenders = [m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)]
    assert not offenders, f"import tensorfleet_desktop.client loads {offenders}"
    assert "tensorfleet_desktop.client" in loaded  # the check looked at a real import
