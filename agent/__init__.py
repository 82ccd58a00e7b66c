"""TensorFleet agent: the headless daemon that runs training tasks on one machine.

Kept import-light on purpose: worker processes import this package at start-up,
so nothing here may pull in grpc, torch or scikit-learn.
"""

from tensorfleet_agent.core.version import AGENT_VERSION, PROTOCOL_VERSION

__all__ = ["AGENT_VERSION", "PROTOCOL_VERSION"]
__version__ = AGENT_VERSION
