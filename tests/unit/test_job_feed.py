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


def test_a_watcher_of_some_jobs_hears_only_those_and_nothing_once_gone() -> None:
    """Client.wait watches one job: a burst of others' changes does not wake it; a watcher of every job, beside it,
    hears them all; after its stream ends neither the one-job watcher nor a later one of the same job is fed the old
    changes."""
    feed, change = _feed()
    with feed.watcher() as everyone, feed.watcher({"a", "b"}) as some, feed.watcher({"a"}) as one:
        for job_id in ("x", "y", "b"):
            change(job_id)
        assert not one.wake.is_set() and some.take() == {"b"} and everyone.take() == {"x", "y", "b"}
        change("a")
        assert one.take() == {"a"} and some.take() == {"a"} and everyone.take() == {"a"}
    change("a")
    assert one.take() == set() and some.take() == set() and everyone.take() == set()
    with feed.watcher({"a"}) as again:
        assert not again.wake.is_set()
        change("a")
        assert again.take() == {"a"}
