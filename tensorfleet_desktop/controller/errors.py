"""The controller core's own errors. The wire layer turns them into status codes in one table (rpc_errors.py);
the core never names a gRPC status."""

from __future__ import annotations


class JobError(Exception):
    """A job request that cannot be honoured in the job's current state."""


class NotFoundError(Exception):
    """No job, artifact or dataset by that name."""


class AgentCallError(Exception):
    """A call to an agent failed; the message is the agent's (or the network's) own words."""


class AgentBusy(AgentCallError):
    """The agent could not take the call now (no connection, no free slot, too slow): try it elsewhere or later,
    never count it against the task. `maybe_done`: the call may have reached the agent and been carried out all
    the same (it timed out, or the connection broke while it was under way); False: the agent said no."""

    def __init__(self, message: str, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done


class TaskUnknown(AgentCallError):
    """The agent no longer knows the attempt (its journal lost it): the attempt is over."""
