"""WatchJobs' resume tokens: a token gets exactly the jobs changed after it, or None (a snapshot) when it cannot."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tensorfleet_desktop.controller import job_feed
from tensorfleet_desktop.controller.job_feed import JobFeed
from tensorfleet_desktop.controller.model import Job

Listener = Callable[[Job], None]


def _feed() -> tuple[JobFeed, Callable[[str], None]]:
    listeners: list[Listener] = []

    def add(fn: Listener) -> Callable[[], None]:
        listeners.append(fn)
        return lambda: listeners.remove(fn)

    feed = JobFeed(add)

    def change(job_id: str) -> None:
        for fn in listeners:
            fn(Job(job_id, {"name": job_id, "algorithm": "noop"}, "me", 1))

    return feed, change


def test_a_token_gets_the_jobs_changed_after_it_and_only_those() -> None:
    feed, change = _feed()
    change("a")
    token = feed.token()
    assert feed.changed_since(token) == set()
    change("b")
    change("c")
    change("b")
    assert feed.changed_since(token) == {"b", "c"}
    assert feed.changed_since(feed.token()) == set()


@pytest.mark.parametrize("token", ["", "other-1", "nonsense", "{epoch}-99", "{epoch}-x"])
def test_a_token_from_elsewhere_or_the_future_gets_a_snapshot(token: str) -> None:
    feed, change = _feed()
    change("a")
    epoch = feed.token().partition("-")[0]
    assert feed.changed_since(token.format(epoch=epoch)) is None


def test_a_token_older_than_what_is_remembered_gets_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_feed, "KEEP", 3)
    feed, change = _feed()
    old = feed.token()
    change("a")
    change("b")
    change("c")
    assert feed.changed_since(old) == {"a", "b", "c"}  # the 3 remembered reach back exactly to it
    change("d")
    assert feed.changed_since(old) is None  # "a" is forgotten: it could have been missed


def test_a_watcher_collects_changes_until_it_takes_them() -> None:
    feed, change = _feed()
    with feed.watcher() as watcher:
        change("a")
        change("a")
        assert watcher.wake.is_set() and watcher.take() == {"a"} and not watcher.wake.is_set()
    change("b")
    assert watcher.take() == set()  # gone after the stream ended
    feed.close()
    change("c")
    assert feed.changed_since(feed.token()) == set() and feed.token().endswith("-3")
