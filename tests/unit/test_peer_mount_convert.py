"""The peer-to-peer contract's dataclasses (issue 20) travel through the agent's protobuf conversions whole."""

from __future__ import annotations

from tensorfleet_agent.core.types import DatasetMount, DatasetTransfer, PeerSource, TaskEvent, TaskSpec
from tensorfleet_agent.rpc import convert


def test_a_mount_keeps_its_peers_and_signed_ticket() -> None:
    mount = DatasetMount(
        "shapes",
        3,
        manifest_id="a" * 64,
        peers=(PeerSource("n1", "10.0.0.2:50051", "f" * 64, ("b" * 64, "c" * 64)),),
        ticket=b"ticket",
        ticket_signature=b"sig",
    )
    spec = TaskSpec("j.t0.a1", "j", "script", dataset_mount=mount)
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)).dataset_mount == mount


def test_a_dataset_transfer_event_round_trips() -> None:
    event = TaskEvent("j.t0.a1", 5, 1700000000.5, DatasetTransfer(10, 20, 30, 40, 1.5, 2, 1))
    assert convert.event_from_pb(convert.event_to_pb(event)) == event
