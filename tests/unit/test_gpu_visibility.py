"""An agent started inside a Slurm allocation or a container sees every GPU through NVML, but may use only those its
own CUDA_VISIBLE_DEVICES names (Slurm's GRES): it advertises and hands out only those, by their NVML index."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.runtime.gpus import Gpus, allowed_gpus

UUIDS = [f"GPU-5f1c{i}aa0-0000-0000-0000-00000000000{i}" for i in range(4)]
FAKE_NVML = Path(__file__).resolve().parents[1] / "helpers" / "fake_nvml" / "pynvml.py"


@pytest.mark.parametrize(
    ("visible", "allowed"),
    [
        (None, [0, 1, 2, 3]),  # not set: every GPU
        ("2,0", [2, 0]),
        (" 3 ", [3]),
        (UUIDS[1], [1]),
        (UUIDS[2][:12], [2]),  # a unique UUID prefix, as CUDA takes it
        ("", []),  # set but empty: none (CUDA sees none either)
        ("-1", []),
        ("1,7,2", [1]),  # CUDA stops at the first entry it cannot use
        ("1,1", [1]),
        ("GPU-5f", []),  # too short to name one
    ],
)
def test_the_gpus_an_agent_may_use(visible: str | None, allowed: list[int]) -> None:
    assert allowed_gpus(visible, UUIDS) == allowed


def test_inventory_and_readings_keep_the_nvml_index_of_the_allowed_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_NVML)
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("TENSORFLEET_FAKE_GPUS", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-fake-1")
    gpus = Gpus()
    assert [g.index for g in gpus.inventory()] == [3, 1]
    assert [g.uuid for g in gpus.inventory()] == ["GPU-fake-3", "GPU-fake-1"]
    assert [t.index for t in gpus.sample()] == [3, 1]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [g.index for g in Gpus().inventory()] == [0, 1, 2, 3]
