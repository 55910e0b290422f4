"""The server's OpenAPI document, generated from the signed model's config (features and contract ranges).

It describes exactly the routes the guard lets through, for clients and for fuzzing (schemathesis).
"""

from __future__ import annotations

from typing import Any

from mlsec.serve.inputs import MAX_BATCH
from mlsec.train.model import ModelConfig


def spec(model: str, cfg: ModelConfig) -> dict[str, Any]:
    profile = cfg.profile or {}
    feature = {f: {"type": "number", **({"minimum": profile[f].min} if f in profile and profile[f].min is not None else {}),
                   **({"maximum": profile[f].max} if f in profile and profile[f].max is not None else {})}
               for f in cfg.features}
    instance = {"type": "object", "properties": feature, "required": list(cfg.features), "additionalProperties": False}
    error = {"description": "refused", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    refusals = {str(c): error for c in (400, 401, 403, 413, 415, 422, 429)}
    numbers = {"type": "array", "items": {"type": "number"}}
    datatype = {"type": "string", "enum": ["FP32", "FP64", "INT32", "INT64"]}
    # One tensor "input" [N, features], data flat or nested; or one tensor per feature, shape [N] or [N, 1].
    batch = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string", "enum": ["input"]},
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "datatype": datatype, "data": {"type": "array", "items": {"anyOf": [{"type": "number"}, numbers]}}}}
    column = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string", "enum": list(cfg.features)},
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        "datatype": datatype, "data": numbers}}
    health = {"get": {"responses": {"200": {"description": "ok"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"mlsec model server: {model}", "version": "1"},
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": {
            f"/v1/models/{model}:predict": {"post": {
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["instances"], "properties": {
                        "instances": {"type": "array", "items": instance, "minItems": 1, "maxItems": MAX_BATCH}}}}}},
                "responses": {"200": {"description": "label and rounded probability per instance"}, **refusals}}},
            f"/v2/models/{model}/infer": {"post": {
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"], "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": {"anyOf": [batch, column]}, "minItems": 1,
                                   "maxItems": len(cfg.features)}}}}}},
                "responses": {"200": {"description": "outputs label (INT64) and probability (FP32)"}, **refusals}}},
            f"/v1/models/{model}": {**health},
            f"/v2/models/{model}": {**health},
            f"/v2/models/{model}/ready": {**health},
            "/v2/health/live": {**health},
            "/v2/health/ready": {**health},
        },
    }
