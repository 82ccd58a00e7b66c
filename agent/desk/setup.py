"""Which owner-activity signals this machine has: X11 where a display is named, else logind where loginctl is;
GPU memory of other processes where NVML sees GPUs; CPU of other processes always."""

from __future__ import annotations

import os
import shutil

from tensorfleet_agent.desk.cpu_use import CpuUse
from tensorfleet_agent.desk.gpu_use import GpuProcessReader, GpuUse
from tensorfleet_agent.desk.logind import LogindIdle
from tensorfleet_agent.desk.monitor import DeskConfig, agent_pids
from tensorfleet_agent.desk.signals import ActivitySignal
from tensorfleet_agent.desk.x11 import X11Idle


def desk_signals(config: DeskConfig, gpus: GpuProcessReader) -> list[ActivitySignal]:
    signals: list[ActivitySignal] = []
    display = config.display or os.environ.get("DISPLAY", "")
    if display:
        signals.append(X11Idle(display))
    elif shutil.which("loginctl"):
        signals.append(LogindIdle())
    signals.append(GpuUse(gpus, config.gpu_memory_bytes, agent_pids))
    signals.append(CpuUse(config.cpu_percent, agent_pids))
    return signals
