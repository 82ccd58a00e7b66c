"""Downloaded models load and predict from their files alone, in a Python that cannot import TensorFleet, with
the few lines the README documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"README has no single python block starting with {first_line!r}"
    return found[0]


def run_isolated(snippets: list[str], cwd: Path, rows: list[list[float]]) -> list[list[object]]:
    """Run the snippets in one `python -I -S` (no site, so no editable install) whose sys.path is the stdlib
    plus the site-packages that hold torch, safetensors, numpy, scikit-learn and skops; each snippet's `labels`."""
    import numpy
    import safetensors
    import sklearn
    import skops
    import torch

    modules = (torch, safetensors, numpy, sklearn, skops)
    sites = sorted({str(Path(str(m.__file__)).resolve().parents[1]) for m in modules})
    code = [
        "import json, sys",
        f"sys.path[:] = [p for p in sys.path if p and 'site-packages' not in p] + {sites!r}",
        "for name in ('tensorfleet_agent', 'tensorfleet_desktop'):",
        "    try:",
        "        __import__(name)",
        "    except ImportError:",
        "        continue",
        "    raise SystemExit(f'{name} is importable: this is not a clean environment')",
        "results = []",
    ]
    for snippet in snippets:
        code += [f"rows = {rows!r}", snippet, "results.append([getattr(v, 'item', lambda: v)() for v in labels])"]
    code.append("print(json.dumps(results))")
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "\n".join(code)], cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_downloaded_models_predict_in_a_clean_python(
    cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    import torch
    from sklearn.datasets import load_iris

    controller, _ = cluster
    specs = [
        {"algorithm": "torch_mlp", "dataset": "iris", "hyperparameters": {"epochs": 1}, "model_name": "iris-mlp"},
        {"algorithm": "decision_tree", "dataset": "iris", "model_name": "iris-tree"},
    ]
    with Client(controller.address) as client:
        ids = [client.submit(spec)["id"] for spec in specs]
        assert [client.wait(i, timeout=180)["state"] for i in ids] == ["SUCCEEDED", "SUCCEEDED"]
        module, tree = client.load_model("iris-mlp"), client.load_model("iris-tree")
    for ref, name in (("iris-mlp", "model.safetensors"), ("iris-tree", "model.skops")):
        done = controller.cli("models", "download", ref, "-o", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.safetensors.json").exists()

    x = load_iris().data[::10]  # 15 rows, all three classes
    rows = x.tolist()
    with torch.no_grad():
        logits = module(torch.tensor(x, dtype=torch.float32))
    classes = json.loads((tmp_path / "model.safetensors.json").read_text())["output"]["classes"]
    expected_torch = [classes[i] for i in logits.argmax(dim=1).tolist()]
    snippets = [readme_snippet(f"# {kind} model, without TensorFleet") for kind in ("torch", "scikit-learn")]
    assert run_isolated(snippets, tmp_path, rows) == [expected_torch, tree.predict(x).tolist()]
