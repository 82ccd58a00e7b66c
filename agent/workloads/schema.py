"""Parameter schemas: data that the agent, the controller, the CLI and the GUI all read.

One schema per workload; validation fills defaults and names the offending field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from tensorfleet_agent.core.errors import ValidationError

ParamType = Literal["int", "float", "str", "bool", "list"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: ParamType
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False  # None is a meaningful value (e.g. max_depth: None = unlimited)
    pattern: str = ""  # for strings: a regular expression the whole value must match

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices),
            "nullable": self.nullable,
            "pattern": self.pattern,
        }


@dataclass(frozen=True)
class WorkloadSchema:
    params: tuple[ParamSpec, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def validate(self, values: dict[str, Any], *, prefix: str = "params") -> dict[str, Any]:
        """Return `values` with defaults filled in; raise ValidationError naming the field."""
        if not isinstance(values, dict):
            raise ValidationError(prefix, "must be an object of parameter names to values")
        known = {p.name: p for p in self.params}
        for key in values:
            if key not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise ValidationError(f"{prefix}.{key}", f"unknown parameter (allowed: {allowed})")
        out: dict[str, Any] = {}
        for spec in self.params:
            out[spec.name] = _check(spec, values.get(spec.name, spec.default), f"{prefix}.{spec.name}")
        return out


def _check(spec: ParamSpec, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable or spec.default is None:
            return None
        raise ValidationError(where, "must not be null")
    if spec.type == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(where, f"must be a list of strings, got {value!r}")
        if spec.maximum is not None and len(value) > spec.maximum:
            raise ValidationError(where, f"has {len(value)} items; at most {spec.maximum:g} allowed")
        return list(value)
    if spec.type == "bool" and not isinstance(value, bool):
        raise ValidationError(where, f"must be true or false, got {value!r}")
    if spec.type == "bool":
        return value
    if spec.type == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or _integral_float(value)):
            raise ValidationError(where, f"must be an integer, got {value!r}")
        value = int(value)
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(where, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValidationError(where, f"must be finite, got {value!r}")
    elif spec.type == "str" and not isinstance(value, str):
        raise ValidationError(where, f"must be a string, got {value!r}")
    elif spec.type == "str" and spec.pattern and not re.fullmatch(spec.pattern, value):
        raise ValidationError(where, f"{value!r} is not of the form {spec.help or spec.pattern}")
    if spec.choices and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ValidationError(where, f"must be one of {allowed}; got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ValidationError(where, f"must be >= {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValidationError(where, f"must be <= {spec.maximum:g}, got {value!r}")
    return value


def _integral_float(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()
