"""What a forked worker does at the end of a task without searching the process table (docs/architecture.md,
'Warm workers'): it says whether it is alone (no process, no Python thread left), and a child sets its slot's thread
caps through the threadpoolctl controller the fork server made once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tensorfleet_agent.runtime import process
from tensorfleet_agent.runtime.process import WorkerProcess

pytestmark = pytest.mark.slow


def _python(code: str, **env: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_worker_is_alone_only_without_a_child_process_or_a_python_thread() -> None:
    _python(
        """
        import subprocess, threading, time
        from tensorfleet_agent.runtime.worker import alone, has_children
        assert alone() and not has_children()
        child = subprocess.Popen(["sleep", "30"])
        assert has_children() and not alone()
        child.kill()
        time.sleep(0.2)
        assert has_children(), "a zombie child is still a child (and stays its owner's to reap)"
        assert child.wait() == -9
        assert alone()
        thread = threading.Thread(target=time.sleep, args=(0.3,))
        thread.start()
        assert not alone() and not has_children()
        thread.join()
        assert alone()
        """
    )


def test_a_forked_child_raises_its_caps_through_the_controller_made_in_the_fork_server() -> None:
    _python(
        """
        import os, sys
        import numpy
        from tensorfleet_agent.runtime import forkserver
        forkserver._pools.refresh()
        assert "threadpoolctl" in sys.modules  # imported and searched once, here
        pid = os.fork()
        if pid == 0:
            forkserver._pools.raise_caps("2")
            from threadpoolctl import threadpool_info
            caps = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
            os._exit(0 if caps.get("openblas") == 2 else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        """,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )


async def test_a_noop_task_leaves_its_worker_alone_and_ending_it_searches_no_process_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    worker = await WorkerProcess.spawn(dict(os.environ), str(tmp_path))
    worker.send(
        {
            "op": "run",
            "entry": "tensorfleet_agent.workloads.diagnostic:noop",
            "spec": {"task_id": "t", "job_id": "j", "params": {}},
            "task_dir": str(tmp_path),
            "blobs_dir": str(tmp_path),
        }
    )
    done: dict[str, object] = {}
    while not done:
        messages = await worker.next_messages(timeout=30)
        assert messages, "the worker said nothing"
        done = next((m for m in messages if m.get("t") == "done"), {})
    assert done["ok"] is True and done["alone"] is True, done
    worker.alone = True  # what the executor does with it

    def search(pid: int, stop_root: bool) -> list[object]:
        raise AssertionError("the process table was searched")

    monkeypatch.setattr(process, "kill_descendants", search)
    assert await worker.kill_leftovers() == 0
    await worker.kill_tree()
    assert await worker.wait() == -9
