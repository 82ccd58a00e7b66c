"""core.version reads installed versions without importlib.metadata, and must answer what it would."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tensorfleet_agent.core.version import AGENT_VERSION, installed_version


def _metadata_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_every_installed_distribution_reads_as_importlib_metadata_says() -> None:
    names = {str(d.metadata["Name"]) for d in metadata.distributions()}
    names |= {"scikit-learn", "SCIKIT_learn", "typing.extensions", "no-such-distribution"}
    assert len(names) > 20
    assert {name: installed_version(name) for name in names} == {name: _metadata_version(name) for name in names}


def test_the_version_the_cli_and_agent_report_is_the_installed_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tensorfleet_desktop", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"tensorfleet {metadata.version('tensorfleet')}" == f"tensorfleet {AGENT_VERSION}"


def test_the_first_sys_path_entry_holding_one_wins_and_a_zip_is_left_to_importlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = tmp_path / "early"
    (early / "Fake_Dist-9.9.dist-info").mkdir(parents=True)
    (early / "Fake_Dist-9.9.dist-info" / "METADATA").write_text("Name: fake-dist\nVersion: 9.9\n\nVersion: 0\n")
    late = tmp_path / "late"
    (late / "fake.dist.egg-info").mkdir(parents=True)
    (late / "fake.dist.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: fake.dist\nversion: 1.0\n")
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped_dist-2.5.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped-dist\nVersion: 2.5\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(early), str(late), *sys.path])
    assert installed_version("fake-dist") == _metadata_version("fake-dist") == "9.9"
    monkeypatch.setattr(sys, "path", [str(late), str(early), *sys.path])
    assert installed_version("FAKE_DIST") == _metadata_version("FAKE_DIST") == "1.0"
    monkeypatch.setattr(sys, "path", [str(archive), *sys.path])
    assert installed_version("zipped-dist") == _metadata_version("zipped-dist") == "2.5"
