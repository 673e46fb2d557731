"""The published OpenAPI document, generated from the same msgspec Structs the decoders use."""

from __future__ import annotations

from typing import Any

import msgspec

from appliance import __version__
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

_ERRORS = {
    "400": "invalid request, including token ids outside the vocabulary (the message and `param` say what and where)",
    "401": "missing or invalid API key",
    "404": "unknown model",
    "413": "request body too large",
    "415": "the body is not JSON (send Content-Type: application/json)",
    "429": "overloaded or over a key's limit; retry after `Retry-After` seconds",
    "503": "the inference server is not ready; retry after `Retry-After` seconds",
    "504": "no answer within the request timeout",
}


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}


def _json(struct: type) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(struct)}}


def _operation(summary: str, ok: type, *, body: type | None = None, secured: bool = True,
               errors: tuple[str, ...] = ("400", "401", "404", "413", "415", "429", "503", "504")) -> dict[str, Any]:
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
        [EmbeddingRequest, EmbeddingResponse, TokenizeRequest, TokenizeResponse, ModelList, ModelCard, Info,
         Status, ErrorResponse],
        ref_template="#/components/schemas/{name}",
    )
    model_param = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Embedding appliance", "version": __version__},
        "paths": {
            "/v1/embeddings": {"post": _operation("Create embeddings (OpenAI + Jina parameters)",
                                                  EmbeddingResponse, body=EmbeddingRequest)},
            "/tokenize": {"post": _operation("Tokenize as the embedding path does", TokenizeResponse,
                                             body=TokenizeRequest)},
            "/v1/models": {"get": _operation("List served models", ModelList, errors=("401",))},
            "/v1/models/{model_id}": {"get": {**_operation("One served model", ModelCard, errors=("401", "404")),
                                              "parameters": [model_param]}},
            "/info": {"get": _operation("Models, tasks, dimensions, limits, batching as compiled", Info,
                                        errors=("401",))},
            "/metrics": {"get": {"summary": "Prometheus metrics: the gateway's, then Triton's", "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
            }}},
            "/health": {"get": _operation("Liveness", Status, secured=False, errors=())},
            "/ready": {"get": _operation("Readiness: 200 when every model is loaded", Status, secured=False,
                                         errors=("503",))},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
