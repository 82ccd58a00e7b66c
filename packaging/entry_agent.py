"""Entry point of the frozen `tensorfleet-agent` (PyInstaller): the agent, and its worker processes.

Workers are this same executable started with `--tensorfleet-worker` (tensorfleet_agent.runtime.process);
`--tensorfleet-agent` is accepted too, so every frozen build answers the same launch commands.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from tensorfleet_agent.__main__ import main

    args = sys.argv[1:]
    if args[:1] == ["--tensorfleet-agent"]:
        args = args[1:]
    sys.exit(main(args))
