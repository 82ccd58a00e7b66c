"""Item 12: with a display, `scripts/demo` (`tensorfleet demo`) and `tensorfleet gui --demo` open the app on a demo
cluster that outlives the window until Quit and stop; without one, the terminal table as before."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from helpers.servers import free_port
from helpers.waiting import wait_until
from tensorfleet_agent.datadir_lock import holder_of
from tensorfleet_desktop.cli import demo as demo_cli
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.demo import demo_specs
from tensorfleet_desktop.local_cluster import DEMO_AGENTS, start_demo_cluster


def _decide(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], installed: bool = True, x11: str = ""
) -> str:
    """Which demo `tensorfleet demo ARGV` runs in this environment: "window", "table" or "refused"."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr("tensorfleet_desktop.cli.gui.desktop_installed", lambda: installed)
    monkeypatch.setattr("tensorfleet_desktop.cli.gui.x11_problem", lambda: x11)
    monkeypatch.setattr("tensorfleet_desktop.demo.run_gui_demo", lambda *a, **k: 100)
    monkeypatch.setattr("tensorfleet_desktop.demo.run_demo", lambda *a, **k: True)
    parser = argparse.ArgumentParser()
    demo_cli.add_parser(parser.add_subparsers())
    code = demo_cli.run(parser.parse_args(["demo", *argv]))
    return {100: "window", 0: "table"}.get(code, "refused")


def test_demo_opens_the_window_only_where_there_is_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _decide(monkeypatch, [], {"DISPLAY": ":0"}) == "window"
    assert _decide(monkeypatch, [], {"WAYLAND_DISPLAY": "wayland-0"}) == "window"
    # CI: no display, Qt offscreen for the GUI tests: the table, as the README's first command always printed
    assert _decide(monkeypatch, [], {"QT_QPA_PLATFORM": "offscreen"}) == "table"
    assert _decide(monkeypatch, [], {}) == "table"
    assert _decide(monkeypatch, ["--no-gui"], {"DISPLAY": ":0"}) == "table"
    assert _decide(monkeypatch, ["--json"], {"DISPLAY": ":0"}) == "table"
    assert _decide(monkeypatch, [], {"DISPLAY": ":0"}, installed=False) == "table"  # the CLI-only install
    assert _decide(monkeypatch, ["--gui"], {"QT_QPA_PLATFORM": "offscreen"}) == "window"
    assert _decide(monkeypatch, ["--gui"], {}) == "refused"  # says why instead of a Qt abort
    assert _decide(monkeypatch, ["--gui"], {"DISPLAY": ":0"}, installed=False) == "refused"
    # an X display whose Qt X11 plugin cannot load (libxcb-* missing): the table, not Qt aborting the process
    assert _decide(monkeypatch, [], {"DISPLAY": ":0"}, x11="libxcb-icccm.so.4 missing") == "table"
    assert _decide(monkeypatch, ["--gui"], {"DISPLAY": ":0"}, x11="libxcb-icccm.so.4 missing") == "refused"


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.mark.slow
def test_gui_demo_cluster_outlives_the_window_until_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable = Path(sys.executable).with_name("tensorfleet")
    port = free_port()  # never the 50050 (or the demo's 50055) of a developer's own cluster
    address = f"127.0.0.1:{port}"
    user_data, runtime = tmp_path / "xdg-data", tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENSORFLEET_", "XDG_"))}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env |= {
        "QT_QPA_PLATFORM": "offscreen",
        "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1",
        "TENSORFLEET_DEMO_PORT": str(port),
        "TENSORFLEET_RUNTIME_DIR": str(runtime),
        "XDG_DATA_HOME": str(user_data),  # the demo's persistent data dir: the user's …/tensorfleet/demo
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
    }
    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(runtime))  # this test's Client finds the token there
    monkeypatch.delenv("TENSORFLEET_CONTROLLER_TOKEN", raising=False)
    demo_dir = user_data / "tensorfleet" / "demo"
    shot = tmp_path / "window.png"
    pids: list[int] = []
    try:
        window = subprocess.run(
            [str(executable), "gui", "--demo", "--screenshot", str(shot)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        controller = holder_of(demo_dir / "controller")
        agents = [holder_of(demo_dir / name) for name in DEMO_AGENTS]
        pids = [h.pid for h in (controller, *agents) if h is not None]
        assert window.returncode == 0, f"exit {window.returncode}\n{window.stderr}"
        assert "Traceback" not in window.stderr and "Task was destroyed" not in window.stderr, window.stderr
        assert f"started the demo cluster on {address}" in window.stderr, window.stderr
        assert shot.stat().st_size > 10_000, "the window never showed the fleet"  # --screenshot: saved, then quit
        assert controller is not None and controller.address == address, controller
        assert all(agents) and len(pids) == 3

        # the window's process is gone; the cluster it opened on is not, and trains the demo jobs
        assert not any(_gone([pid]) for pid in pids)
        with Client(address) as client:
            jobs = client.jobs()
            assert sorted(j["name"] for j in jobs) == sorted(s["name"] for s in demo_specs())
            wait_until(lambda: any(j["state"] == "SUCCEEDED" for j in client.jobs()), 30, "a demo job to succeed")
            agents_online = {a["name"] for a in client.agents() if a["state"] == "ONLINE"}
            assert agents_online == set(DEMO_AGENTS)

            # launched again (window or not), the running cluster is reused, not a second one started
            again = asyncio.run(start_demo_cluster(demo_dir, port))
            assert (again.started, again.controller_pid, sorted(again.agent_pids)) == (
                False,
                pids[0],
                sorted(pids[1:]),
            )

            client.shutdown()  # what the app's Quit and stop calls
        wait_until(lambda: _gone(pids), 20, "the demo controller and both agents to exit")
    finally:  # a failed run leaves nothing behind (a window that timed out included)
        holders = [holder_of(demo_dir / name) for name in ("controller", *DEMO_AGENTS)]
        for pid in {*pids, *(h.pid for h in holders if h is not None and h.pid)}:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if str(demo_dir) in " ".join(process.cmdline()):  # still ours, not a reused pid
                    process.send_signal(signal.SIGKILL)
