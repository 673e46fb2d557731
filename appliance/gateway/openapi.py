"""The published OpenAPI document, generated from the same msgspec Structs the decoders use."""

from __future__ import annotations

from typing import Any

import msgspec

from appliance import __version__
from appliance.errors import HTTP_ERRORS
from appliance.gateway.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Info,
    ModelCard,
    ModelList,
    Status,
    TokenizeRequest,
    TokenizeResponse,
)

_ERRORS = {str(cls.status_code): cls.description for cls in HTTP_ERRORS if cls.status_code != 500}
_REQUEST_ERRORS = tuple(code for code in _ERRORS if code != "431")  # 431 is refused before routing, for any path


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}


def _json(struct: type) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(struct)}}


def _operation(
    summary: str,
    ok: type,
    *,
    body: type | None = None,
    secured: bool = True,
    errors: tuple[str, ...] = _REQUEST_ERRORS,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _json(ok)}}
    for code in errors:
        responses[code] = {"description": _ERRORS[code], "content": _json(ErrorResponse)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if secured:
        op["security"] = [{"bearer": []}, {}]
    return op


def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            EmbeddingRequest,
            EmbeddingResponse,
            TokenizeRequest,
            TokenizeResponse,
            ModelList,
            ModelCard,
            Info,
            Status,
            ErrorResponse,
        ],
        ref_template="#/components/schemas/{name}",
    )
    model_param = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Embedding appliance", "version": __version__},
        "paths": {
            "/v1/embeddings": {
                "post": _operation(
                    "Create embeddings (OpenAI + Jina parameters)", EmbeddingResponse, body=EmbeddingRequest
                )
            },
            "/tokenize": {
                "post": _operation("Tokenize as the embedding path does", TokenizeResponse, body=TokenizeRequest)
            },
            "/v1/models": {"get": _operation("List served models", ModelList, errors=("401",))},
            "/v1/models/{model_id}": {
                "get": {**_operation("One served model", ModelCard, errors=("401", "404")), "parameters": [model_param]}
            },
            "/info": {
                "get": _operation("Models, tasks, dimensions, limits, batching as compiled", Info, errors=("401",))
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: the gateway's, then Triton's",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/health": {"get": _operation("Liveness", Status, secured=False, errors=())},
            "/ready": {
                "get": _operation("Readiness: 200 when every model is loaded", Status, secured=False, errors=("503",))
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def error_table() -> str:
    """The README's error table (tests/unit/test_docs_tables.py keeps the README's copy current)."""
    rows = ["| status | `type` | when |", "|---|---|---|"]
    rows += [f"| {cls.status_code} | `{cls.error_type}` | {cls.description} |" for cls in HTTP_ERRORS]
    return "\n".join(rows) + "\n"
