"""`tensorfleet pools` and the SDK's pool methods against a real controller over gRPC (no Slurm needed: a pool
scales from zero, so adding, listing, showing and removing one runs no Slurm command). The service's own checks
are tested beside it (test_pools_service.py); the Slurm scenario in test_slurm_pool.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.controller import ControllerProcess, cli_json
from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.client import Client, InvalidRequest, NotFound

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("pools-client")) / "controller").start()
    yield proc
    proc.stop()


def test_add_list_show_remove_through_the_cli(controller: ControllerProcess) -> None:
    added = cli_json(controller.cli(
        "pools", "add", "slurm", "gpu", "--partition", "a100", "--account", "ml", "--max-nodes", "3",
        "--time", "4:00:00", "--sbatch-arg=--gres=gpu:4", "--idle-timeout", "2m", "--login", "alice@login1", "--json",
    ))  # fmt: skip
    assert {k: added[k] for k in ("name", "kind", "partition", "account", "max_nodes", "time_limit", "sbatch_args",
                                  "idle_timeout_seconds", "login", "allocations")} == {
        "name": "gpu", "kind": "slurm", "partition": "a100", "account": "ml", "max_nodes": 3,
        "time_limit": "4:00:00", "sbatch_args": ["--gres=gpu:4"], "idle_timeout_seconds": 120.0,
        "login": "alice@login1", "allocations": [],
    }  # fmt: skip
    assert [p["name"] for p in cli_json(controller.cli("pools", "list", "--json"))] == ["gpu"]
    shown = controller.cli("pools", "show", "gpu")
    assert shown.returncode == 0 and "no allocation (scaled to zero)" in shown.stdout, shown.stderr

    again = controller.cli("pools", "add", "slurm", "gpu", "--partition", "a100")
    assert again.returncode == exit_codes.USAGE and "already exists" in again.stderr
    unknown = controller.cli("pools", "show", "nope")
    assert unknown.returncode == exit_codes.USAGE and "nope" in unknown.stderr

    assert cli_json(controller.cli("pools", "remove", "gpu", "--json"))["name"] == "gpu"
    assert cli_json(controller.cli("pools", "--json")) == []


def test_the_sdk_sees_the_services_refusals_by_field(controller: ControllerProcess) -> None:
    with Client(controller.address) as client:
        for fields, named in (
            ({"max_nodes": 0}, "max_nodes"),
            ({"time_limit": "soon"}, "time_limit"),
            ({"idle_timeout_seconds": -1.0}, "idle_timeout_seconds"),
        ):
            with pytest.raises(InvalidRequest, match=named):
                client.add_pool("cpu", "short", **fields)
        with pytest.raises(InvalidRequest, match="partition"):
            client.add_pool("cpu", "")
        with pytest.raises(NotFound):
            client.get_pool("cpu")  # nothing refused was kept
        pool = client.add_pool("cpu", "short")
        assert pool["max_nodes"] == 1 and pool["idle_timeout_seconds"] == 300.0  # the SDK's defaults
        assert client.get_pool("cpu")["partition"] == "short"
        client.remove_pool("cpu")
        with pytest.raises(NotFound):
            client.remove_pool("cpu")


def test_a_long_lived_join_credential(controller: ControllerProcess) -> None:
    made = controller.cli("pools", "credential", "k8s-gpu", "--ttl", "1h")
    assert made.returncode == 0, made.stderr
    credential = made.stdout.strip()
    assert credential.startswith("tfjc1.") and "\n" not in credential
    with Client(controller.address) as client:
        answer = client.create_join_credential("k8s-gpu", 86400.0)
    assert answer["pool"] == "k8s-gpu" and answer["credential"] != credential
    assert abs(answer["expires_at"] - (time.time() + 86400)) < 60
