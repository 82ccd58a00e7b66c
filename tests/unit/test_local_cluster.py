"""The desktop app starts a controller only at the local default address and only on a free data dir; in every
other case it says what it found instead of starting a second cluster."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.servers import free_port
from tensorfleet_agent.datadir_lock import DataDirLock
from tensorfleet_desktop import local_cluster
from tensorfleet_desktop.local_cluster import NotStarting, check_address, connect_or_start


class Spawned(Exception):
    """Raised instead of starting a real controller: the decision is what these tests check."""


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake_start(address: str, *_args: object) -> None:
        calls.append(address)
        raise Spawned(address)

    monkeypatch.setattr(local_cluster, "start_detached", fake_start)
    return calls


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


async def test_a_mistyped_address_starts_nothing_and_says_what_answers_there(spawns: list[str], tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # on this machine, but not the local default
    with pytest.raises(NotStarting) as refused:
        await connect_or_start(address, tmp_path / "data")
    message = str(refused.value)
    assert address in message and "connection refused" in message and "127.0.0.1:50050" in message
    assert spawns == [] and not (tmp_path / "data").exists()


async def test_the_default_address_on_a_data_dir_in_use_names_the_holder(spawns: list[str], tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # stands for the default: nothing answers there
    holder = DataDirLock(tmp_path, "tensorfleet serve")
    holder.acquire()
    holder.set_address("127.0.0.1:50070")
    try:
        with pytest.raises(NotStarting) as refused:
            await connect_or_start(address, tmp_path, local_address=address)
    finally:
        holder.release()
    message = str(refused.value)
    assert f"the data dir {tmp_path} is used by pid {os.getpid()} (address 127.0.0.1:50070)" in message
    assert spawns == []


async def test_the_default_address_on_a_free_data_dir_starts_the_local_controller(
    spawns: list[str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Spawned):
        await connect_or_start(address, tmp_path, local_address=address)
    assert spawns == [address]


def test_the_address_check_tells_refused_from_timed_out(silent_server: str) -> None:
    refused = check_address(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert refused.status == "refused" and "connection refused" in refused.detail
    silent = check_address(silent_server, timeout=0.5)
    assert silent.status == "timed out" and "0.5 s" in silent.detail
    assert check_address("no-port-here").status == "invalid"
