"""The server's OpenAPI document, generated from the signed model's config (features and contract ranges).

It describes exactly the routes the guard lets through, for clients and for fuzzing (schemathesis):
V1 rows as objects or as lists in feature order, V2 JSON and binary tensor bodies (JSON with or without
a Content-Type), and the metadata routes. Everything but the probes and /v2 needs the model's key.
"""

from __future__ import annotations

from typing import Any

from mlsec.serve.inputs import MAX_BATCH
from mlsec.serve.oip import DTYPES, OUTPUTS
from mlsec.train.model import ModelConfig


def spec(model: str, cfg: ModelConfig, version: str = "") -> dict[str, Any]:
    profile = cfg.profile or {}
    feature = {f: {"type": "number", **({"minimum": profile[f].min} if f in profile and profile[f].min is not None else {}),
                   **({"maximum": profile[f].max} if f in profile and profile[f].max is not None else {})}
               for f in cfg.features}
    n = len(cfg.features)
    keyed = {"type": "object", "properties": feature, "required": list(cfg.features), "additionalProperties": False}
    ordered = {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n,
               "description": f"values in the order {cfg.features}"}
    error = {"description": "refused", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    refusals = {str(c): error for c in (400, 401, 403, 413, 415, 422, 429)}
    numbers = {"type": "array", "items": {"type": "number"}}
    datatype = {"type": "string", "enum": sorted(DTYPES)}
    flag = {"type": "boolean"}
    # One tensor "input" [N, features], data flat or nested; or one tensor per feature, shape [N] or [N, 1].
    # With binary tensor data, parameters.binary_data_size replaces data.
    tensor_parameters = {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                         "additionalProperties": False}
    batch = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string", "enum": ["input"]},
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "datatype": datatype, "data": {"type": "array", "items": {"anyOf": [{"type": "number"}, numbers]}},
        "parameters": tensor_parameters}}
    column = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string", "enum": list(cfg.features)},
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        "datatype": datatype, "data": numbers, "parameters": tensor_parameters}}
    requested = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": list(OUTPUTS)},
        "parameters": {"type": "object", "properties": {"binary_data": flag}, "additionalProperties": False}}}
    v2_request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "model_name": {"type": "string", "enum": [model]},
        "parameters": {"type": "object", "properties": {"binary_data_output": flag}, "additionalProperties": False},
        "inputs": {"type": "array", "items": {"anyOf": [batch, column]}, "minItems": 1, "maxItems": n},
        "outputs": {"type": "array", "items": requested, "maxItems": len(OUTPUTS)}}}
    binary_header = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                     "description": "binary tensor data: the length of the JSON header that starts the body",
                     "schema": {"type": "integer", "minimum": 1}}
    tensor_meta = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}}
    metadata = {"get": {"responses": {"200": {"description": "OIP model metadata", "content": {"application/json": {
        "schema": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"], "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"}, "inputs": {"type": "array", "items": tensor_meta},
            "outputs": {"type": "array", "items": tensor_meta}}}}}}, **refusals}}}
    infer = {"post": {
        "parameters": [binary_header],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": v2_request},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "outputs label (INT64) and probability (FP32); the request's id"},
                      **refusals}}}
    public = {"get": {"security": [], "responses": {"200": {"description": "ok"}}}}
    paths: dict[str, Any] = {
        f"/v1/models/{model}:predict": {"post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["instances"], "additionalProperties": False, "properties": {
                    "instances": {"type": "array", "items": {"anyOf": [keyed, ordered]}, "minItems": 1,
                                  "maxItems": MAX_BATCH}}}}}},
            "responses": {"200": {"description": "label and rounded probability per instance"}, **refusals}}},
        f"/v2/models/{model}/infer": infer,
        f"/v2/models/{model}": metadata,
        f"/v1/models/{model}": public,
        f"/v2/models/{model}/ready": public,
        "/v2": public,
        "/v2/health/live": public,
        "/v2/health/ready": public,
    }
    if version:
        paths[f"/v2/models/{model}/versions/{version}"] = metadata
        paths[f"/v2/models/{model}/versions/{version}/infer"] = infer
    return {
        "openapi": "3.0.3",
        "info": {"title": f"mlsec model server: {model}", "version": "1"},
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": paths,
    }
