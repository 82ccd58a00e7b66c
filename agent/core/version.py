"""Versions exchanged between peers."""

from importlib import metadata

#: Bumped on every incompatible change to proto/tensorfleet/v1.
PROTOCOL_VERSION = 3

try:
    AGENT_VERSION = metadata.version("tensorfleet")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    AGENT_VERSION = "0.0.0+source"
