"""The Open Inference Protocol (v2) and KServe V1 on the wire, as the guard speaks them: media types,
the binary tensor extension, request parameters and requested outputs, the request id, and model and
server metadata built from the signed model config.

The guard decodes every request here, before anything reaches the model, into rows through the one
row parser (mlsec.serve.inputs), and re-encodes the model's V2 answer for the client. Binary tensors
get the same checks as JSON data (shape, datatype, finite values inside the contract), plus exact
byte accounting. Errors name the field, never the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from mlsec.serve import inputs
from mlsec.serve.inputs import BadRequest
from mlsec.train.model import ModelConfig

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

BINARY_HEADER = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]  # what /v2 advertises: only what this module implements
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8")}
OUTPUTS = {"probability": "FP32", "label": "INT64"}  # in the order a response lists them by default
# Parameters this server honours; any other name is refused, never silently ignored.
REQUEST_PARAMETERS = {"binary_data_output"}
INPUT_PARAMETERS = {"binary_data_size"}
OUTPUT_PARAMETERS = {"binary_data"}
REQUEST_KEYS = {"id", "inputs", "outputs", "parameters", "model_name"}
INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}


class UnsupportedMedia(BadRequest):
    status = 415


@dataclass(frozen=True)
class Decoded:
    """A validated request: the JSON document (a binary request's JSON header), its rows, and for V2
    the id to echo and the outputs to send, each with whether it goes as binary data."""

    doc: Any
    rows: list[list[float]]
    id: str | None = None
    outputs: tuple[tuple[str, bool], ...] = ()


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """application/json, compared case-insensitively, with parameters; only a UTF-8 charset."""
    media, *params = content_type.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def media(headers: Mapping[str, str], protocol: str) -> str:
    """How the body is encoded, from the headers alone: "json" or "binary" (the V2 binary tensor
    extension). JSON may come without a Content-Type (tritonclient sends none); any other media
    type, and any compression (it would sidestep the body size limit), is refused."""
    if headers.get("content-encoding", "identity").strip().lower() not in ("identity", ""):
        raise UnsupportedMedia("content-encoding must be identity: compressed bodies are not accepted")
    content_type = headers.get("content-type")
    if BINARY_HEADER in headers:
        if protocol != "v2":
            raise BadRequest(f"{BINARY_HEADER} (binary tensor data) is for V2 inference only")
        if content_type is not None and not (is_json(content_type)
                                             or _media_type(content_type) == "application/octet-stream"):
            raise UnsupportedMedia("content-type with binary tensor data must be application/octet-stream or "
                                   "application/json, or absent")
        return "binary"
    if content_type is not None and not is_json(content_type):
        raise UnsupportedMedia("content-type must be application/json (charset utf-8), or absent with a JSON body"
                               + (f"; binary tensor data needs the {BINARY_HEADER} header" if protocol == "v2" else ""))
    return "json"


def decode(body: bytes, kind: str, headers: Mapping[str, str], protocol: str, model: str,
           cfg: ModelConfig) -> Decoded:
    if protocol == "v1":
        doc = inputs.parse_json(body)
        return Decoded(doc, inputs.rows_v1(doc, cfg))
    raw = b""
    if kind == "binary":
        declared = headers[BINARY_HEADER].strip()
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:  # "²".isdigit() is True
            raise BadRequest(f"{BINARY_HEADER} must be a number")
        if not 0 < int(declared) <= len(body):
            raise BadRequest(f"{BINARY_HEADER} must be between 1 and the body's length ({len(body)})")
        body, raw = body[:int(declared)], body[int(declared):]
    doc = inputs.parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequest('body must be {"inputs": [...]}')
    inputs.only(doc, REQUEST_KEYS, "body")
    if "model_name" in doc and doc["model_name"] != model:
        raise BadRequest(f"model_name must be {model!r} or absent")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("id must be a string")
    wanted = _parameters(doc.get("parameters"), REQUEST_PARAMETERS, "parameters")
    tensors = _tensors(doc["inputs"], raw, kind == "binary")
    return Decoded(doc, inputs.rows_from_tensors(tensors, cfg), rid,
                   _outputs(doc.get("outputs"), bool(wanted.get("binary_data_output", False))))


def _parameters(params: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where} must be an object")
    inputs.only(params, allowed, where)
    for name, value in params.items():
        valid = (isinstance(value, int) and not isinstance(value, bool) and value >= 0 if name == "binary_data_size"
                 else isinstance(value, bool))
        if not valid:
            kind = "a non-negative integer" if name == "binary_data_size" else "true or false"
            raise BadRequest(f"{where}.{name} must be {kind}")
    return params


def _tensors(tensors: list[Any], raw: bytes, binary: bool) -> list[Any]:
    """The inputs with binary data read into lists, each slice exactly its declared size in order, and
    every byte after the JSON header accounted for."""
    out, offset = [], 0
    for t in tensors:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            out.append(t)  # the row parser names what is wrong with it
            continue
        name = inputs.printable(t["name"])
        inputs.only(t, INPUT_KEYS, f"input {name!r}")
        size = _parameters(t.get("parameters"), INPUT_PARAMETERS, f"input {name!r} parameters").get("binary_data_size")
        if size is None:
            out.append(t)
            continue
        if not binary:
            raise BadRequest(f"input {name!r}: binary_data_size needs the {BINARY_HEADER} header")
        if "data" in t:
            raise BadRequest(f"input {name!r}: binary_data_size and data are exclusive")
        dtype = DTYPES.get(str(t.get("datatype")))
        if dtype is None:
            raise BadRequest(f"input {name!r}: binary datatype must be one of {sorted(DTYPES)}")
        count = math.prod(inputs.shape_of(name, t.get("shape")))
        if count > inputs.MAX_VALUES:
            raise BadRequest(f"input {name!r}: too many values")
        if size != count * dtype.itemsize:
            raise BadRequest(f"input {name!r}: binary_data_size {size} is not {count} values of {dtype.itemsize} bytes")
        if offset + size > len(raw):
            raise BadRequest(f"input {name!r}: the binary data ends before its {size} bytes")
        data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).tolist()
        offset += size
        out.append({"name": t["name"], "shape": t["shape"], "datatype": t["datatype"], "data": data})
    if offset != len(raw):
        raise BadRequest(f"{len(raw) - offset} bytes of binary data belong to no input")
    return out


def _outputs(requested: Any, binary: bool) -> tuple[tuple[str, bool], ...]:
    if requested is None or requested == []:
        return tuple((name, binary) for name in OUTPUTS)
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise BadRequest("outputs must be a list of objects with a name")
    names = [o["name"] for o in requested]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or len(set(names)) != len(names):
        raise BadRequest(f"outputs must name each of {list(OUTPUTS)} at most once; got {inputs.shown(names)}")
    chosen = []
    for o in requested:
        inputs.only(o, {"name", "parameters"}, f"output {o['name']!r}")
        params = _parameters(o.get("parameters"), OUTPUT_PARAMETERS, f"output {o['name']!r} parameters")
        chosen.append((o["name"], bool(params.get("binary_data", binary))))
    return tuple(chosen)


def encode(request: Decoded, answer: bytes, model: str, version: str) -> tuple[bytes, dict[str, str]]:
    """The V2 response for the client from the model's JSON answer: the requested outputs, in the
    requested order, as JSON data or binary data (then the JSON header's length is in a header)."""
    given = {o["name"]: o for o in json.loads(answer)["outputs"]}
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        doc["id"] = request.id
    outputs, blobs = [], []
    for name, binary in request.outputs:
        o = given[name]
        tensor = {"name": name, "datatype": OUTPUTS[name], "shape": o["shape"]}
        if binary:
            blob = np.asarray(o["data"], dtype=DTYPES[OUTPUTS[name]]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = o["data"]
        outputs.append(tensor)
    doc["outputs"] = outputs
    header = json.dumps(doc).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", BINARY_HEADER: str(len(header))}


def responder(send: Send, request: Decoded, model: str, version: str) -> Send:
    """Wraps send for a V2 request: the model's 200 answer is collected and sent re-encoded by encode();
    a refusal from the model passes through as it is."""
    state: dict[str, Any] = {"passing": True, "chunks": []}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            state["passing"] = message["status"] != 200
        if state["passing"]:
            await send(message)
            return
        if message["type"] != "http.response.body":
            return
        state["chunks"].append(message.get("body", b""))
        if message.get("more_body"):
            return
        body, headers = encode(request, b"".join(state["chunks"]), model, version)
        headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def model_metadata(model: str, version: str, cfg: ModelConfig) -> dict[str, Any]:
    """OIP model metadata: the batch input "input" [-1, features] and, as the alternative, one input
    per feature [-1]; the outputs; the version is the signed model's digest."""
    n = len(cfg.features)
    return {
        "name": model, "versions": [version], "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, n]}]
        + [{"name": f, "datatype": "FP32", "shape": [-1]} for f in cfg.features],
        "outputs": [{"name": name, "datatype": dt, "shape": [-1]} for name, dt in OUTPUTS.items()],
        "parameters": {"inputs": f'send either "input" (columns in the order {cfg.features}) or one input per '
                                 "feature, not both"},
    }


def server_metadata() -> dict[str, Any]:
    return {"name": "mlsec", "version": metadata.version("mlsec"), "extensions": EXTENSIONS}
