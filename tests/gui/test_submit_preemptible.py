"""The submit form's preemption fields (issue 24): "preemptible" follows the priority (below 0) until the user
chooses; the spec says it only when it differs from that default; "allow restart" only with preemptible."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt

from tensorfleet_agent.workloads.registry import all_workloads
from tensorfleet_desktop.controller.jobspec import parse_job_spec
from tensorfleet_desktop.ui.submit_dialog import SubmitDialog


def dialog_for(qtbot: Any) -> SubmitDialog:
    dialog = SubmitDialog([w.to_dict() for w in all_workloads()], [], ["gui-agent-0"], run_blocking=lambda *_a: None)
    qtbot.addWidget(dialog)
    dialog.select_workload("noop")
    return dialog


def test_preemptible_follows_the_priority_until_chosen(qtbot: Any) -> None:
    dialog = dialog_for(qtbot)
    assert not dialog.preemptible.isChecked() and not dialog.allow_restart.isEnabled()
    dialog.priority.setValue(-2)
    assert dialog.preemptible.isChecked() and dialog.allow_restart.isEnabled()
    spec = dialog.spec()
    assert "preemptible" not in spec and parse_job_spec(spec).preemptible  # the parser's default says it
    qtbot.mouseClick(dialog.allow_restart, Qt.MouseButton.LeftButton)
    assert dialog.spec()["allow_restart"] is True and parse_job_spec(dialog.spec()).allow_restart

    qtbot.mouseClick(dialog.preemptible, Qt.MouseButton.LeftButton)  # the user's choice: not preemptible
    dialog.priority.setValue(-5)
    assert not dialog.preemptible.isChecked()
    spec = dialog.spec()
    assert spec["preemptible"] is False and "allow_restart" not in spec
    assert not parse_job_spec(spec).preemptible


def test_gpu_memory_shares_a_gpu_and_a_bad_size_is_named(qtbot: Any) -> None:
    dialog = dialog_for(qtbot)
    dialog.gpu_memory.setText("6GiB")
    parsed = parse_job_spec(dialog.spec())
    assert (parsed.gpus, parsed.gpu_memory) == (1, 6 << 30)
    dialog.gpu_memory.setText("six gigs")
    dialog.validate()
    assert dialog.error_label.text().startswith("gpu_memory:") and "six gigs" in dialog.error_label.text()
    dialog.gpu_memory.setText("")
    dialog.gpus.setValue(2)
    dialog.validate()
    assert "gpu_memory" not in dialog.spec() and dialog.error_label.text() == ""
