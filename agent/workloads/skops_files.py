"""Loading a scikit-learn model from a skops file without trusting what is inside.

Shared by the controller (format conversion) and the SDK (`Client.load_model`), so a client loads a model
without importing any controller module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorfleet_agent.core.errors import ValidationError

#: the only types a skops file may hold: what scikit-learn's estimators are made of
SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.OrderedDict")


def load_sklearn(path: Path) -> Any:
    """Load a skops file, refusing any type outside scikit-learn, numpy and scipy (blocking)."""
    from skops.io import get_untrusted_types, load

    types = get_untrusted_types(file=path)
    unexpected = [t for t in types if not t.startswith(SAFE_PREFIXES)]
    if unexpected:
        raise ValidationError("model", f"refusing to load types outside scikit-learn/numpy: {', '.join(unexpected)}")
    return load(path, trusted=types)
