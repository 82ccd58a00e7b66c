"""Controller + agents on loopback: real processes, real mDNS on 127.0.0.1, real CLI and SDK."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, tensorfleet
from helpers.waiting import wait_until
from tensorfleet_agent.workloads.datasets import data_sha256
from tensorfleet_agent.workloads.datasets import load as load_dataset
from tensorfleet_desktop.client import Client, InvalidRequest, NotFound, TensorFleetError

pytestmark = pytest.mark.slow


def online(client: Client) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in client.agents() if a["state"] == "ONLINE"}


def test_agents_found_over_mdns_and_listed(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, agents = cluster
    listed = cli_json(controller.cli("agents", "--json"))
    assert sorted(a["name"] for a in listed) == ["agent-0", "agent-1"]
    by_id = {a["id"]: a for a in listed}
    for agent in agents:
        entry = by_id[str(agent.info["node_id"])]
        assert entry["address"] == agent.address and entry["source"] == "mdns" and entry["state"] == "ONLINE"
        assert entry["slots_total"] == 1 and entry["slots_free"] == 1 and entry["gpus"] == 0
        assert set(entry) >= {"paired", "labels", "last_seen", "state_since"}


def test_submit_from_cli_waits_and_reports(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "random_forest",
            "--dataset",
            "iris",
            "--param",
            "n_estimators=20",
            "--param",
            "max_depth=null",
            "--model-name",
            "iris-rf",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["progress"] == 1.0
    assert job["tasks"] == {"total": 1, "completed": 1, "failed": 0, "attempts": 1}
    assert job["metrics"]["test_accuracy"] > 0.8 and "training_time" in job["metrics"]
    assert job["model"] == {"name": "iris-rf", "version": 1}  # registered before the job reads as SUCCEEDED
    with Client(controller.address) as client:  # a built-in dataset's lineage names its content, as a file's would
        x, y, _, _ = load_dataset("iris", {})
        assert client.model("iris-rf")["dataset"]["sha256"] == data_sha256(x, y)
    assert sorted(a["kind"] for a in job["artifacts"]) == ["model", "report"]
    assert job["started_at"] and job["finished_at"] and job["error"] == ""
    status = cli_json(controller.cli("status", job["id"], "--json"))
    assert status["id"] == job["id"] and status["state"] == "SUCCEEDED"
    listed = cli_json(controller.cli("jobs", "--json"))
    assert [j["id"] for j in listed] == [job["id"]]
    # the controller copied the model artifact into its own blob store
    sha = next(a["sha256"] for a in job["artifacts"] if a["kind"] == "model")
    assert wait_until(lambda: (controller.data_dir / "blobs" / sha[:2] / sha).exists(), 10, "artifact copy")
    logs = controller.cli("logs", job["id"])
    assert logs.returncode == 0 and "train_accuracy=" in logs.stdout
    csv_out = controller.cli("metrics", job["id"], "--csv")
    assert csv_out.stdout.splitlines()[0] == "task_index,step,name,value,wall_time"


def test_sdk_submit_emit_stores_every_point_once(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 500}})
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        steps = [p["step"] for p in client.metrics(job["id"]) if p["name"] == "value"]
        assert steps == list(range(500))
        events = list(client.watch(job["id"]))
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert sum(e["kind"] == "metric" for e in events) == 500


def test_cancel_pause_resume_resubmit(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}})
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "RUNNING", 30, "running")
        cancelled = cli_json(controller.cli("cancel", job["id"], "--json"))
        assert cancelled["state"] == "CANCELLED"
        wait_until(lambda: sum(a["slots_free"] for a in client.agents()) == 2, 10, "slots freed")
        assert controller.cli("cancel", job["id"]).returncode == 2  # already over

        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 2}})
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "RUNNING", 30, "running")
        assert cli_json(controller.cli("pause", job["id"], "--json"))["state"] == "PAUSED"
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "PENDING", 10, "the task stopped")
        controller.after_scheduler_passes()  # a paused job is not placed again
        paused = client.job(job["id"])
        assert paused["state"] == "PAUSED" and paused["task_list"][0]["state"] == "PENDING"
        assert paused["tasks"]["attempts"] == 1
        assert cli_json(controller.cli("resume", job["id"], "--json"))["state"] == "QUEUED"
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 2

        copy = cli_json(controller.cli("resubmit", job["id"], "--param", "seconds=0.1", "--json"))
        assert copy["id"] != job["id"]
        assert client.job(copy["id"])["spec"]["hyperparameters"]["seconds"] == 0.1
        assert client.wait(copy["id"], timeout=60)["state"] == "SUCCEEDED"


def test_failed_job_retries_then_fails_and_can_be_retried(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "fail", "hyperparameters": {"mode": "exit", "code": 9}, "max_retries": 1})
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "FAILED" and "exit_code" in final["error"] and "code 9" in final["error"]
        assert final["tasks"]["attempts"] == 2 and final["task_list"][0]["failures"] == 2
        waited = controller.cli("submit", "--algorithm", "fail", "--max-retries", "0", "--wait")
        assert waited.returncode == 1
        again = cli_json(controller.cli("retry", job["id"], "--json"))
        assert again["state"] == "QUEUED"
        assert client.wait(job["id"], timeout=60)["state"] == "FAILED"


def test_agent_killed_is_lost_within_3s_and_job_moves(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, agents = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 4}, "max_retries": 0})
        task = wait_until(
            lambda: (t := client.job(job["id"])["task_list"][0])["state"] == "RUNNING" and t, 30, "running"
        )
        victim = next(a for a in agents if a.info["node_id"] == task["node_id"])
        killed_at = time.time()
        victim.kill()
        lost = wait_until(
            lambda: next((a for a in client.agents() if a["id"] == task["node_id"] and a["state"] == "LOST"), None),
            10,
            "LOST",
        )
        assert lost["state_since"] - killed_at < 3.0, f"LOST after {lost['state_since'] - killed_at:.2f}s"
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        t = final["task_list"][0]
        assert t["node_id"] != task["node_id"] and t["replacements"] == 1 and t["failures"] == 0
        assert final["tasks"]["attempts"] == 2
        # the agent comes back with the same identity and is ONLINE again
        victim.start()
        wait_until(lambda: online(client).get(victim.name), 20, "agent back")


def test_controller_killed_and_restarted_mid_job(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 400, "rate": 100}})
        wait_until(lambda: client.job(job["id"])["metrics"].get("value", 0) > 50, 30, "some points")
    controller.kill()
    time.sleep(1.0)  # the scenario, not a wait: the job runs on without a controller and the restart catches up
    controller.start()
    with Client(controller.address) as client:
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 1  # re-attached, not re-run
        steps = [p["step"] for p in client.metrics(job["id"]) if p["name"] == "value"]
        assert steps == list(range(400)), "the stored series has a gap or a duplicate"
        seqs = [e["seq"] for e in client.watch(job["id"])]
        assert seqs == list(range(1, len(seqs) + 1))


def test_gang_waits_for_capacity_while_small_jobs_backfill(
    cluster: tuple[ControllerProcess, list[AgentProcess]], agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        gang = client.submit(
            {"algorithm": "sleep", "hyperparameters": {"seconds": 0.5}, "num_workers": 3, "priority": 10}
        )
        smalls = [client.submit({"algorithm": "noop"}) for _ in range(3)]
        for small in smalls:
            assert client.wait(small["id"], timeout=60)["state"] == "SUCCEEDED"
        assert client.job(gang["id"])["state"] == "QUEUED"
        agent_factory(tmp_path / "agent-3", name="agent-3", cpu_slots=1).start()
        final = client.wait(gang["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        assert len({t["node_id"] for t in final["task_list"]}) == 3


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
    agent = agent_factory(tmp_path / "manual", name="manual-agent", cpu_slots=1, extra_args=["--no-advertise"]).start()
    controller = controller_factory(tmp_path / "ctl", extra_args=["--no-mdns", "--metrics-port", "0"]).start()
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


def test_lost_rank_replaces_the_whole_gang(
    cluster: tuple[ControllerProcess, list[AgentProcess]], agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    controller, agents = cluster
    spare = agent_factory(tmp_path / "agent-spare", name="agent-spare", cpu_slots=1).start()
    with Client(controller.address) as client:
        wait_until(lambda: len(online(client)) == 3, 20, "3 agents")
        job = client.submit(
            {"algorithm": "sleep", "hyperparameters": {"seconds": 3}, "num_workers": 2, "max_retries": 0}
        )
        running = wait_until(
            lambda: (
                (j := client.job(job["id"]))["task_list"][1]["state"] == "RUNNING"
                and j["task_list"][0]["state"] == "RUNNING"
                and j
            ),
            30,
            "gang running",
        )
        first_nodes = {t["node_id"] for t in running["task_list"]}
        victim = next(a for a in [*agents, spare] if a.info["node_id"] == running["task_list"][1]["node_id"])
        victim.kill()
        final = client.wait(job["id"], timeout=90)
    assert final["state"] == "SUCCEEDED"
    assert [t["attempt"] for t in final["task_list"]] == [2, 2]  # both ranks restarted together
    assert victim.info["node_id"] not in {t["node_id"] for t in final["task_list"]}
    assert all(t["failures"] == 0 for t in final["task_list"])
    assert len(first_nodes) == 2


def test_job_wall_clock_timeout(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}, "timeout": 1.5})
        final = client.wait(job["id"], timeout=30)
        assert final["state"] == "FAILED" and final["error"] == "timed out after 1.5s"
        assert final["finished_at"] - final["started_at"] < 4
        wait_until(lambda: sum(a["slots_free"] for a in client.agents()) == 2, 10, "slots freed")


def test_synthetic_and_regression_datasets_from_the_cli(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "gradient_boosting",
            "--dataset",
            "make_classification",
            "--dataset-param",
            "n_samples=400",
            "--dataset-param",
            "n_features=10",
            "--dataset-param",
            "n_classes=3",
            "--param",
            "max_iter=30",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and {"test_accuracy", "f1_macro"} <= set(job["metrics"])
    with Client(controller.address) as client:
        assert client.job(job["id"])["spec"]["dataset_params"]["n_samples"] == 400
    job = cli_json(controller.cli("submit", "--algorithm", "knn", "--dataset", "diabetes", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED" and {"r2", "rmse", "mae"} <= set(job["metrics"])
    listed = cli_json(controller.cli("algorithms", "--json"))
    by_name = {w["name"]: w for w in listed}
    assert "diabetes" not in by_name["logistic_regression"]["datasets"] and "diabetes" in by_name["knn"]["datasets"]


def test_cross_validation_folds_run_as_parallel_tasks(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _agents = cluster
    job = cli_json(controller.cli("submit", "--algorithm", "svm", "--dataset", "iris", "--cv", "4", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 4 and job["tasks"]["completed"] == 4
    assert 0.8 < job["metrics"]["test_accuracy"] <= 1.0 and "test_accuracy_std" in job["metrics"]
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        assert len({t["node_id"] for t in detail["task_list"]}) == 2  # folds spread over both agents
        reports = [a for a in detail["artifacts"] if a["kind"] == "report"]
        assert sorted(a["task_index"] for a in reports) == [0, 1, 2, 3]


def test_optuna_sweep_of_12_trials_on_2_agents(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "svm",
            "--dataset",
            "wine",
            "--sweep",
            "C=float:0.01:100:log",
            "--sweep",
            "kernel=linear,rbf",
            "--search",
            "tpe",
            "--trials",
            "12",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 12 and job["progress"] == 1.0
    trials = cli_json(controller.cli("trials", job["id"], "--json"))
    rows = trials["trials"]
    assert len(rows) == 12 and trials["metric"] == "test_accuracy"
    assert all(0.01 <= r["params"]["C"] <= 100 and r["params"]["kernel"] in ("linear", "rbf") for r in rows)
    scores = [r["score"] for r in rows if r["state"] == "SUCCEEDED"]
    best = rows[int(trials["best_trial"])]
    assert best["score"] == max(scores) == job["metrics"]["test_accuracy"]
    assert len({r["agent"] for r in rows}) == 2  # trials ran in parallel on both agents
    text = controller.cli("trials", job["id"])
    assert text.returncode == 0 and "TEST_ACCURACY" in text.stdout


def test_resubmit_reproduces_a_job(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "random_forest", "dataset": "wine", "hyperparameters": {"n_estimators": 25}})
        first = client.wait(job["id"], timeout=120)
        again = client.wait(client.resubmit(first["id"])["id"], timeout=120)
        assert first["state"] == again["state"] == "SUCCEEDED"
        scores = [{k: v for k, v in j["metrics"].items() if k != "training_time"} for j in (first, again)]
        assert scores[0] == scores[1] and scores[0]["f1_macro"] > 0  # same seeds, data and library versions
        records = [
            next(r["line"] for r in client.logs(j["id"]) if r["line"].startswith("reproducibility:"))
            for j in (first, again)
        ]
    assert '"scikit-learn": ' in records[0] and '"random_state": 42' in records[0]
    assert records[0].split(" attempt ")[0] == records[1].split(" attempt ")[0]


def test_pruned_sweep_stops_trailing_trials_early(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    """Gradient boosting reports test accuracy after each round; trials far behind the median are stopped."""
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "gradient_boosting",
            "--dataset",
            "make_classification",
            "--dataset-param",
            "n_samples=3000",
            "--param",
            "max_iter=60",
            "--sweep",
            "learning_rate=float:0.000001:0.5:log",
            "--search",
            "random",
            "--trials",
            "12",
            "--prune",
            "--wait",
            "--json",
            timeout=300,
        )
    )
    assert job["state"] == "SUCCEEDED"
    rows = cli_json(controller.cli("trials", job["id"], "--json"))["trials"]
    assert any(r["state"] == "PRUNED" for r in rows), rows
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        curves = client.metrics(job["id"], ("test_accuracy",))
    assert detail["spec"]["sweep"]["prune"] is True
    curve = {
        t["index"]: {p["step"]: p["value"] for p in curves if p["task_index"] == t["index"]}
        for t in detail["task_list"]
    }
    completed = [curve[t["index"]] for t in detail["task_list"] if t["state"] == "SUCCEEDED"]
    for rank in detail["task_list"]:
        if rank["exit_cause"] == "pruned":
            step = max(curve[rank["index"]])
            assert step < 60 and f"pruned at step {step}" in rank["error"]  # stopped before the end
            assert any(c[step] > curve[rank["index"]][step] for c in completed)  # behind a finished trial there
        else:
            assert {6, 12, 60} <= set(curve[rank["index"]])  # one point per round of 6 iterations


def test_grid_sweep_on_a_regression_dataset(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "knn",
            "--dataset",
            "diabetes",
            "--sweep",
            "n_neighbors=int:3:5",
            "--sweep",
            "weights=uniform,distance",
            "--search",
            "grid",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 6
    rows = cli_json(controller.cli("trials", job["id"], "--json"))["trials"]
    assert sorted((r["params"]["n_neighbors"], r["params"]["weights"]) for r in rows) == [
        (n, w) for n in (3, 4, 5) for w in ("distance", "uniform")
    ]
    assert job["metrics"]["r2"] == max(r["score"] for r in rows)


def test_two_rank_ddp_across_two_agents(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "cnn",
            "--dataset",
            "digits",
            "--workers",
            "2",
            "--param",
            "epochs=3",
            "--wait",
            "--json",
            timeout=300,
        )
    )
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        detail = client.job(job["id"])
    ranks = detail["task_list"]
    assert len({t["node_id"] for t in ranks}) == 2  # one rank per agent
    checksums = [t["metrics"]["param_checksum"] for t in ranks]
    assert checksums[0] == checksums[1]  # DDP kept the parameters identical
    assert detail["metrics"]["test_accuracy"] > 0.7 and detail["metrics"]["epoch"] == 3.0
    kinds = sorted(a["kind"] for a in detail["artifacts"])
    assert kinds == ["model", "model_config"]  # saved once, by rank 0


def test_pausing_a_gang_checkpoints_mid_epoch_and_resume_continues_from_there(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit(
            {
                "algorithm": "torch_mlp",
                "dataset": "digits",
                "num_workers": 2,
                "hyperparameters": {"epochs": 12, "checkpoint_every": 0, "batch_size": 16},
            }
        )
        wait_until(lambda: any(p["value"] >= 2 for p in client.metrics(job["id"], ("epoch",))), 120, "2 epochs")
        paused_at = time.time()
        assert cli_json(controller.cli("pause", job["id"], "--json"))["state"] == "PAUSED"
        paused = wait_until(
            lambda: (
                (j := client.job(job["id"]))
                and all(t["state"] == "PENDING" for t in j["task_list"])
                and any(a["kind"] == "checkpoint" for a in j["artifacts"])
                and j
            ),
            60,
            "both ranks stopped at a checkpoint",
        )
        (checkpoint,) = [a for a in paused["artifacts"] if a["kind"] == "checkpoint"]
        for rank in paused["task_list"]:  # each rank said where it stopped, and it was not a failure
            assert rank["exit_cause"] == "stopped" and f"(step {checkpoint['step']})" in rank["error"], rank
        controller.after_scheduler_passes()  # while paused nothing is placed or runs: no new loss points
        paused = client.job(job["id"])
        assert all(t["state"] == "PENDING" and t["attempt"] == 1 for t in paused["task_list"]), paused
        steps_before = {p["step"] for p in client.metrics(job["id"], ("loss",))}
        assert max(steps_before) == checkpoint["step"]
        assert paused["state"] == "PAUSED" and time.time() - paused_at < 30

        client.resume(job["id"])
        final = client.wait(job["id"], timeout=300)
        assert final["state"] == "SUCCEEDED", final
        assert [t["attempt"] for t in final["task_list"]] == [2, 2]
        logs = [r["line"] for r in client.logs(job["id"])]
        assert any(line.endswith(f"(step {checkpoint['step']})") and "resumed from" in line for line in logs), logs
        second = sorted(p["step"] for p in client.metrics(job["id"], ("loss",)) if p["agent_task_id"].endswith("-a2"))
        assert second[0] == checkpoint["step"] + 1  # not one step trained twice, none skipped
        checksums = [t["metrics"]["param_checksum"] for t in final["task_list"]]
        assert checksums[0] == checksums[1]
        assert final["metrics"]["epoch"] == 12.0
        warnings = [line for line in logs if "Warning" in line]
        assert not warnings, warnings


SCRIPT = """
import sys
from pathlib import Path
from tensorfleet_agent import task

print("args:", " ".join(sys.argv[1:]))
for step in range(5):
    task.report(step=step, loss=1.0 / (step + 1))
    task.progress((step + 1) / 5)
out = Path(task.checkpoint_dir().parent) / "weights.txt"
out.write_text("42")
task.save_artifact(out, kind="model")
"""

DDP_SCRIPT = """
import os
import torch
import torch.distributed as dist
from tensorfleet_agent import task

dist.init_process_group("gloo", init_method="env://")
value = torch.tensor([float(int(os.environ["RANK"]) + 1)])
dist.all_reduce(value)
task.report(step=0, total=float(value.item()), world=float(dist.get_world_size()))
dist.destroy_process_group()
"""


def test_artifacts_are_listed_and_downloaded_with_their_sha256_checked(
    cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    controller, agents = cluster
    with Client(controller.address) as client:  # two ranks, each saving different bytes as artifact.bin
        job = client.submit({"algorithm": "artifact", "num_workers": 2, "hyperparameters": {"bytes": 1_500_000}})
        assert client.wait(job["id"], 60)["state"] == "SUCCEEDED"
        listed = client.artifacts(job["id"])
        assert sorted((a["name"], a["kind"], a["task_index"]) for a in listed) == [
            ("artifact.bin", "report", 0),
            ("artifact.bin", "report", 1),
        ]
        assert all(a["size"] == 1_500_000 and len(a["sha256"]) == 64 and a["created_at"] for a in listed)
        by_task = {a["task_index"]: a for a in listed}
        got = client.download_artifact(job["id"], "artifact.bin", tmp_path, task=1)
        path = tmp_path / "artifact.bin"
        assert got["path"] == str(path) and hashlib.sha256(path.read_bytes()).hexdigest() == by_task[1]["sha256"]
        with pytest.raises(InvalidRequest, match=r"tasks 0, 1 .* each saved 'artifact\.bin'"):
            client.download_artifact(job["id"], "artifact.bin", tmp_path / "x")
        with pytest.raises(NotFound, match="no artifact 'nope'"):
            client.download_artifact(job["id"], "nope", tmp_path / "x")
        with pytest.raises(NotFound, match="no job 'j-unknown'"):
            client.artifacts("j-unknown")
        assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*.part"))
    # the CLI: a table, --json, a download to -o (checked), and --task asked for when the name is ambiguous
    table = controller.cli("artifacts", job["id"])
    assert table.returncode == 0 and by_task[0]["sha256"] in table.stdout and "artifact.bin" in table.stdout
    assert cli_json(controller.cli("artifacts", job["id"], "--json")) == listed
    out = tmp_path / "rank0.bin"
    done = controller.cli("artifacts", "download", job["id"], "artifact.bin", "--task", "0", "-o", str(out))
    assert done.returncode == 0 and "verified" in done.stdout, done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == by_task[0]["sha256"]
    ambiguous = controller.cli("artifacts", "download", job["id"], "artifact.bin", "-o", str(tmp_path / "y"))
    assert ambiguous.returncode == 2 and "--task N" in ambiguous.stderr and not (tmp_path / "y").exists()
    missing = controller.cli("artifacts", "download", job["id"], "nope.bin")
    assert missing.returncode == 2 and "no artifact 'nope.bin'" in missing.stderr
    # once the agents are gone, the files still come from the controller's copy
    for agent in agents:
        agent.stop()
    with Client(controller.address) as client:
        again = client.download_artifact(job["id"], "artifact.bin", tmp_path / "again.bin", task=0)
    assert (tmp_path / "again.bin").read_bytes() == out.read_bytes() and again["sha256"] == by_task[0]["sha256"]
    # bytes that do not hash to the artifact's sha256 are an error, and no file (not even a partial one) stays
    blob = controller.data_dir / "blobs" / again["sha256"][:2] / again["sha256"]
    blob.chmod(0o600)
    blob.write_bytes(b"damaged" + out.read_bytes()[7:])
    with Client(controller.address) as client, pytest.raises(TensorFleetError):
        client.download_artifact(job["id"], "artifact.bin", tmp_path / "damaged.bin", task=0)
    assert not (tmp_path / "damaged.bin").exists() and not list(tmp_path.glob(".*.part"))


def test_user_scripts(cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    controller, _ = cluster
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = cli_json(
        controller.cli("submit", "--script", str(script), "--script-arg=--lr", "--script-arg=0.1", "--wait", "--json")
    )
    assert job["state"] == "SUCCEEDED" and job["metrics"]["loss"] == 0.2
    assert [a["kind"] for a in job["artifacts"]] == ["model"]
    with Client(controller.address) as client:
        assert "args: --lr 0.1" in [r["line"] for r in client.logs(job["id"])]
        detail = client.job(job["id"])
        assert detail["spec"]["script"]["sha256"] and detail["algorithm"] == "script"
    # a script that raises: FAILED, with its traceback in the logs
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    raise ValueError('bad input row 7')\nf()\n")
    result = controller.cli("submit", "--script", str(bad), "--max-retries", "0", "--wait", "--json")
    failed = json.loads(result.stdout)
    assert result.returncode == 1 and failed["state"] == "FAILED" and "ValueError: bad input row 7" in failed["error"]
    with Client(controller.address) as client:
        assert any("Traceback" in r["line"] for r in client.logs(failed["id"]))
    # requirements are checked on the agent
    result = controller.cli(
        "submit", "--script", str(script), "--requirement", "no-such-dist-xyz", "--max-retries", "0", "--wait", "--json"
    )
    needs = json.loads(result.stdout)
    assert needs["state"] == "FAILED" and "no-such-dist-xyz (not installed)" in needs["error"]
    # a syntax error is refused at submit
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    result = controller.cli("submit", "--script", str(broken))
    assert result.returncode == 2 and "broken.py line 1" in result.stderr


def test_two_rank_user_script(cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    controller, _ = cluster
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    job = cli_json(controller.cli("submit", "--script", str(script), "--workers", "2", "--wait", "--json", timeout=300))
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        ranks = client.job(job["id"])["task_list"]
    assert [t["metrics"]["total"] for t in ranks] == [3.0, 3.0] and ranks[0]["metrics"]["world"] == 2.0


def test_forest_trained_in_shards_is_merged(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    common = [
        "--algorithm",
        "random_forest",
        "--dataset",
        "make_classification",
        "--dataset-param",
        "n_samples=1500",
        "--param",
        "n_estimators=41",
        "--wait",
        "--json",
    ]
    sharded = cli_json(controller.cli("submit", *common, "--workers", "2"))
    single = cli_json(controller.cli("submit", *common))
    assert sharded["state"] == single["state"] == "SUCCEEDED"
    assert sharded["metrics"]["n_estimators"] == 41.0 and sharded["metrics"]["shards"] == 2.0
    assert abs(sharded["metrics"]["test_accuracy"] - single["metrics"]["test_accuracy"]) < 0.05
    with Client(controller.address) as client:
        detail = client.job(sharded["id"])
    assert len({t["node_id"] for t in detail["task_list"]}) == 2
    merged = [a for a in detail["artifacts"] if a["kind"] == "model" and a["task_index"] == -1]
    assert len(merged) == 1
    assert (controller.data_dir / "blobs" / merged[0]["sha256"][:2] / merged[0]["sha256"]).exists()


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in row) for row in rows]) + "\n")
    return path


def test_user_csv_datasets(cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes, load_wine

    controller, _ = cluster
    wine = load_wine()
    names = [f"f{i}" for i in range(wine.data.shape[1])]
    rows = [[*x, wine.target_names[t]] for x, t in zip(wine.data, wine.target, strict=True)]
    data = _csv(tmp_path / "wine.csv", [*names, "cultivar"], rows)
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "random_forest",
            "--dataset",
            str(data),
            "--target",
            "cultivar",
            "--param",
            "n_estimators=30",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["metrics"]["test_accuracy"] > 0.8
    listed = cli_json(controller.cli("datasets", "list", "--json"))
    assert [(d["name"], d["rows"]) for d in listed] == [("wine", 178)]
    preview = cli_json(controller.cli("datasets", "preview", "wine", "--rows", "3", "--json"))
    assert preview["columns"][-1] == "cultivar" and len(preview["rows"]) == 3 and preview["rows"][0][-1] == "class_0"
    refused = controller.cli("datasets", "delete", "wine")
    assert refused.returncode == 2 and "is used by job(s)" in refused.stderr, refused.stderr
    spare = _csv(tmp_path / "spare.csv", ["a", "b"], [[1, 2], [3, 4]])
    cli_json(controller.cli("datasets", "upload", str(spare), "--json"))
    assert cli_json(controller.cli("datasets", "delete", "spare", "--json"))["name"] == "spare"
    assert [d["name"] for d in cli_json(controller.cli("datasets", "list", "--json"))] == ["wine"]
    missing = controller.cli("datasets", "preview", "spare")
    assert missing.returncode == 2 and "no dataset 'spare'" in missing.stderr
    # uploaded once, then named; a numeric target with many values is a regression
    diabetes = load_diabetes()
    reg = _csv(
        tmp_path / "diabetes.csv",
        [*[f"x{i}" for i in range(10)], "progression"],
        [[*x, y] for x, y in zip(diabetes.data, diabetes.target, strict=True)],
    )
    cli_json(controller.cli("datasets", "upload", str(reg), "--name", "sugar", "--json"))
    job = cli_json(
        controller.cli(
            "submit", "--algorithm", "knn", "--dataset", "sugar", "--target", "progression", "--wait", "--json"
        )
    )
    assert job["state"] == "SUCCEEDED" and "r2" in job["metrics"]
    # refused at submit
    for args, message in [
        (["--dataset", "wine"], "target: name the target column of wine"),
        (["--dataset", "wine", "--target", "colour"], "'colour' is not a column of wine"),
        (["--dataset", "iris", "--target", "species"], "target: is for uploaded datasets"),
    ]:
        result = controller.cli("submit", "--algorithm", "svm", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    empty = _csv(tmp_path / "empty.csv", ["a", "b"], [])
    result = controller.cli("datasets", "upload", str(empty))
    assert result.returncode == 2 and "no data rows" in result.stderr
    # text or gaps in features: refused at submit, naming the column and row
    for name, cell, message in [
        ("nan", "nan", "feature column 'f1' has a missing value (row 3)"),
        ("gap", "", "feature column 'f1' has a missing value (row 3)"),
        ("text", "high", "feature column 'f1' holds text (row 3: 'high')"),
    ]:
        bad_rows = [list(r) for r in rows[:20]]
        bad_rows[1][1] = cell
        path = _csv(tmp_path / f"{name}.csv", [*names, "cultivar"], bad_rows)
        result = controller.cli("submit", "--algorithm", "svm", "--dataset", str(path), "--target", "cultivar")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_user_parquet_datasets(cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    controller, _ = cluster
    data = load_breast_cancer()
    columns = {f"m{i}": data.data[:, i] for i in range(data.data.shape[1])}
    columns["diagnosis"] = [str(data.target_names[t]) for t in data.target]
    path = tmp_path / "cancer.parquet"
    pq.write_table(pa.table(columns), path)
    uploaded = cli_json(controller.cli("datasets", "upload", str(path), "--json"))
    assert uploaded["format"] == "parquet" and uploaded["rows"] == 569 and uploaded["columns"][-1] == "diagnosis"
    assert uploaded["source_filename"] == "cancer.parquet" and len(uploaded["source_sha256"]) == 64
    job = cli_json(
        controller.cli(
            "submit", "-a", "logistic_regression", "--dataset", "cancer", "--target", "diagnosis", "--wait", "--json"
        )
    )
    assert job["state"] == "SUCCEEDED" and job["metrics"]["test_accuracy"] > 0.9, job
    with Client(controller.address) as client:
        report = client.job(job["id"])
    assert report["spec"]["dataset_params"]["task"] == "classification"
    # every float came through the CSV form exactly
    stored = controller.data_dir / "blobs" / uploaded["sha256"][:2] / uploaded["sha256"]
    first = stored.read_text().splitlines()[1].split(",")
    assert [float(v) for v in first[:-1]] == list(data.data[0]) and first[-1] == "malignant"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    result = controller.cli("datasets", "upload", str(broken))
    assert result.returncode == 2 and "broken.parquet is not a readable Parquet file" in result.stderr
