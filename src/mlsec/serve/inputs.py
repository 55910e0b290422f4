"""Request bodies to model rows: the one parser the guard, the monitors and the model all use.

JSON is parsed with bounds checked before any conversion (nesting depth, integer digits), so no
body can raise OverflowError, ValueError (int digit limit) or RecursionError. Errors name the field,
never the value: 400 for a malformed request, 422 for a value outside the contract's finite range.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from mlsec.train.model import ModelConfig

MAX_BATCH = 256
MAX_VALUES = MAX_BATCH * 64  # values in one tensor
MAX_DEPTH = 32  # V2 nested data needs 4 levels; anything near this is an attack
MAX_INT_DIGITS = 30  # longer integer literals are parsed as float (inf when beyond the float range)
FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMERIC = {"FP32", "FP64", "INT32", "INT64"}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}")


class BadRequest(InvalidInput):  # type: ignore[misc]
    """A request the client must fix; the message names the field and never echoes a value."""

    status = 400


class OutOfRange(BadRequest):
    status = 422


class BigInt(float):
    """An integer literal too long for int(): kept as its float value (inf past the float range)."""


def _int(literal: str) -> int | float:
    # int() of a 5,000-digit literal raises (and costs quadratic time); float() is linear and saturates to inf.
    return int(literal) if len(literal) <= MAX_INT_DIGITS else BigInt(literal)


def depth(body: bytes) -> int:
    """Deepest [ / { nesting outside strings, computed without recursion."""
    stripped = _STRING.sub(b"", body)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.zeros(arr.shape, dtype=np.int32)
    steps[(arr == ord("[")) | (arr == ord("{"))] = 1
    steps[(arr == ord("]")) | (arr == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def parse_json(body: bytes) -> Any:
    # Nesting never exceeds the count of opening brackets: the exact depth is computed only past that bound.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and depth(body) > MAX_DEPTH:
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(body.decode("utf-8"), parse_int=_int, parse_float=float, parse_constant=float)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body is not valid UTF-8 JSON") from None
    except RecursionError:  # not reachable after the depth check; kept so it can never be a 500
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels") from None


def shown(keys: Sequence[Any]) -> list[str]:
    """Request-supplied names safe to echo: identifiers only; anything else is counted, not shown."""
    safe = sorted(str(k) for k in keys if isinstance(k, str) and _NAME.fullmatch(k))
    hidden = len(keys) - len(safe)
    return safe + ([f"<{hidden} unprintable>"] if hidden else [])


def check(cfg: ModelConfig, where: str, feature: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRequest(f"{where}.{feature} must be a number")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
        raise OutOfRange(f"{where}.{feature} must be a finite number within the float32 range")
    p = (cfg.profile or {}).get(feature)
    if p and ((p.min is not None and x < p.min) or (p.max is not None and x > p.max)):
        raise OutOfRange(f"{where}.{feature} is outside the data contract range [{p.min}, {p.max}]")
    return x


def _batch(n: int) -> None:
    if n == 0:
        raise BadRequest("at least one instance is required")
    if n > MAX_BATCH:
        raise BadRequest(f"batch of {n} exceeds the maximum {MAX_BATCH}")


def only(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuses, by name, keys this server would otherwise silently ignore."""
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise BadRequest(f"{where}: unsupported {shown(unknown)}; supported {sorted(allowed)}")


def rows_v1(doc: Any, cfg: ModelConfig) -> list[list[float]]:
    """KServe V1: each instance an object keyed by feature name, or a list of values in feature order."""
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list):
        raise BadRequest('body must be {"instances": [...]}')
    only(doc, {"instances"}, "body")
    _batch(len(instances))
    rows = []
    for i, inst in enumerate(instances):
        if isinstance(inst, list):
            if len(inst) != len(cfg.features):
                raise BadRequest(f"instances[{i}] must list {len(cfg.features)} values in the order {cfg.features}")
            rows.append([check(cfg, f"instances[{i}]", f, v) for f, v in zip(cfg.features, inst)])
            continue
        if not isinstance(inst, dict):
            raise BadRequest(f"instances[{i}] must be an object keyed by feature name or a list in feature order")
        missing = [f for f in cfg.features if f not in inst]
        extra = [k for k in inst if k not in cfg.features]
        if missing or extra:
            raise BadRequest(f"instances[{i}]: missing features {missing}, unknown features {shown(extra)}")
        rows.append([check(cfg, f"instances[{i}]", f, inst[f]) for f in cfg.features])
    return rows


def _flat(name: str, data: Any) -> list[Any]:
    """Nested lists flattened in order, without recursion."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list of numbers")
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], stack)
        if item is stack:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            out.append(item)
        if len(out) > MAX_VALUES:
            raise BadRequest(f"input {name!r}: too many values")
    return out


def shape_of(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    return shape


def printable(name: str) -> str:
    return name if _NAME.fullmatch(name) else "?"


def _tensor(t: Any) -> tuple[str, list[int], list[Any]]:
    if not isinstance(t, Mapping) or not isinstance(t.get("name"), str):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    name = printable(t["name"])
    if t.get("datatype") not in NUMERIC:
        raise BadRequest(f"input {name!r}: datatype must be one of {sorted(NUMERIC)}")
    shape, flat = shape_of(name, t.get("shape")), _flat(name, t.get("data"))
    if math.prod(shape) != len(flat):
        raise BadRequest(f"input {name!r}: {len(flat)} values do not fill shape {shape}")
    if t["datatype"].startswith("INT") and not all(isinstance(v, (int, BigInt)) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"input {name!r}: datatype {t['datatype']} holds integers only")
    return t["name"], shape, flat


def rows_v2(doc: Any, cfg: ModelConfig) -> list[list[float]]:
    """One tensor "input" of shape [N, features], or one tensor per feature of shape [N] or [N, 1];
    data flat or nested as the shape."""
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list):
        raise BadRequest('body must be {"inputs": [...]}')
    return rows_from_tensors(inputs, cfg)


def rows_from_tensors(inputs: Sequence[Any], cfg: ModelConfig) -> list[list[float]]:
    features = cfg.features
    names = [t.get("name") if isinstance(t, Mapping) else None for t in inputs]
    if len(inputs) > len(features) or len(set(map(str, names))) != len(names):
        raise BadRequest(f"inputs must be one tensor \"input\" or one tensor per feature {features}")
    tensors = {name: (shape, flat) for name, shape, flat in map(_tensor, inputs)}
    if set(tensors) == {"input"}:
        shape, flat = tensors["input"]
        if len(shape) != 2 or shape[1] != len(features):
            raise BadRequest(f'input "input" must have shape [N, {len(features)}], got {shape}')
        grid = [flat[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]
        where = "inputs[input][{r}]"
    elif set(tensors) == set(features):
        lengths = set()
        for f in features:
            shape = tensors[f][0]
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise BadRequest(f"input {f!r} must have shape [N] or [N, 1], got {shape}")
            lengths.add(shape[0])
        if len(lengths) != 1:
            raise BadRequest("per-feature inputs must all have the same length")
        grid = [list(r) for r in zip(*(tensors[f][1] for f in features))]
        where = "inputs[{r}]"
    else:
        raise BadRequest(f'inputs must be one tensor "input" of shape [N, {len(features)}] '
                         f"or one tensor per feature {features}; got {shown(list(tensors))}")
    _batch(len(grid))
    out = []
    for r, row in enumerate(grid):
        at = where.format(r=r)
        out.append([check(cfg, at, f, v) for f, v in zip(features, row)])
    return out


def rows(doc: Any, protocol: str, cfg: ModelConfig) -> list[list[float]]:
    return rows_v1(doc, cfg) if protocol == "v1" else rows_v2(doc, cfg)


def canonical(doc: Any, protocol: str, rows: list[list[float]], cfg: ModelConfig) -> bytes:
    """What the guard forwards to the model: exactly the validated rows, in one fixed form."""
    if protocol == "v1":
        return json.dumps({"instances": [dict(zip(cfg.features, r)) for r in rows]}).encode()
    # The request's id, parameters and requested outputs are the guard's to answer (mlsec.serve.oip).
    return json.dumps({"inputs": [{"name": "input", "shape": [len(rows), len(cfg.features)], "datatype": "FP64",
                                   "data": [v for r in rows for v in r]}]}).encode()
