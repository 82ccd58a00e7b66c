"""ListEnvs / PruneEnvs at the protobuf edge: an agent's env summary travels field for field, and the controller
side gets the JSON-ready dicts `tensorfleet agents envs --json` prints."""

from __future__ import annotations

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.runtime.envs import EnvInfo


def test_an_env_summary_round_trips_through_the_wire() -> None:
    info = EnvInfo("a" * 32, 123_456_789_012, 1_765_000_000.5, 7, "cpython-3.11.2", "uv.lock", 12.25, 2)
    wire = pb.ListEnvsResponse.FromString(convert.list_envs_to_pb([info], 20 << 30).SerializeToString())
    assert convert.list_envs_from_pb(wire) == {
        "envs": [
            {
                "key": "a" * 32,
                "size": 123_456_789_012,
                "last_used": 1_765_000_000.5,
                "jobs": 7,
                "python": "cpython-3.11.2",
                "source": "uv.lock",
                "build_seconds": 12.25,
                "in_use": 2,
            }
        ],
        "limit_bytes": 20 << 30,
    }
    assert set(convert.ENV_SUMMARY_KEYS) == set(convert.env_summary_from_pb(wire.envs[0]))


def test_a_prune_reply_names_what_was_removed_and_the_bytes_freed() -> None:
    msg = pb.PruneEnvsResponse(removed=["k1", "k2"], freed_bytes=5 << 20)
    assert convert.prune_envs_from_pb(pb.PruneEnvsResponse.FromString(msg.SerializeToString())) == {
        "removed": ["k1", "k2"],
        "freed_bytes": 5 << 20,
    }
