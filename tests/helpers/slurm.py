"""A real Slurm on 127.0.0.1 for the pool tests: munged + slurmctld + slurmd in a temp BASE, no systemd.

Debian's slurm-wlm (22.05) as DESIGN.md's recipe has it: one node named after this host at 127.0.0.1, two fake
GPUs (GRES files that are symlinks to /dev/null: Slurm then sets CUDA_VISIBLE_DEVICES for --gres=gpu:N),
jobcomp/filetxt so `sacct -c` lists ended jobs without slurmdbd. `SlurmCluster.env` is what a client needs
(SLURM_CONF); the binaries' absence is a skip with a printed reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.servers import free_port

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sacct")
SKIP_REASON = "needs Slurm and munge (apt-get install slurmctld slurmd slurm-client munge)"
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def tool(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH)


def missing() -> list[str]:
    return [b for b in BINARIES if tool(b) is None]


@dataclass
class SlurmCluster:
    base: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm's clients: its config, and its binaries on PATH."""
        bindir = str(Path(tool("sbatch") or "/usr/bin/sbatch").parent)
        return {"SLURM_CONF": str(self.conf), "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}

    def run(self, *args: str, timeout: float = 20.0) -> str:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env}, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs squeue lists now (any state)."""
        out = self.run("squeue", "--noheader", "--format=%i")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _write_config(self) -> None:
        b = self.base
        for sub in ("state", "spool", "log", "fakedev"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            dev = b / "fakedev" / f"gpu{i}"
            if not dev.exists():
                dev.symlink_to("/dev/null")
        user = _user()
        hw = subprocess.run([tool("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        node_line = next(line for line in hw.splitlines() if line.startswith("NodeName="))
        fields = dict(item.split("=", 1) for item in node_line.split())
        keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        hardware = " ".join(f"{k}={fields[k]}" for k in keep if k in fields)
        memory = max(1, int(fields.get("RealMemory", "1024")) - 256)
        self.conf.write_text(
            f"""ClusterName=tftest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={b}/munge.socket.2
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={b}/jobcomp.txt
MpiDefault=none
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=2
KillWait=5
DefMemPerCPU=256
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 {hardware} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (b / "gres.conf").write_text(f"AutoDetect=off\nName=gpu File={b}/fakedev/gpu[0-1]\n")
        (b / "cgroup.conf").write_text("")

    def start(self, timeout: float = 20.0) -> SlurmCluster:
        self._write_config()
        b = self.base
        key = b / "munge.key"
        subprocess.run([tool("mungekey") or "mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o600)
        munged = [
            tool("munged") or "munged", "--force", "--foreground", f"--key-file={key}",
            f"--socket={b}/munge.socket.2", f"--pid-file={b}/munged.pid", f"--log-file={b}/log/munged.log",
            f"--seed-file={b}/munged.seed",
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        self._spawn(munged, env, "munged")
        _wait(lambda: (b / "munge.socket.2").exists(), timeout, "munged's socket")
        self._spawn([tool("slurmctld") or "slurmctld", "-D", "-i"], env, "slurmctld")
        self._spawn([tool("slurmd") or "slurmd", "-D"], env, "slurmd")
        _wait(self._node_ready, timeout, "the Slurm node to come up (see log/ in the BASE dir)")
        return self

    def _spawn(self, cmd: list[str], env: dict[str, str], name: str) -> None:
        log = (self.base / "log" / f"{name}.out").open("ab")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def _node_ready(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                logs = "\n".join(p.read_text()[-2000:] for p in (self.base / "log").glob("*") if p.is_file())
                raise AssertionError(f"a Slurm daemon exited ({proc.args[0]}, {proc.returncode}):\n{logs}")
        done = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, env={**os.environ, **self.env}
        )
        return done.returncode == 0 and done.stdout.strip() in ("idle", "mix", "alloc")

    def stop(self) -> None:
        """Cancel what still runs and wait for it to leave (slurmd ends its processes: the agents of a test that
        failed midway must not outlive the cluster), then stop the daemons."""
        with contextlib.suppress(Exception):
            for job in self.jobs():
                subprocess.run(["scancel", job], env={**os.environ, **self.env}, capture_output=True, timeout=10)
            _wait(lambda: not self.jobs(), 15, "the cancelled jobs to end")
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def slurm_cluster(base: Path) -> Iterator[SlurmCluster]:
    """A started cluster (skipping with a printed reason when Slurm is not installed), stopped afterwards."""
    absent = missing()
    if absent:
        print(f"skipping: {SKIP_REASON}; missing {', '.join(absent)}")
        pytest.skip(SKIP_REASON)
    cluster = SlurmCluster(base)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
