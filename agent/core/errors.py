"""Errors that carry enough context to become a clear gRPC status."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the errors an RPC maps to a status code."""


class ValidationError(AgentError):
    """A request field is missing, malformed or out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ResourcesExhausted(AgentError):
    """No free slot fits the task right now."""


class ProtocolMismatch(AgentError):
    """The peer speaks a protocol version this agent does not."""


class NotFound(AgentError):
    """The task or blob asked for is unknown here."""


class AlreadyExists(AgentError):
    """A different task with the same id was already accepted."""


class PermissionDenied(AgentError):
    """Pairing or authentication refused."""


class Unavailable(AgentError):
    """The agent is draining or shutting down and takes no new work."""
