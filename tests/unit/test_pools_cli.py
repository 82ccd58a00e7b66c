"""`tensorfleet pools`: each refused flag is named before anything connects; what a good command line sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tensorfleet_desktop.cli import build_parser, exit_codes, main
from tensorfleet_desktop.cli.pools import pool_spec, pools

UNREACHABLE = "127.0.0.1:1"  # nothing listens: a command that got past its flags would say so


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--controller", UNREACHABLE, "pools", *argv])
    assert exited.value.code == exit_codes.USAGE
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["add", "slurm", "GPU", "--partition", "p"], "argument NAME: must be 1-63 lowercase"),
        (["add", "slurm", "-x", "--partition", "p"], "the following arguments are required: NAME"),
        (["add", "slurm", "gpu"], "the following arguments are required: --partition"),
        (["add", "slurm", "gpu", "--partition", "a,b"], "argument --partition: must be one Slurm partition"),
        (["add", "slurm", "gpu", "--partition", "p", "--max-nodes", "0"], "argument --max-nodes: must be a whole"),
        (["add", "slurm", "gpu", "--partition", "p", "--max-nodes", "two"], "argument --max-nodes"),
        (["add", "slurm", "gpu", "--partition", "p", "--time", "4h"], "argument --time: must be in Slurm's format"),
        (["add", "slurm", "gpu", "--partition", "p", "--idle-timeout", "0s"], "argument --idle-timeout: must be"),
        (["add", "slurm", "gpu", "--partition", "p", "--idle-timeout", "5x"], "argument --idle-timeout: must be"),
        (["add", "slurm", "gpu", "--partition", "p", "--sbatch-arg=gres"], "argument --sbatch-arg: must be one"),
        (["add", "slurm", "gpu", "--partition", "p", "--login", "a b@c"], "argument --login: must be USER@HOST"),
        (["add", "kubernetes", "gpu", "--partition", "p"], "invalid choice: 'kubernetes'"),
        (["show"], "the following arguments are required: name"),
        (["credential", "k8s", "--ttl", "forever"], "argument --ttl: must be a duration above zero"),
    ],
)
def test_a_refused_flag_is_named(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> None:
    message = _refused(capsys, *argv)
    assert named in message
    assert "cannot reach" not in message  # refused before any connection was tried


class FakeClient:
    """Records what the command asks for and answers as the SDK does (plain dicts)."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, dict[str, Any]]] = []

    def add_pool(self, name: str, partition: str, **fields: Any) -> dict[str, Any]:
        self.added.append((name, partition, fields))
        return _pool(name, partition, **fields)

    def list_pools(self) -> list[dict[str, Any]]:
        return [_pool("gpu", "a100", allocations=[_allocation()]), _pool("cpu", "short", error="squeue: timed out")]

    def create_join_credential(self, pool: str, ttl_seconds: float) -> dict[str, Any]:
        return {"credential": f"tfjc1.{pool}.{ttl_seconds:g}", "expires_at": 1.7e9 + ttl_seconds, "pool": pool}

    def get_pool(self, name: str) -> dict[str, Any]:
        return _pool(name, "a100", allocations=[_allocation()])


def _allocation() -> dict[str, Any]:
    return {"id": "1234", "state": "PENDING", "reason": "Resources", "nodes": 2, "submitted_at": 1.7e9,
            "started_at": 0.0, "agents": [], "jobs": ["j-1"]}  # fmt: skip


def _pool(name: str, partition: str, **fields: Any) -> dict[str, Any]:
    pool = {"name": name, "kind": "slurm", "partition": partition, "account": "", "max_nodes": 4, "time_limit": "",
            "sbatch_args": [], "idle_timeout_seconds": 300.0, "login": "", "allocations": [], "created_at": 1.7e9,
            "error": ""}  # fmt: skip
    return {**pool, **fields}


def test_add_sends_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pools", "add", "slurm", "gpu.a100", "--partition", "a100", "--account", "ml", "--max-nodes", "4",
            "--time", "1-04:00:00", "--sbatch-arg=--gres=gpu:4", "--sbatch-arg=--qos=high", "--idle-timeout", "90s",
            "--login", "alice@login.hpc.example", "--json"]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert pool_spec(args)["idle_timeout_seconds"] == 90.0
    client = FakeClient()
    assert pools(client, args) == exit_codes.OK  # type: ignore[arg-type]
    sent = {"kind": "slurm", "account": "ml", "max_nodes": 4, "time_limit": "1-04:00:00",
            "sbatch_args": ["--gres=gpu:4", "--qos=high"], "idle_timeout_seconds": 90.0,
            "login": "alice@login.hpc.example"}  # fmt: skip
    assert client.added == [("gpu.a100", "a100", sent)]
    assert json.loads(capsys.readouterr().out)["name"] == "gpu.a100"


def test_defaults_scale_from_zero_with_five_minutes_idle() -> None:
    spec = pool_spec(build_parser().parse_args(["pools", "add", "slurm", "p1", "--partition", "debug"]))
    assert spec == {"name": "p1", "kind": "slurm", "partition": "debug", "account": "", "max_nodes": 1,
                    "time_limit": "", "sbatch_args": [], "idle_timeout_seconds": 300.0, "login": ""}  # fmt: skip


def test_list_and_show_say_why_work_waits(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    assert pools(client, build_parser().parse_args(["pools"])) == exit_codes.OK  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert "1234 PENDING" in captured.out and "2/4" in captured.out
    assert "cpu: squeue: timed out" in captured.err
    assert pools(client, build_parser().parse_args(["pools", "show", "gpu"])) == exit_codes.OK  # type: ignore[arg-type]
    shown = capsys.readouterr().out
    assert "Resources" in shown and "j-1" in shown
    assert pools(client, build_parser().parse_args(["pools", "list", "--json"])) == exit_codes.OK  # type: ignore[arg-type]
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["gpu", "cpu"]


def test_credential_alone_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """So that `kubectl create secret ... --from-literal=credential=$(tensorfleet pools credential k8s)` works."""
    args = build_parser().parse_args(["pools", "credential", "k8s-gpu", "--ttl", "12h"])
    assert pools(FakeClient(), args) == exit_codes.OK  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert captured.out == "tfjc1.k8s-gpu.43200\n"
    assert "join credential for pool k8s-gpu, valid until" in captured.err
