"""Sizes as people type them ('500M', '6GiB', '1.5G', bytes): one parser for the CLIs, the job spec and the agent's
config, so `--gpu-memory 6GiB` means the same everywhere."""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str, what: str = "a size") -> int:
    """'500M', '2G', '1.5GiB', '200MB' or plain bytes -> bytes. K/M/G/T are binary (KiB/MiB/GiB/TiB); ValueError
    names `what` and the text."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or (match[3] and match[3].lower() == "ib" and not match[2]):
        raise ValueError(f"{what} must be bytes or a number with K, M, G or T (binary: 500M, 2G, 1.5GiB), got {text!r}")
    size = int(float(match[1]) * _UNITS[match[2].lower()])
    if size < 1:
        raise ValueError(f"{what} must be at least 1 byte, got {text!r}")
    return size


def format_size(size: float) -> str:
    """Bytes as the parser reads them back: '6GiB', '512MiB', '1.5GiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{int(size)}B"
