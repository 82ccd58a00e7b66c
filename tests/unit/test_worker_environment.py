"""What reaches user code and serve's local agent from the environment they are started from."""

from __future__ import annotations

from tensorfleet_agent.runtime.process import worker_environment
from tensorfleet_desktop.controller.local_agent import local_agent_environment

AGENT_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/me",
    "TENSORFLEET_CLUSTER_TOKEN": "c",
    "TENSORFLEET_JOIN_TOKEN": "j",
    "TENSORFLEET_CONTROLLER_TOKEN": "t",
    "TENSORFLEET_MONGODB_URI": "mongodb://u:p@h/db",
    "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "session",
    "AWS_REGION": "eu-west-1",
}


def test_a_worker_gets_no_tensorfleet_variable_and_no_aws_credential_of_the_agent() -> None:
    env = worker_environment(AGENT_ENV)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/me", "AWS_REGION": "eu-west-1"}


def test_the_agents_package_index_settings_stay_with_its_env_builds() -> None:
    agent = {
        **AGENT_ENV,
        "UV_INDEX_URL": "https://me:pw@mirror.lan/simple",
        "UV_OFFLINE": "1",
        "PIP_INDEX_URL": "https://me:pw@mirror.lan/simple",
        "PIPELINE": "kept",
    }
    env = worker_environment(agent)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/me", "AWS_REGION": "eu-west-1", "PIPELINE": "kept"}


def test_a_tasks_own_env_may_set_aws_keys_but_no_tensorfleet_name() -> None:
    task_env = {"AWS_ACCESS_KEY_ID": "mine", "TENSORFLEET_CLUSTER_TOKEN": "forged", "SEED": "1"}
    env = worker_environment(AGENT_ENV, task_env)
    assert env["AWS_ACCESS_KEY_ID"] == "mine" and env["SEED"] == "1"
    assert not [name for name in env if name.startswith("TENSORFLEET_")]
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_serves_local_agent_gets_none_of_the_controllers_secrets() -> None:
    env = local_agent_environment(AGENT_ENV)
    for name in (
        "TENSORFLEET_CLUSTER_TOKEN",
        "TENSORFLEET_JOIN_TOKEN",
        "TENSORFLEET_CONTROLLER_TOKEN",
        "TENSORFLEET_MONGODB_URI",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        assert name not in env, name
    assert env["TENSORFLEET_MDNS_INTERFACES"] == "127.0.0.1" and env["AWS_REGION"] == "eu-west-1"
