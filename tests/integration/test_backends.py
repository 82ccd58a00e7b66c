"""The controller on MongoDB (a SecantusDB server process, or TENSORFLEET_TEST_MONGODB_URI): one shared history,
clear errors when the server is missing, and no lost writes while it hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess
from helpers.servers import S3_KEY, S3_SECRET, ServerProcess, free_port, start_nanio, start_secantus
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def _start_together(*processes: AgentProcess | ControllerProcess) -> None:
    """Spawn all, then wait for each: the controller finds the agent as it comes, as on a real machine."""
    for process in processes:
        process.spawn()
    for process in processes:
        process.wait_ready()


@pytest.fixture(scope="module")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess | None, str]]:
    """One database server for the module (each test gets a database of its own): TENSORFLEET_TEST_MONGODB_URI,
    or SecantusDB."""
    real = os.environ.get("TENSORFLEET_TEST_MONGODB_URI")
    if real:
        yield None, real.rstrip("/")
        return
    server, uri = start_secantus(tmp_path_factory.mktemp("secantus"))
    yield server, uri
    server.stop()


@pytest.fixture
def mongo(mongo_server: tuple[ServerProcess | None, str]) -> tuple[ServerProcess | None, str]:
    """(the server, when this suite started it; a database URI no other test uses)."""
    server, uri = mongo_server
    return server, f"{uri}/tf_{uuid.uuid4().hex[:12]}"


def test_a_controller_on_mongodb_trains_registers_and_remembers(
    mongo: tuple[ServerProcess | None, str],
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
) -> None:
    _server, uri = mongo
    controller = controller_factory(tmp_path / "controller", extra_args=["--store", uri])
    _start_together(agent_factory(tmp_path / "agent", name="agent-0", cpu_slots=1), controller)
    with Client(controller.address) as client:
        assert client.info()["store"] == uri
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent")
        job = client.wait(
            client.submit({"algorithm": "random_forest", "dataset": "iris", "model_name": "iris-rf"})["id"], timeout=120
        )
        assert job["state"] == "SUCCEEDED" and job["model"] == {"name": "iris-rf", "version": 1}
        model = client.load_model("iris-rf:1")
        assert model.n_estimators == 100
    controller.stop()
    # a second controller on the same database (another machine of the team) sees the same history
    other = controller_factory(tmp_path / "controller-2", extra_args=["--store", uri]).start()
    with Client(other.address) as client:
        again = client.job(job["id"])
        assert again["state"] == "SUCCEEDED" and again["metrics"] == job["metrics"]
        assert [m["version"] for m in client.models(name="iris-rf")["models"]] == [1]
        assert any(p["name"] == "test_accuracy" for p in client.metrics(job["id"]))


def test_mongodb_unreachable_at_start_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [
            sys.executable, "-m", "tensorfleet_desktop", "serve", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(tmp_path), "--no-local-agent", "--no-mdns",
            "--store", f"mongodb://admin:s3cret-pw@127.0.0.1:{port}/tf?serverSelectionTimeoutMS=1500",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said = " ".join(result.stderr.split())
    assert result.returncode == 2
    assert f"cannot reach MongoDB at mongodb://admin:***@127.0.0.1:{port}/tf" in said and "within 1.5s" in said, said
    assert "Connection refused" in said
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "the password in --store shows in `ps` to every user of this machine" in said  # and where it belongs


def test_unknown_store_scheme_lists_the_supported_ones(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tensorfleet_desktop", "serve", "--data-dir", str(tmp_path), "--no-local-agent",
         "--no-mdns", "--store", "postgres://u:pw@db/tf"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said = " ".join(result.stderr.split())
    assert result.returncode == 2
    assert "'postgres://u:***@db/tf'" in said and "supported schemes are sqlite://, mongodb://, mongodb+srv://" in said


def test_a_hung_mongodb_delays_writes_but_loses_none(
    mongo: tuple[ServerProcess | None, str],
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
) -> None:
    server, uri = mongo
    if server is None:
        pytest.skip("pausing needs the SecantusDB process this suite starts itself")
    controller = controller_factory(tmp_path / "controller", extra_args=["--store", uri])
    _start_together(agent_factory(tmp_path / "agent", name="agent-0", cpu_slots=1), controller)
    with Client(controller.address) as client:
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent")
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 60, "rate": 20, "name": "x"}})
        wait_until(lambda: "x" in client.job(job["id"])["metrics"], 30, "the first points")  # mid-stream
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            time.sleep(4)  # the scenario, not a wait: MongoDB hangs for 4 s while points keep coming
        finally:
            server.resume()
        final = client.wait(job["id"], timeout=120)
        assert final["state"] == "SUCCEEDED"
    controller.stop()
    restarted = controller_factory(tmp_path / "controller-2", extra_args=["--store", uri]).start()
    with Client(restarted.address) as client:
        stored = client.job(job["id"])
        points = [p["value"] for p in client.metrics(job["id"], ("x",))]
    assert stored["state"] == "SUCCEEDED"
    assert points == [float(i) for i in range(60)]  # every point written, in order, none twice


@pytest.fixture(scope="module")
def nanio_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nanio for the module's tests (each test gets a bucket of its own)."""
    server, endpoint = start_nanio(tmp_path_factory.mktemp("nanio"))
    yield endpoint
    server.stop()


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """(blob store URI, credentials environment): TENSORFLEET_TEST_S3_URI with the AWS_* variables, or a new
    bucket on nanio."""
    real = os.environ.get("TENSORFLEET_TEST_S3_URI")
    if real:
        return real, {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    endpoint = request.getfixturevalue("nanio_endpoint")
    return (
        f"s3://tensorfleet-{uuid.uuid4().hex[:8]}?endpoint={endpoint}&secure=false",
        {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET},
    )


def test_mongodb_and_s3_end_to_end(
    mongo: tuple[ServerProcess | None, str],
    s3: tuple[str, dict[str, str]],
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_wine

    _server, store = mongo
    blobs, creds = s3
    agent = agent_factory(tmp_path / "agent", name="agent-0", cpu_slots=1)
    env = {"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, **creds}
    args = ["--store", store, "--blobs", blobs]
    controller = controller_factory(tmp_path / "controller", extra_args=args, env=env)
    _start_together(agent, controller)
    with Client(controller.address) as client:
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent")
        job = client.wait(client.submit({"algorithm": "svm", "dataset": "wine", "model_name": "wine-svm"})["id"], 120)
        assert job["state"] == "SUCCEEDED" and job["model"]["version"] == 1
        sha = client.model("wine-svm:1")["sha256"]
        # user data goes to the agent straight from S3 (a presigned URL), not through the controller
        wine = load_wine()
        data = tmp_path / "wine.csv"
        rows = [",".join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(wine.data, wine.target, strict=True)]
        data.write_text("\n".join([",".join([*wine.feature_names, "cultivar"]), *rows]) + "\n")
        uploaded = client.upload_dataset(data)
        spec = {"algorithm": "knn", "dataset": "wine", "target": "cultivar"}
        assert client.wait(client.submit(spec)["id"], 120)["state"] == "SUCCEEDED"
    agent_log = agent.log_path.read_text()
    assert f"fetched blob {uploaded['sha256'][:12]}" in agent_log  # from the object store
    assert f"pushed blob {sha[:12]}" in agent_log  # the model went from the agent into S3 directly
    assert not (tmp_path / "controller" / "blob-cache" / sha[:2] / sha).exists()
    assert creds["AWS_SECRET_ACCESS_KEY"] not in controller.logs()
    controller.stop()
    # another controller, empty data dir: the model comes from S3, the record from MongoDB
    other = controller_factory(tmp_path / "elsewhere", extra_args=args, env=env).start()
    with Client(other.address) as client:
        model = client.load_model("wine-svm")
        record = client.download_model("wine-svm:1", tmp_path / "wine.skops")
    x, y = load_wine(return_X_y=True)
    assert record["sha256"] == sha and (model.predict(x) == y).mean() > 0.6
    assert (tmp_path / "elsewhere" / "blob-cache" / sha[:2] / sha).exists()


def test_wrong_s3_credentials_are_a_clear_error(s3: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    blobs, creds = s3
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = subprocess.run(
        [sys.executable, "-m", "tensorfleet_desktop", "serve", "--data-dir", str(tmp_path / "c"), "--port", "0",
         "--host", "127.0.0.1", "--no-local-agent", "--no-mdns", "--blobs", blobs],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "refused the credentials" in said and "AWS_SECRET_ACCESS_KEY" in said, said
    assert "not-the-secret" not in said


def test_registry_moves_from_the_embedded_default_to_mongodb_and_s3(
    mongo: tuple[ServerProcess | None, str],
    s3: tuple[str, dict[str, str]],
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
) -> None:
    _server, store = mongo
    blobs, creds = s3
    embedded = controller_factory(tmp_path / "embedded")
    _start_together(agent_factory(tmp_path / "agent", name="agent-0", cpu_slots=1), embedded)
    with Client(embedded.address) as client:
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent")
        for c in (0.5, 2.0):
            spec = {"algorithm": "svm", "dataset": "iris", "model_name": "iris-svm", "hyperparameters": {"C": c}}
            assert client.wait(client.submit(spec)["id"], 120)["state"] == "SUCCEEDED"
        client.set_alias("iris-svm:2", "production")
        client.tag_model("iris-svm:1", "baseline")
        before = client.models(name="iris-svm")["models"]
    embedded.stop()
    backup = tmp_path / "backup"
    env = {**os.environ, **creds}
    base = [sys.executable, "-m", "tensorfleet_desktop", "registry"]
    done = subprocess.run(
        [*base, "export", str(backup), "--data-dir", str(tmp_path / "embedded"), "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    moved = [*base, "import", str(backup), "--data-dir", str(tmp_path / "team"), "--store", store, "--blobs", blobs]
    for expected in ({"versions": 2, "skipped": 0, "datasets": 0}, {"versions": 0, "skipped": 2, "datasets": 0}):
        result = subprocess.run([*moved, "--json"], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0 and json.loads(result.stdout) == expected, result.stderr  # twice is harmless
    team = controller_factory(
        tmp_path / "team-controller", extra_args=["--store", store, "--blobs", blobs], env={**creds}
    ).start()
    with Client(team.address) as client:
        after = client.models(name="iris-svm")["models"]
        assert [(m["version"], m["aliases"], m["tags"], m["sha256"]) for m in after] == [
            (m["version"], m["aliases"], m["tags"], m["sha256"]) for m in before
        ]
        assert client.model("iris-svm@production")["hyperparameters"]["C"] == 2.0
        assert client.load_model("iris-svm@production").C == 2.0
    (backup / "blobs" / before[0]["sha256"]).write_bytes(b"not the model")
    damaged = subprocess.run([*moved], capture_output=True, text=True, timeout=120, env=env)
    assert damaged.returncode == 2 and "does not hash to its name" in damaged.stderr


def test_the_config_file_names_the_backends_and_their_credentials(
    mongo: tuple[ServerProcess | None, str],
    s3: tuple[str, dict[str, str]],
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
) -> None:
    _server, store = mongo
    blobs, creds = s3
    data_dir = tmp_path / "controller"
    data_dir.mkdir()
    config = data_dir / "config.toml"
    config.write_text(
        f'[store]\nuri = "{store}"\n\n[blobs]\nuri = "{blobs}"\n'
        f'access_key = "{creds["AWS_ACCESS_KEY_ID"]}"\nsecret_key = "{creds["AWS_SECRET_ACCESS_KEY"]}"\n'
    )
    config.chmod(0o644)
    serve = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--data-dir", str(data_dir), "--no-mdns"]
    refused = subprocess.run([*serve, "--no-local-agent"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "others can read it: chmod 600" in " ".join(refused.stderr.split())
    config.chmod(0o600)
    controller = controller_factory(data_dir).start()
    with Client(controller.address) as client:
        info = client.info()
    assert info["store"] == store and info["blobs"] == blobs.split("?")[0]
    assert creds["AWS_SECRET_ACCESS_KEY"] not in controller.logs()
    bad = tmp_path / "bad.toml"
    bad.write_text('[storage]\nuri = "x"\n')
    result = subprocess.run([*serve, "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown section [storage]" in result.stderr
