"""Turns one code control off for a proof run (`mlsec threats check --prove`), and nothing otherwise.

MLSEC_SWITCH_OFF holds {"target": "module:attr", "returns": value} or {"target": ..., "use": "module:attr"}:
the target is replaced by a function that ignores its arguments and returns `returns`, or by `use`.
Loaded as a pytest plugin (`-p mlsec.threatmodel.switch`) and by test helpers that start a server in a
subprocess, so the control is off wherever the attack test reaches it. Unset, it does nothing.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

ENV = "MLSEC_SWITCH_OFF"


def resolve(ref: str) -> tuple[Any, str, Any]:
    """(owner, attribute name, current value) of "module:qual.name"; raises naming what does not resolve."""
    module, _, qual = ref.partition(":")
    owner: Any = importlib.import_module(module)
    *parents, name = qual.split(".")
    for p in parents:
        owner = getattr(owner, p)
    if not hasattr(owner, name):
        raise AttributeError(f"{ref}: {module} has no {qual}")
    return owner, name, getattr(owner, name)


def apply_from_env() -> str | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    s = json.loads(spec)
    owner, name, _ = resolve(s["target"])
    if s.get("use"):
        replacement = resolve(s["use"])[2]
    else:
        value = s.get("returns")

        def replacement(*_args: Any, **_kwargs: Any) -> Any:
            return value
    setattr(owner, name, replacement)
    return str(s["target"])


def pytest_configure(config: Any) -> None:
    apply_from_env()
