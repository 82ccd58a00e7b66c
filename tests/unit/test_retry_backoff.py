"""The retry back-off users read about: a failed task waits 1 s, 2 s, 4 s … at most 30 s before its next attempt.
(The 1, 2, 4 s steps are also checked end to end from event timestamps in tests/integration/test_cli_commands.py;
the 30 s cap would take a minute of failures there.)"""

from __future__ import annotations

from tensorfleet_desktop.controller.jobs import retry_delay


def test_the_delay_doubles_from_1s_and_stops_at_30s() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert retry_delay(10_000) == 30.0  # however many failures a long max_retries allows
