"""One simulated LAN per test module; skipped with the reason where namespaces cannot be made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.lan import Lan, lan_unavailable_reason


@pytest.fixture(scope="module")
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    reason = lan_unavailable_reason()
    if reason is not None:
        pytest.skip(f"simulated LAN unavailable: {reason}")
    hosts = getattr(request.module, "LAN_HOSTS", ["ctl", "h1", "h2"])
    network = Lan(hosts).build()
    try:
        yield network
    finally:
        network.teardown()
