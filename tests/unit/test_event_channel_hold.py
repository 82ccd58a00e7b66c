"""A bundled trial's lines reach the agent in one write, and a long trial's are not held back."""

from __future__ import annotations

import json
import os
import time

from tensorfleet_agent.runtime.channel import EventChannel


def _pending(fd: int) -> list[dict[str, object]]:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 1 << 20)
    except BlockingIOError:
        return []
    return [json.loads(line) for line in data.decode().splitlines()]


def test_held_lines_are_written_together_at_the_end() -> None:
    read, write = os.pipe()
    channel = EventChannel(write)
    with channel.held(60):
        channel.send({"t": "trial", "index": 3})
        channel.send({"t": "log", "line": "fit"})
        assert _pending(read) == []  # nothing written yet: the agent is not woken per line
        channel.send({"t": "trial_end", "ok": True})
    assert [m["t"] for m in _pending(read)] == ["trial", "log", "trial_end"]
    channel.send({"t": "log", "line": "after"})  # not held any more
    assert _pending(read) == [{"t": "log", "line": "after"}]


def test_a_line_is_not_held_longer_than_asked_once_another_comes() -> None:
    read, write = os.pipe()
    channel = EventChannel(write)
    with channel.held(0.05):
        channel.send({"t": "metrics", "step": 1})
        time.sleep(0.1)
        channel.send({"t": "metrics", "step": 2})
        assert [m["step"] for m in _pending(read)] == [1, 2]
        channel.send({"t": "metrics", "step": 3})
    assert [m["step"] for m in _pending(read)] == [3]


def test_a_line_on_stderr_goes_at_once_with_those_held_before_it() -> None:
    read, write = os.pipe()
    channel = EventChannel(write)
    with channel.held(60):
        channel.send({"t": "log", "stream": "stdout", "line": "fitting"})
        channel.send({"t": "log", "stream": "stderr", "line": "ConvergenceWarning: ..."})
        # a trial that dies now (SIGKILL) has already said both
        assert [m["line"] for m in _pending(read)] == ["fitting", "ConvergenceWarning: ..."]
