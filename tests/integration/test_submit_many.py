"""Many small jobs at once through the SDK: SubmitJobs stores a batch in one call (all or none) and wait_all follows
them all on one WatchJobs stream, on a real controller with real agents."""

from __future__ import annotations

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.client.errors import TensorFleetError

pytestmark = pytest.mark.slow


def test_a_batch_runs_and_is_waited_for_on_one_stream(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    specs = [{"algorithm": "noop", "name": f"batch-{i}"} for i in range(40)]
    specs[7] = {"algorithm": "fail", "name": "batch-7", "max_retries": 0}
    with Client(controller.address) as client:
        jobs = client.submit_many(specs)
        assert [j["name"] for j in jobs] == [s["name"] for s in specs]  # in the order given, each its own job
        assert len({j["id"] for j in jobs}) == 40 and all(j["state"] in ("QUEUED", "RUNNING") for j in jobs)
        ended = client.wait_all([j["id"] for j in jobs], timeout=120)
        assert [j["id"] for j in ended] == [j["id"] for j in jobs]
        assert [j["state"] for j in ended] == ["FAILED" if i == 7 else "SUCCEEDED" for i in range(40)]
        audit = client.audit(action="submit")
        assert any(e["target"] == f"40 jobs: {jobs[0]['id']} .. {jobs[-1]['id']}" for e in audit), audit[-3:]


def test_a_bad_spec_refuses_the_whole_batch_naming_it(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        before = len(client.jobs())
        specs = [{"algorithm": "noop"}, {"algorithm": "decision_tree", "dataset": "iris", "hyperparameters": {}}] * 3
        specs[3] = {"algorithm": "decision_tree", "dataset": "iris", "hyperparameters": {"max_depth": "deep"}}
        with pytest.raises(TensorFleetError) as err:
            client.submit_many(specs)
        assert err.value.code == "INVALID_ARGUMENT" and "spec_json[3].hyperparameters.max_depth" in str(err.value)
        with pytest.raises(TensorFleetError) as err:
            client.submit_many([{"algorithm": "noop"}, {"algorithm": "no-such-workload"}])
        assert err.value.code == "INVALID_ARGUMENT" and "spec_json[1]" in str(err.value)
        with pytest.raises(TensorFleetError) as err:
            client.submit_many([{"algorithm": "noop"}] * 1001)
        assert err.value.code == "INVALID_ARGUMENT" and "1 to 1000 job specs, got 1001" in str(err.value)
        assert len(client.jobs()) == before  # nothing of any of these batches was stored
        assert client.submit_many([]) == []
