"""Request and response bodies (msgspec Structs), shaped as OpenAI's and Jina's APIs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/embeddings`. Unknown fields (e.g. `user`) are accepted and ignored, as OpenAI does."""

    input: NonEmptyStr | Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    task: str | None = None
    user: str | None = None


class Embedding(msgspec.Struct, frozen=True):
    embedding: list[float] | str
    index: int
    object: str = "embedding"


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct, frozen=True):
    data: list[Embedding]
    model: str
    usage: Usage
    object: str = "list"


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int = 0
    owned_by: str = "embed-appliance"
    object: str = "model"


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


class ErrorBody(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorBody
