"""What users bring and take away: their scripts (one and two ranks), artifacts downloaded with their sha256
checked, a forest trained in shards and merged, their CSV and Parquet datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from tensorfleet_desktop.client import Client, InvalidRequest, NotFound, TensorFleetError

pytestmark = pytest.mark.slow


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


def test_user_scripts(shared_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    controller, _ = shared_cluster
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


def test_two_rank_user_script(shared_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    controller, _ = shared_cluster
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    job = cli_json(controller.cli("submit", "--script", str(script), "--workers", "2", "--wait", "--json", timeout=300))
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        ranks = client.job(job["id"])["task_list"]
    assert [t["metrics"]["total"] for t in ranks] == [3.0, 3.0] and ranks[0]["metrics"]["world"] == 2.0


def test_forest_trained_in_shards_is_merged(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
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
    listed = [d for d in cli_json(controller.cli("datasets", "list", "--json")) if not d["builtin"]]
    assert [(d["name"], d["rows"]) for d in listed] == [("wine", 178)]
    preview = cli_json(controller.cli("datasets", "preview", "wine", "--rows", "3", "--json"))
    assert preview["columns"][-1] == "cultivar" and len(preview["rows"]) == 3 and preview["rows"][0][-1] == "class_0"
    refused = controller.cli("datasets", "delete", "wine")
    assert refused.returncode == 2 and "is used by job(s)" in refused.stderr, refused.stderr
    spare = _csv(tmp_path / "spare.csv", ["a", "b"], [[1, 2], [3, 4]])
    cli_json(controller.cli("datasets", "upload", str(spare), "--json"))
    assert cli_json(controller.cli("datasets", "delete", "spare", "--json"))["name"] == "spare"
    assert [d["name"] for d in cli_json(controller.cli("datasets", "list", "--json")) if not d["builtin"]] == ["wine"]
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
    result = controller.cli("datasets", "upload", str(empty))  # a version of one file, not a table: a warning
    assert result.returncode == 0 and "is not a table" in result.stderr and "no data rows" in result.stderr
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


def test_user_parquet_datasets(shared_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    controller, _ = shared_cluster
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
    result = controller.cli("datasets", "upload", str(broken))  # a version of one file, not a table: a warning
    assert result.returncode == 0 and "is not a table" in result.stderr
    assert "broken.parquet is not a readable Parquet file" in result.stderr
