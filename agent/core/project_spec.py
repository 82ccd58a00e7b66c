"""A project job's command and env choice (issue 19), checked by one function each wherever they are typed or
received: the controller's job spec (the authority), the SDK, the CLI and the GUI (the same words, before anything
is uploaded) and the agent's project workload. Pure (no I/O): every layer may import it.

Both raise core.errors.ValidationError: `field` names what is wrong ("command", "command[2]", "env"), `message`
says why in words a user can act on.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import check_path

MAX_COMMAND_ARGS = 256  # a project job's command: 1 to this many strings
MAX_COMMAND_ARG = 32 * 1024  # characters in one of them
ENV_CHOICES = ("auto", "none")  # besides a requirement file of the project
COMMAND_EXAMPLE = "python -m mypkg.train"


def check_command(command: object, field: str = "command") -> list[str]:
    """The command as a list of strings: one string is split as a shell would (shlex); a list or tuple must hold
    strings. Refused: nothing to run, an empty program name, more than MAX_COMMAND_ARGS words, a word over
    MAX_COMMAND_ARG characters or holding a NUL."""
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ValidationError(field, f"cannot be split into arguments: {exc}") from None
    if command is None or (isinstance(command, Sequence) and not isinstance(command, bytes) and len(command) == 0):
        raise ValidationError(field, f"is empty: say what runs in the project folder, e.g. {COMMAND_EXAMPLE}")
    if not isinstance(command, list | tuple):
        raise ValidationError(field, f"must be a list of strings or one string, got {type(command).__name__}")
    for i, word in enumerate(command):
        if not isinstance(word, str):
            raise ValidationError(f"{field}[{i}]", f"must be a string, got {word!r:.80}")
        if len(word) > MAX_COMMAND_ARG:
            raise ValidationError(f"{field}[{i}]", f"is {len(word)} characters long; at most {MAX_COMMAND_ARG}")
        if "\x00" in word:
            raise ValidationError(f"{field}[{i}]", "holds a NUL character")
    if len(command) > MAX_COMMAND_ARGS:
        raise ValidationError(field, f"has {len(command)} arguments; at most {MAX_COMMAND_ARGS} allowed")
    if not command[0].strip():
        raise ValidationError(field, "starts with an empty program name")
    return list(command)


def check_env_choice(env: object, field: str = "env") -> str:
    """ "auto", "none", or the path of a requirement file relative to the project folder (no absolute path, no
    '..'). Whether the project holds that file is for whoever has its file list to say."""
    if env in ENV_CHOICES:
        return str(env)
    if not isinstance(env, str) or not env.strip():
        raise ValidationError(field, f'must be "auto", "none" or a requirement file of the project, got {env!r:.80}')
    return check_path(env, field)
