"""The agent's optional config file (TOML): settings a workstation's owner keeps across restarts, e.g. [desk].

`--config PATH`, else DATA_DIR/agent.toml when it exists. A flag given on the command line wins over the file.
Unknown sections and wrong types are errors that name the file and the key: a typo must not silently lend a
machine its owner meant to keep.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

#: The sections the file may have, each read by the module that owns its settings.
SECTIONS = ("desk",)
FILE_NAME = "agent.toml"


def load_config(path: Path | None, data_dir: Path) -> dict[str, dict[str, object]]:
    """The file's sections (empty when no file is named and DATA_DIR/agent.toml does not exist); ValueError with
    the path and what is wrong otherwise."""
    explicit = path is not None
    file = path if path is not None else data_dir / FILE_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ValueError(f"--config {file}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {file} cannot be read: {exc}") from None
    try:
        body = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {file} is not valid TOML: {exc}") from None
    out: dict[str, dict[str, object]] = {}
    for name, section in body.items():
        if name not in SECTIONS:
            raise ValueError(f"config file {file}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(section, dict):
            raise ValueError(f"config file {file}: {name} must be a [{name}] section, got {type(section).__name__}")
        out[name] = dict(section)
    return out
