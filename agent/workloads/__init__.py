"""Built-in workloads and their parameter schemas."""

from tensorfleet_agent.workloads.registry import WorkloadDef, available_workloads, get_workload

__all__ = ["WorkloadDef", "available_workloads", "get_workload"]
