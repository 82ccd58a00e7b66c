"""--interfaces / TENSORFLEET_MDNS_INTERFACES: IPv4 addresses as given, interface names resolved to theirs."""

from __future__ import annotations

import pytest

from tensorfleet_agent.discovery.interfaces import parse_interfaces


def test_addresses_stay_names_resolve_and_all_means_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_interfaces("127.0.0.1, 10.1.2.3") == ["127.0.0.1", "10.1.2.3"]
    assert parse_interfaces("lo") == ["127.0.0.1"]
    assert parse_interfaces("all") == [] and parse_interfaces("") == []
    monkeypatch.setenv("TENSORFLEET_MDNS_INTERFACES", "lo,127.0.0.2")
    assert parse_interfaces(None) == ["127.0.0.1", "127.0.0.2"]


def test_an_unknown_name_is_refused_naming_the_interfaces_there() -> None:
    with pytest.raises(ValueError, match=r"'nope0' is neither an IPv4 address nor an interface here \(.*lo"):
        parse_interfaces("127.0.0.1,nope0")
