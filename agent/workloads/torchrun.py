"""The environment torchrun gives each worker, built from a task's spec, so scripts written for torchrun run as is.

The controller numbers a gang's ranks as torchrun would (the ranks on one agent are a group, in rank order;
groups are ordered by their lowest rank), so RANK == the rank, LOCAL_RANK counts the job's ranks on this agent
and GROUP_RANK the agents. GPUs as torchrun and Ray Train give them: the job's ranks on one agent all see the
group's GPUs in CUDA_VISIBLE_DEVICES (set by the agent when it starts the worker; "" on a CPU slot), in local-rank
order, so a rank's own GPU is cuda:LOCAL_RANK and `torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))` works
(runtime/slots.py GangSlots). If the group's GPUs were not all free when its first rank arrived, a rank sees only
its own GPU (cuda:0).
"""

from __future__ import annotations

import os
import socket
from typing import Any

ROLE_NAME = "default"  # torchrun's role when none is given


def torchrun_env(spec: dict[str, Any]) -> dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, ... for a task spec (the dict a worker gets from task.spec())."""
    rank = int(spec.get("rank", 0))
    world = max(1, int(spec.get("world_size", 1)))
    local_world = int(spec.get("local_world_size", 0))
    if local_world > 0:
        local_rank, group_rank, groups = int(spec["local_rank"]), int(spec["group_rank"]), int(spec["group_world_size"])
    else:  # not told: alone on this agent
        local_rank, local_world, group_rank, groups = 0, 1, rank, world
    rdv = spec.get("rendezvous") or {}
    if rdv:
        master_addr, master_port = str(rdv["master_addr"]), str(rdv["master_port"])
    else:  # one rank: a store of its own on loopback, so init_process_group("gloo") works as under torchrun
        master_addr, master_port = "127.0.0.1", str(_free_port())
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "GROUP_RANK": str(group_rank),
        "GROUP_WORLD_SIZE": str(groups),
        "ROLE_RANK": str(rank),
        "ROLE_WORLD_SIZE": str(world),
        "ROLE_NAME": ROLE_NAME,
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": master_port,
        "TORCHELASTIC_RUN_ID": str(spec.get("job_id", "")),
        # every placement after the first is a restart of the whole gang
        "TORCHELASTIC_RESTART_COUNT": str(max(0, int(spec.get("attempt", 1)) - 1)),
        "TORCHELASTIC_MAX_RESTARTS": str(int(spec.get("max_restarts", 0))),
        "TORCHELASTIC_USE_AGENT_STORE": "False",  # rank 0 hosts the store itself: no agent store here
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
