"""Tokenize -> split into length-sorted chunks -> infer -> reassemble -> shape vectors.

No web framework here: the gateway calls `EmbeddingService.embed` and only
turns its result into HTTP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from appliance.compile.settings import CompiledModel
from appliance.errors import InvalidRequestError
from appliance.pipeline.backend import F32, EmbeddingBackend
from appliance.pipeline.packing import pack_by_length
from appliance.pipeline.pooling import truncate_and_normalize
from appliance.pipeline.tokenize import TextEncoder


@dataclass(frozen=True)
class EmbedResult:
    vectors: F32  # [n, d], in input order
    prompt_tokens: int


class ModelPipeline:
    """Everything needed to embed with one served model."""

    def __init__(self, model: CompiledModel, backend: EmbeddingBackend) -> None:
        self.model = model
        self.backend = backend
        self.encoder = TextEncoder(model.tokenizer_path, instructions=model.instructions, max_tokens=model.max_tokens)

    def resolve_task(self, task: str | None) -> str | None:
        model = self.model
        if not model.tasks:
            if task is not None:
                raise InvalidRequestError(f"model `{model.name}` has no tasks; remove `task`", param="task")
            return None
        if task is None:
            return model.default_task
        if task not in model.tasks:
            raise InvalidRequestError(f"unknown task `{task}`; use one of: {', '.join(model.tasks)}", param="task")
        return task

    def resolve_dimensions(self, dimensions: int | None) -> int:
        if dimensions is None:
            return self.model.hidden_size
        if dimensions not in self.model.dimensions:
            allowed = ", ".join(map(str, self.model.dimensions))
            raise InvalidRequestError(
                f"dimensions={dimensions} is not supported by `{self.model.name}`; use one of: {allowed}",
                param="dimensions",
            )
        return dimensions

    async def embed(self, texts: list[str], *, task: str | None, dimensions: int | None) -> EmbedResult:
        task = self.resolve_task(task)
        dims = self.resolve_dimensions(dimensions)
        ids = await asyncio.to_thread(self.encoder.encode, texts, task)
        unit = await self.infer(ids, task)
        if dims != unit.shape[1]:
            unit = truncate_and_normalize(unit, dims)
        return EmbedResult(vectors=unit, prompt_tokens=sum(len(s) for s in ids))

    async def infer(self, ids: list[list[int]], task: str | None) -> F32:
        """Send length-sorted chunks concurrently (they pack together and spread over instances)."""
        model = self.model
        task_id = model.task_ids[task] if task is not None else None
        lengths = [len(s) for s in ids]
        chunks = pack_by_length(lengths, model.max_batch_tokens, model.max_batch_size)
        results = await asyncio.gather(*(self._infer_chunk([ids[i] for i in c], task_id) for c in chunks))
        out = np.empty((len(ids), model.hidden_size), dtype=np.float32)
        for chunk, vectors in zip(chunks, results):
            out[chunk] = vectors
        return out

    async def _infer_chunk(self, seqs: list[list[int]], task_id: int | None) -> F32:
        width = max(len(s) for s in seqs)
        block = np.full((len(seqs), width), self.model.pad_id, dtype=np.int64)
        for row, seq in enumerate(seqs):
            block[row, : len(seq)] = seq
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        unit, _norms = await self.backend.embed(self.model.name, block, lengths, task_id)
        return unit
