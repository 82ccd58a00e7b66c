"""A project's file requests, carried out by the runner (issue 19): `save_artifact` / `save_checkpoint` /
`register_model` of the task SDK name a file; the runner stores it into the blob cache with tensorfleet_agent.task
and answers, so the SDK call returns once the file is stored (it may be overwritten right after) and a refusal is
raised in the user's code as the error type the answer names.

register_model saves the file as a "model" artifact (its name with its format's suffix: the controller's registry
tells formats by the name) and a "report" artifact `{"model_name", "format", "versions", "model_file", "sha256",
"size"}`; formats skops / safetensors / onnx, "pickle" only with allow_pickle=True (the SDK checks before sending,
this checks again).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tensorfleet_agent import task as task_api

FILE_REQUESTS = ("artifact_file", "checkpoint_file", "register_model")
FORMATS = ("skops", "safetensors", "onnx", "pickle")
MODEL_SUFFIX = {"skops": ".skops", "safetensors": ".safetensors", "onnx": ".onnx", "pickle": ".pkl"}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class Refused(Exception):
    """A file request the runner will not carry out: answered to the SDK, which raises it as `kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class FileRequests:
    """Carries out one task's file requests; paths are relative to the project dir."""

    def __init__(self, workdir: Path, task_dir: Path) -> None:
        self.workdir = workdir
        self.task_dir = task_dir
        self.models = 0

    def answer(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        """The request carried out: {"ok": True, "sha256", "size"}; Refused or OSError when it was not."""
        if kind == "artifact_file":
            return self._artifact(message)
        if kind == "checkpoint_file":
            return self._checkpoint(message)
        return self._register_model(message)

    def _file(self, message: dict[str, Any]) -> Path:
        raw = message.get("path")
        if not isinstance(raw, str) or not raw:
            raise Refused("ValueError", "no path given")
        path = Path(raw) if os.path.isabs(raw) else self.workdir / raw
        if not path.exists():
            raise Refused("FileNotFoundError", f"no such file: {path}")
        if not path.is_file():
            raise Refused("ValueError", f"{path} is not a regular file")
        return path

    def _name(self, message: dict[str, Any], path: Path) -> str:
        name = message.get("name") or path.name
        if not isinstance(name, str) or "/" in name or "\x00" in name or len(name) > 255:
            raise Refused("ValueError", f"name must be a file name (no '/', at most 255 characters), got {name!r}")
        return name

    def _artifact(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        kind = message.get("kind") or "artifact"
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise Refused("ValueError", f"kind must be 1-64 letters, digits, '.', '_' or '-', got {kind!r}")
        name = self._name(message, path)
        size = path.stat().st_size
        digest = task_api.save_artifact(path, kind=kind, name=name)
        return {"ok": True, "sha256": digest, "size": size}

    def _checkpoint(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        step = message.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise Refused("ValueError", f"step must be a non-negative integer, got {step!r}")
        name = self._name(message, path)
        size = path.stat().st_size
        digest = task_api.save_checkpoint(path, step, name=name)
        return {"ok": True, "sha256": digest, "size": size}

    def _register_model(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        fmt = message.get("format")
        if fmt is None:
            fmt = model_format_of(path.name)
        if fmt not in FORMATS:
            raise Refused("ValueError", f"unknown model format {fmt!r} (known: {', '.join(FORMATS)})")
        if fmt == "pickle" and message.get("allow_pickle") is not True:
            raise Refused(
                "ValueError",
                f"refusing to register {path.name}: a pickle model runs arbitrary code when it is loaded"
                " (pass allow_pickle=True to accept that)",
            )
        name = message.get("name")
        if name is not None and (not isinstance(name, str) or not _MODEL_NAME.fullmatch(name)):
            raise Refused("ValueError", f"model name may only hold letters, digits, '.', '_' and '-', got {name!r}")
        versions = message.get("versions")
        versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
        file_name = model_file_name(path.name, fmt)
        size = path.stat().st_size
        digest = task_api.save_artifact(path, kind="model", name=file_name)
        self.models += 1
        report = {
            "model_name": name or "",
            "format": fmt,
            "versions": versions,
            "model_file": file_name,
            "sha256": digest,
            "size": size,
        }
        report_path = self.task_dir / f"model-report-{self.models}.json"
        report_path.write_text(json.dumps(report, indent=1))
        task_api.save_artifact(report_path, kind="report", name="model-report.json")
        return {"ok": True, "sha256": digest, "size": size}


def model_format_of(file_name: str) -> str:
    """The format a model file's suffix names; Refused when it names none."""
    suffix = Path(file_name).suffix.lower()
    for fmt, known in MODEL_SUFFIX.items():
        if suffix == known:
            return fmt
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    raise Refused("ValueError", f"cannot tell the model format of {file_name} from its suffix; name format=")


def model_file_name(file_name: str, fmt: str) -> str:
    """The model artifact's name: the file's, with its format's suffix added when it has another one (the
    controller's registry tells formats by the name)."""
    try:
        if model_format_of(file_name) == fmt:
            return file_name
    except Refused:
        pass
    return file_name + MODEL_SUFFIX[fmt]
