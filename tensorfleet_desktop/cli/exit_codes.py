"""What `tensorfleet` exits with: scripts branch on these numbers, so each has one name and one meaning."""

from __future__ import annotations

OK = 0
JOB_FAILED = 1  # the waited-for or watched job did not succeed (or any other error of the SDK)
USAGE = 2  # refused input: bad flags or values, an unknown job, agent, dataset or model
UNREACHABLE = 3  # no controller answers at the address
CONTROLLER_FULL = 4  # the controller cannot save: its data dir is full
DATA_LOSS = 5  # the controller's stored data is damaged
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it
CLOSED_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a writer whose reader left (`yes | head`)


class UsageError(Exception):
    """Input the CLI refuses before (or instead of) asking the controller: exits with USAGE."""
