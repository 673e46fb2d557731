"""Tokenize -> split into length-sorted chunks -> infer -> reassemble -> shape vectors.

No web framework here: the gateway decodes a request into an `EmbedJob`, calls
`ModelPipeline.embed` and only turns the result into HTTP.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

import numpy as np

from appliance.errors import InvalidRequestError
from appliance.ops.packing import pack_by_length, pad_rows, padding_efficiency
from appliance.ops.pooling import truncate_and_normalize
from appliance.pipeline.backend import F32, EmbeddingBackend
from appliance.pipeline.tokenize import TextEncoder
from appliance.settings import CompiledModel
from appliance.spec.schema import LimitsSpec

Inputs = list[str] | list[list[int]]
# Requests up to this many characters (or token ids) are tokenized on the event loop (tens of
# microseconds); larger ones go to a worker thread so they never stall other requests.
INLINE_TOKENIZE_CHARS = 2048


def _chars(inputs: Inputs) -> int:
    return sum(len(item) for item in inputs)


@dataclass(frozen=True)
class EmbedJob:
    """One embeddings request, as the pipeline sees it."""

    inputs: Inputs
    task: str | None = None
    task_param: str = "task"  # the request field that named the task (`task` or `input_type`)
    dimensions: int | None = None
    normalized: bool = True
    truncate: bool = False
    late_chunking: bool = False


@dataclass(frozen=True)
class EmbedResult:
    vectors: F32  # [n, d], in input order
    prompt_tokens: int
    tokenize_s: float = 0.0
    infer_s: float = 0.0
    chunks: tuple[tuple[int, float], ...] = ()  # (rows, padding efficiency) per request sent to Triton


class ModelPipeline:
    """Everything needed to embed with one served model."""

    def __init__(self, model: CompiledModel, backend: EmbeddingBackend, limits: LimitsSpec, *, max_rows: int) -> None:
        self.model = model
        self.backend = backend
        self.limits = limits
        self.max_rows = max_rows  # [batching] max_batch_size: rows per Triton request
        self.encoder = TextEncoder(
            model.tokenizer_path,
            instructions=model.instructions,
            max_tokens=model.max_tokens,
            vocab_size=model.vocab_size,
        )

    def resolve_task(self, task: str | None, param: str = "task") -> str | None:
        model = self.model
        if not model.tasks:
            if task is not None:
                raise InvalidRequestError(f"model `{model.name}` has no tasks; remove `{param}`", param=param)
            return None
        if task is None:
            return model.default_task
        if task not in model.tasks:
            raise InvalidRequestError(
                f"task `{task}` is not served by `{model.name}`; use one of: {', '.join(model.tasks)}", param=param
            )
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

    async def embed(self, job: EmbedJob) -> EmbedResult:
        task = self.resolve_task(job.task, job.task_param)
        dims = self.resolve_dimensions(job.dimensions)
        if len(job.inputs) > self.limits.max_inputs_per_request:
            raise InvalidRequestError(
                f"{len(job.inputs)} inputs in one request; the limit is {self.limits.max_inputs_per_request}",
                param="input",
            )
        started = time.perf_counter()
        if job.late_chunking:
            ids, spans = await asyncio.to_thread(self._plan_late_chunks, job, task)
            tokenized = time.perf_counter()
            self._check_request_tokens(len(ids))
            unit, norms = await self._infer_late(ids, spans, task)
            tokens = len(ids)
            chunks: tuple[tuple[int, float], ...] = ((1, 1.0),)
        else:
            if _chars(job.inputs) <= INLINE_TOKENIZE_CHARS:
                token_ids = self._tokenize(job, task)  # microseconds: cheaper than a thread hop
            else:
                token_ids = await asyncio.to_thread(self._tokenize, job, task)
            tokenized = time.perf_counter()
            tokens = sum(len(s) for s in token_ids)
            self._check_request_tokens(tokens)
            unit, norms, chunks = await self.infer(token_ids, task)
        return EmbedResult(
            vectors=shape_vectors(unit, norms, dims, job.normalized),
            prompt_tokens=tokens,
            tokenize_s=tokenized - started,
            infer_s=time.perf_counter() - tokenized,
            chunks=chunks,
        )

    def _tokenize(self, job: EmbedJob, task: str | None) -> list[list[int]]:
        if isinstance(job.inputs[0], str):
            return self.encoder.encode_texts(job.inputs, task, truncate=job.truncate)
        return self.encoder.fit_ids(job.inputs, truncate=job.truncate)

    def _check_request_tokens(self, tokens: int) -> None:
        if tokens > self.limits.max_tokens_per_request:
            raise InvalidRequestError(
                f"the request has {tokens} tokens; the limit per request is {self.limits.max_tokens_per_request}",
                param="input",
            )

    def _plan_late_chunks(self, job: EmbedJob, task: str | None) -> tuple[list[int], list[tuple[int, int]]]:
        strings = isinstance(job.inputs[0], str)
        if strings:
            contents = self.encoder.content_ids(cast(list[str], job.inputs))
        else:
            contents = cast(list[list[int]], job.inputs)
            for index, tokens in enumerate(contents):
                self.encoder.check_ids(tokens, f"input[{index}]")
        plan = self.encoder.late_chunk(contents, task, instruction=strings)
        return plan.ids, plan.spans

    async def _infer_late(self, ids: list[int], spans: list[tuple[int, int]], task: str | None) -> tuple[F32, F32]:
        """One sequence, pooled per span inside Triton (hidden states never leave it)."""
        task_id = self.model.task_ids[task] if task is not None else None
        block = np.array([ids], dtype=np.int64)
        lengths = np.array([len(ids)], dtype=np.int64)
        return await self.backend.embed(self.model.name, block, lengths, task_id, spans=np.array(spans, np.int64))

    async def infer(self, ids: list[list[int]], task: str | None) -> tuple[F32, F32, tuple[tuple[int, float], ...]]:
        """Send length-sorted chunks concurrently (they pack together and spread over instances)."""
        model = self.model
        task_id = model.task_ids[task] if task is not None else None
        lengths = [len(s) for s in ids]
        chunks = pack_by_length(lengths, model.max_batch_tokens, self.max_rows)
        results = await asyncio.gather(*(self._infer_chunk([ids[i] for i in c], task_id) for c in chunks))
        unit = np.empty((len(ids), model.hidden_size), dtype=np.float32)
        norms = np.empty((len(ids), 1), dtype=np.float32)
        for chunk, (chunk_unit, chunk_norms) in zip(chunks, results):
            unit[chunk] = chunk_unit
            norms[chunk] = chunk_norms
        stats = tuple((len(c), padding_efficiency(lengths, [c])) for c in chunks)
        return unit, norms, stats

    async def _infer_chunk(self, seqs: list[list[int]], task_id: int | None) -> tuple[F32, F32]:
        block, _ = pad_rows(seqs, self.model.pad_id)  # Triton gets LENGTHS, not the mask
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        return await self.backend.embed(self.model.name, block, lengths, task_id)


def shape_vectors(unit: F32, norms: F32, dimensions: int, normalized: bool) -> F32:
    """Matryoshka + normalization: truncate first, then (if asked) normalize.

    `normalized=False` gives the raw mean-pooled vector (unit x norm), truncated.
    """
    if not normalized:
        return np.ascontiguousarray((unit * norms)[:, :dimensions], dtype=np.float32)
    if dimensions == unit.shape[1]:
        return unit
    return truncate_and_normalize(unit, dimensions)
