"""The CLI against a real controller: refused specs and job files, output into pipes, an unreachable controller,
manual agents, `serve` with its local agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, online, tensorfleet
from helpers.processes import start_together
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client, InvalidRequest

pytestmark = pytest.mark.slow


BAD_SPECS: list[tuple[list[str], str]] = [
    (["--algorithm", "bitcoin_miner"], "unknown workload 'bitcoin_miner'"),
    (["--algorithm", "random_forest"], "dataset: random_forest needs a dataset"),
    (["--algorithm", "random_forest", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (
        ["--algorithm", "random_forest", "--dataset", "iris", "--param", "n_estimators=0"],
        "hyperparameters.n_estimators: must be >= 1",
    ),
    (
        ["--algorithm", "random_forest", "--dataset", "iris", "--param", "n_estimators=many"],
        "hyperparameters.n_estimators: must be an integer",
    ),
    (
        ["--algorithm", "random_forest", "--dataset", "iris", "--param", "trees=5"],
        "hyperparameters.trees: unknown parameter",
    ),
    (
        ["--algorithm", "svm", "--dataset", "iris", "--param", "kernel=cubic"],
        "hyperparameters.kernel: must be one of",
    ),
    (["--algorithm", "noop", "--workers", "0"], "num_workers: must be between 1 and 256"),
    (["--algorithm", "noop", "--priority", "5000"], "priority: must be between -1000 and 1000"),
    (["--algorithm", "noop", "--timeout", "-3"], "timeout: must be > 0"),
    (["--algorithm", "noop", "--epochs", "3"], "epochs: noop does not train in epochs"),
    (["--algorithm", "noop", "--dataset", "iris"], "dataset: noop takes no dataset"),
    (["--algorithm", "logistic_regression", "--dataset", "diabetes"], "is a classifier; diabetes is a regression"),
    (
        ["--algorithm", "knn", "--dataset", "make_regression", "--dataset-param", "n_samples=5"],
        "dataset_params.n_samples: must be >= 10",
    ),
    (["--algorithm", "mlp", "--dataset", "iris", "--param", "hidden_layer_sizes=wide"], "hidden_layer_sizes"),
    (["--algorithm", "noop", "--param", "oops"], "--param must look like KEY=VALUE"),
    (["--algorithm", "noop", "--model-name", "bad name!"], "model_name: may only hold"),
    ([], "nothing to submit"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SPECS, ids=[m.split(":")[0][:30] for _, m in BAD_SPECS])
def test_bad_job_specs_exit_2_with_a_clear_message(
    controller_factory: type[ControllerProcess], tmp_path: Path, args: list[str], message: str
) -> None:
    controller = _shared_controller(controller_factory, tmp_path)
    result = controller.cli("submit", *args)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


_shared: dict[str, ControllerProcess] = {}


def _shared_controller(factory: type[ControllerProcess], tmp_path: Path) -> ControllerProcess:
    existing = _shared.get("c")
    if existing is None or existing.proc is None or existing.proc.poll() is not None:
        existing = _shared["c"] = ControllerProcess(tmp_path / "bad-spec-controller").start()
    return existing


@pytest.fixture(scope="module", autouse=True)
def _stop_shared() -> Iterator[None]:
    yield
    for controller in _shared.values():
        controller.stop()


def test_bad_job_files(controller_factory: type[ControllerProcess], tmp_path: Path) -> None:
    controller = _shared_controller(controller_factory, tmp_path)
    cases = {
        "missing.yaml": (None, "cannot read job file"),
        "broken.yaml": ("algorithm: [unclosed", "is not valid YAML"),
        "list.yaml": ("- 1\n- 2\n", "must hold a mapping"),
        "unknown.yaml": ("algorithm: noop\nwizard: true\n", "wizard: unknown field"),
        "broken.json": ('{"algorithm": ', "is not valid JSON"),
        "type.json": (json.dumps({"algorithm": "noop", "priority": "high"}), "priority: must be an integer"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        result = controller.cli("submit", str(path))
        assert result.returncode == 2 and message in result.stderr, (name, result.stderr)
    good = tmp_path / "good.yaml"
    good.write_text("name: from-file\nalgorithm: sleep\nhyperparameters:\n  seconds: 0.1\npriority: 3\n")
    job = cli_json(controller.cli("submit", str(good), "--json"))
    assert job["name"] == "from-file"
    with Client(controller.address) as client:
        with pytest.raises(InvalidRequest, match="wizard"):
            client.submit({"algorithm": "noop", "wizard": 1})
        assert client.job(job["id"])["spec"]["priority"] == 3


def test_cli_output_into_a_pipe_is_whole_and_a_closed_pipe_is_quiet(
    controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    controller = _shared_controller(controller_factory, tmp_path)
    name = "piped-" + "n" * 100  # the jobs table is far wider than 80 columns
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "name": name, "hyperparameters": {"seconds": 0.1}})
        store = client.info()["store"]
    assert store == f"sqlite://{(controller.data_dir / 'tensorfleet.db').resolve()}"  # not sqlite://///...
    listed = controller.cli("jobs")
    assert listed.returncode == 0
    assert any(job["id"] in line and name in line for line in listed.stdout.splitlines()), listed.stdout
    env = {**os.environ, "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1"}
    for args in (["metrics", job["id"], "--csv"], ["jobs"]):  # `... | head`: the reader leaves early
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorfleet_desktop", "--controller", controller.address, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(60) == 141 and stderr == "", (args, stderr)


def test_unreachable_controller_exits_3_naming_the_address() -> None:
    result = tensorfleet("--controller", "127.0.0.1:1", "jobs")
    assert result.returncode == 3 and "127.0.0.1:1" in result.stderr


def test_manual_agents_are_remembered_drained_and_removed(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    agent, controller = start_together(
        agent_factory(tmp_path / "manual", name="manual-agent", cpu_slots=1, extra_args=["--no-advertise"]),
        controller_factory(tmp_path / "ctl", extra_args=["--no-mdns", "--metrics-port", "0"]),
    )
    added = cli_json(controller.cli("agents", "add", agent.address, "--json"))
    assert added["id"] == agent.info["node_id"] and added["source"] == "manual"
    assert controller.cli("agents", "add", "127.0.0.1:1").returncode == 2
    assert controller.cli("agents", "add", "no-port").returncode == 2
    controller.stop()
    controller.start()
    with Client(controller.address) as client:
        wait_until(lambda: online(client).get("manual-agent"), 20, "remembered agent online")
        drained = cli_json(controller.cli("agents", "drain", "manual-agent", "--json"))
        assert drained["state"] == "DRAINING"
        job = client.submit({"algorithm": "noop"})
        controller.after_scheduler_passes()
        assert client.job(job["id"])["state"] == "QUEUED"  # nothing is placed on a draining agent
        removed = cli_json(controller.cli("agents", "rm", "manual-agent", "--json"))
        assert removed["id"] == agent.info["node_id"]
        assert client.agents() == []
    assert controller.cli("agents", "rm", "manual-agent").returncode == 2


def test_serve_runs_a_local_agent_and_shutdown_stops_both(
    controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    controller = controller_factory(
        tmp_path / "embedded", local_agent=True, extra_args=["--no-mdns", "--metrics-port", "0"]
    )
    controller.start()
    with Client(controller.address) as client:
        local = wait_until(
            lambda: [a for a in client.agents() if a["source"] == "local" and a["state"] == "ONLINE"], 20, "local agent"
        )[0]
        assert local["paired"] is True and local["address"].startswith("127.0.0.1:")
        assert client.info()["local_agent_id"] == local["id"]
        job = client.submit({"algorithm": "logistic_regression", "dataset": "wine"})
        assert client.wait(job["id"], timeout=90)["state"] == "SUCCEEDED"
    import urllib.request

    url = f"http://127.0.0.1:{controller.info['metrics_port']}/metrics"
    # the job gauge is recounted on the scheduler's next tick (at most 0.5 s later)
    text = wait_until(
        lambda: (t := urllib.request.urlopen(url).read().decode()) and "tensorfleet_active_jobs 0.0" in t and t,
        5,
        "active jobs back to 0",
    )
    assert "tensorfleet_job_submissions_total 1.0" in text and "tensorfleet_active_workers 1.0" in text
    assert 'tensorfleet_training_accuracy{job_id="' not in text  # per-job series removed at the end
    assert controller.cli("shutdown").returncode == 0
    assert controller.proc is not None and controller.proc.wait(60) == 0
