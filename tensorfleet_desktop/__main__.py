"""`python -m tensorfleet_desktop` is the `tensorfleet` command."""

import sys

from tensorfleet_desktop.cli import main

sys.exit(main())
