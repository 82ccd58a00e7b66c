"""Prints what a pytest run did from its JUnit XML: tests run, failed, skipped (each with its reason), wall time.
Exits 1 when no test ran (pytest's exit code 5 is a failure too), 0 otherwise: failing on a skip is the suite's own
job under CI (tests/helpers/suite_policy.py); this only makes the numbers impossible to miss.

usage: test-summary.py JUNIT_XML WALL_SECONDS
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def main(junit: str, wall: str) -> int:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as exc:
        print(f"no test report ({exc}): the test run did not finish", file=sys.stderr)
        return 1
    cases = list(root.iter("testcase"))
    marked = [(c, s) for c in cases for s in c.findall("skipped")]
    skipped = [(c, s) for c, s in marked if s.get("type") != "pytest.xfail"]
    xfailed = len(marked) - len(skipped)
    broken = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    ran = len(cases) - len(skipped)
    passed = ran - len(broken) - xfailed
    print(
        f"== tests: {ran} run ({passed} passed, {len(broken)} failed or in error, {xfailed} expected failures), "
        f"{len(skipped)} skipped; wall time {wall} s =="
    )
    reasons = Counter(s.get("message", "").removeprefix("Skipped: ") or "(no reason)" for _, s in skipped)
    for reason, count in reasons.most_common():
        print(f"   skipped {count}: {reason}")
    for case in broken:
        print(f"   failed: {case.get('classname')}::{case.get('name')}")
    if ran == 0:
        print("no test ran: that is a failure, not a pass", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
