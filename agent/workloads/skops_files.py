"""Loading a scikit-learn model from a skops file without trusting what is inside.

Shared by the controller (format conversion) and the SDK (`Client.load_model`), so a client loads a model
without importing any controller module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tensorfleet_agent.core.errors import ValidationError

#: the only types a skops file may hold: what scikit-learn's estimators are made of
SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.OrderedDict")


# skops.io lists scikit-learn's estimators at import (sklearn.utils.all_estimators), which walks every sklearn
# package: the array-API shim for torch among them, and with it torch itself when installed (seconds, ~200 MiB).
_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


def skops_io() -> ModuleType:
    """`skops.io`, imported without the torch its estimator listing would load (the shim holds no estimator, so
    the trusted types are the same). The shim stays importable afterwards for whoever needs it."""
    loaded = sys.modules.get("skops.io")
    if loaded is not None:
        return loaded
    hide = _TORCH_SHIM not in sys.modules
    if hide:
        sys.modules[_TORCH_SHIM] = None  # type: ignore[assignment]  # pkgutil's walk skips it (ImportError)
    try:
        import skops.io
    finally:
        if hide and sys.modules.get(_TORCH_SHIM, 0) is None:
            del sys.modules[_TORCH_SHIM]
    module: ModuleType = skops.io
    return module


def load_sklearn(path: Path) -> Any:
    """Load a skops file, refusing any type outside scikit-learn, numpy and scipy (blocking)."""
    skops = skops_io()
    get_untrusted_types, load = skops.get_untrusted_types, skops.load

    types = get_untrusted_types(file=path)
    unexpected = [t for t in types if not t.startswith(SAFE_PREFIXES)]
    if unexpected:
        raise ValidationError("model", f"refusing to load types outside scikit-learn/numpy: {', '.join(unexpected)}")
    return load(path, trusted=types)
