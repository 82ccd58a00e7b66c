"""The batch script of a pool's allocation: one tensorfleet-agent per allocated node, joining this controller.

`srun` starts one agent per node (N nodes for a gang of N ranks); each serves on a port of its own choosing, joins
with the allocation's credential (in the environment, never on a command line), takes its GPUs from Slurm's GRES
(CUDA_VISIBLE_DEVICES) and its CPU slots from the allocation's CPUs, keeps its data in a directory of its own on the
node (removed when it exits), and exits after the pool's idle timeout without work: when every agent has exited the
script ends, and with it the allocation. Slurm's time limit or a preemption reaches the agents as SIGTERM.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from tensorfleet_desktop.controller.jobspec import POOL_LABEL
from tensorfleet_desktop.controller.pools.settings import PoolSettings

CREDENTIAL_VAR = "TENSORFLEET_JOIN_CREDENTIAL"  # = tensorfleet_agent.security.join_credential.ENV_VAR
DATA_ROOT_VAR = "TENSORFLEET_POOL_DATA_ROOT"  # where on a node the agents' data dirs go (default $TMPDIR or /tmp)


def sbatch_args(pool: PoolSettings, nodes: int) -> list[str]:
    """sbatch's options for an allocation of `nodes` nodes of the pool: one agent task per node."""
    args = [
        f"--job-name={pool.job_name}",
        f"--partition={pool.partition}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--output=/dev/null",  # the agents log nothing the controller lacks; a pool's --output=PATH comes later
    ]
    if pool.account:
        args.append(f"--account={pool.account}")
    if pool.time_limit:
        args.append(f"--time={pool.time_limit}")
    return [*args, *pool.sbatch_args]


def batch_script(
    pool: PoolSettings, controller: str, credential: str, agent_command: Sequence[str], log_level: str = "INFO"
) -> str:
    agent = " ".join(shlex.quote(part) for part in agent_command)
    flags = " ".join(
        shlex.quote(f)
        for f in (
            "--join", controller,
            "--exit-when-idle", f"{pool.idle_timeout_seconds:g}",
            "--label", f"{POOL_LABEL}={pool.name}",
            "--log-level", log_level,
        )
    )  # fmt: skip
    node = f"""set -u
dir="${{{DATA_ROOT_VAR}:-${{TMPDIR:-/tmp}}}}/tensorfleet-agent-$SLURM_JOB_ID-$SLURMD_NODENAME"
slots=$(( ${{SLURM_CPUS_ON_NODE:-4}} / 4 )); [ "$slots" -ge 1 ] || slots=1
trap 'kill -TERM $agent 2>/dev/null; wait $agent' TERM
{agent} --host 0.0.0.0 --port 0 --no-advertise --name "$SLURMD_NODENAME-$SLURM_JOB_ID" --data-dir "$dir" \\
  --cpu-slots "$slots" {flags} &
agent=$!
wait $agent; status=$?
rm -rf "$dir"
exit $status
"""
    return f"""#!/bin/bash
# TensorFleet pool {pool.name}: one agent per allocated node; they exit after {pool.idle_timeout_seconds:g} s without
# work, which ends this allocation. Written by the controller; the credential below expires with the allocation.
export {CREDENTIAL_VAR}={shlex.quote(credential)}
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --kill-on-bad-exit=0 bash -c {shlex.quote(node)}
"""
