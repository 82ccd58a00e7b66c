"""GUI tests run offscreen: no display is needed (and none exists in CI)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
