"""Text a program chose (an output file's name, a job's) made safe to show, for the CLI and the desktop app alike."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the line/paragraph separators and bidi overrides that reorder what follows them
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters shown as escapes (a newline as \\n, ESC as \\x1b): a name can neither break
    a table's rows nor send the terminal escape sequences, nor reorder the text around it."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
