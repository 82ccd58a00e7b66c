"""The one error of the project snapshot: a message that names the problem and what to do about it."""

from __future__ import annotations


class ProjectError(Exception):
    """DIR cannot be sent as it is; `problems` lists each offending path or fact, the message says what to do."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems
