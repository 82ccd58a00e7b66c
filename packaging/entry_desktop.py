"""Entry point of the frozen `tensorfleet` (PyInstaller): the desktop app, the CLI, the controller
(`tensorfleet serve`), its local agent (`--tensorfleet-agent`) and that agent's workers (`--tensorfleet-worker`).
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    args = sys.argv[1:]
    if args[:1] in (["--tensorfleet-agent"], ["--tensorfleet-worker"]):
        from tensorfleet_agent.__main__ import main as agent_main

        sys.exit(agent_main(args[1:] if args[0] == "--tensorfleet-agent" else args))
    from tensorfleet_desktop.cli import main

    sys.exit(main(args))
