"""A pool with `--login user@host[:port]` runs Slurm's commands on the login node through ssh (batch mode): the
command line must reach the remote shell quoted as it was meant, and the batch script only on stdin. Here `ssh`
and `sbatch` are stand-ins on PATH (real processes; a real sshd is not available on this machine)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tensorfleet_desktop.controller.pools.slurm import SlurmDriver, SlurmError

FAKE_SSH = """#!/bin/sh
# record the options and the host, then run the remote command line as sshd would: through a shell
log="$FAKE_LOG"
opts=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    -o|-p) opts="$opts $1 $2"; shift 2 ;;
    --) shift; break ;;
    *) host="$1"; shift ;;
  esac
done
printf '%s\\n' "host=$host opts=$opts" >> "$log"
printf '%s\\n' "remote=$*" >> "$log"
exec sh -c "$*"
"""
FAKE_SBATCH = """#!/usr/bin/env python3
import json, os, sys
script = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("sbatch=" + json.dumps({"argv": sys.argv[1:], "script": script}) + "\\n")
if "--fail" in sys.argv:
    print("sbatch: error: Batch job submission failed: Invalid partition name specified", file=sys.stderr)
    sys.exit(1)
print("4242;cluster")
"""


def _calls(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("ssh", FAKE_SSH), ("sbatch", FAKE_SBATCH)):
        path = bin_dir / name
        path.write_text(body, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


async def test_sbatch_runs_on_the_login_node_with_its_arguments_quoted(fakes: Path) -> None:
    driver = SlurmDriver(login="alice@login1:2222")
    script = "#!/bin/bash\necho 'hello; $(not run here)'\n"
    job = await driver.submit(script, ["--partition=gpu", "--comment=two words; and a 'quote'"])
    assert job == "4242"
    lines = _calls(fakes)
    assert lines[0] == "host=alice@login1 opts= -o BatchMode=yes -o ConnectTimeout=10 -p 2222"
    sbatch = json.loads(lines[-1].removeprefix("sbatch="))
    assert sbatch["argv"] == ["--parsable", "--partition=gpu", "--comment=two words; and a 'quote'"]
    assert sbatch["script"] == script  # on stdin, untouched by either shell


async def test_a_refusal_on_the_login_node_names_the_command_and_slurms_words(fakes: Path) -> None:
    driver = SlurmDriver(login="alice@login1")
    with pytest.raises(SlurmError, match=r"sbatch failed \(1\): sbatch: error: .*Invalid partition name"):
        await driver.submit("#!/bin/bash\n", ["--fail"])
    assert "opts= -o BatchMode=yes -o ConnectTimeout=10" in _calls(fakes)[0]
