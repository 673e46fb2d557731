"""Read what a model folder says about itself: kind, tasks, sizes, ONNX interface.

Everything here is cheap: the ONNX graph is read without its weights, and the
external-data file is checked by size, never loaded (jina-v3's is 2.3 GB).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from appliance.spec.schema import ModelKind
from appliance.spec.tokenizer import load_tokenizer

JINA_FILES = (
    "model.onnx",
    "model.onnx_data",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
)
SENTENCE_TRANSFORMER_FILES = ("model.onnx", "tokenizer.json", "config.json")
JINA_OUTPUT = "text_embeds"
SENTENCE_TRANSFORMER_OUTPUTS = ("last_hidden_state", "token_embeddings")


class ModelFolderError(Exception):
    """The folder cannot be served; `problems` lists each one on its own line."""

    def __init__(self, problems: list[str], kind: ModelKind | None = None, *, truncated: bool = False) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.kind = kind
        self.truncated = truncated


# Ops of a graph that is already quantized (ONNX Runtime's dynamic int8, QDQ or QOperator files).
QUANTIZED_OPS = frozenset(
    {
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QLinearMatMul",
        "ConvInteger",
        "QLinearConv",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QuantizeLinear",
        "DequantizeLinear",
        "QAttention",
    }
)


# ...or weights stored as int8 and cast up at run time (the demo's all-MiniLM file).
_INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
_WEIGHT_MIN_ELEMENTS = 4096


@dataclass(frozen=True)
class OnnxInterface:
    inputs: dict[str, tuple[int, list[int | str]]]
    outputs: dict[str, tuple[int, list[int | str]]]
    external_files: dict[str, int]
    quantized: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What the compiler needs to know about one model folder."""

    folder: Path
    kind: ModelKind
    hidden_size: int
    lora_adaptations: list[str]
    task_instructions: dict[str, str]
    matryoshka_dimensions: list[int]
    model_max_length: int
    vocab_size: int
    pad_id: int
    output_name: str
    input_names: list[str]
    quantized: bool = False  # int8 ops or int8-stored weights in the file (e.g. the demo's all-MiniLM)
    # sentence_bert_config.json's max_seq_length: the length (special tokens included) the model was
    # trained and is used at by sentence-transformers (all-MiniLM-L6-v2: 256 of its 512 positions).
    max_seq_length: int | None = None

    def default_max_tokens(self, specials: int) -> int:
        """Content tokens per input when embed.toml sets no `max_tokens`: sentence_bert_config's
        length where there is one (it counts the special tokens too), else the model's positions."""
        limit = self.model_max_length - specials
        return max(1, min(self.max_seq_length - specials, limit)) if self.max_seq_length else limit


@dataclass(frozen=True)
class TokenizerFacts:
    special_tokens: int  # the template's specials around every text: <s> </s>, [CLS] [SEP]
    vocab_size: int


def tokenizer_facts(folder: Path) -> TokenizerFacts:
    """What the compiler needs from tokenizer.json; raise `ModelFolderError` when it does not load."""
    path = folder / "tokenizer.json"
    try:
        tokenizer = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001 -- tokenizers raises a bare Exception for a malformed file
        raise ModelFolderError([f"{path} does not load: {str(exc).splitlines()[0] if str(exc) else exc!r}"]) from None
    return TokenizerFacts(len(tokenizer.encode("").ids), tokenizer.get_vocab_size())


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ModelFolderError([f"{path.name}: expected a JSON object"])
    return data


def tensor_signature(values: Any) -> dict[str, tuple[int, list[int | str]]]:
    """A graph's inputs or outputs, in order: name -> (ONNX element type, dims; symbolic dims by name)."""
    out: dict[str, tuple[int, list[int | str]]] = {}
    for v in values:
        t = v.type.tensor_type
        out[v.name] = (t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim])
    return out


def read_onnx_interface(model_path: Path) -> OnnxInterface:
    """The graph's inputs/outputs and the external-data bytes each file must hold."""
    proto = onnx.load(str(model_path), load_external_data=False)

    needed: dict[str, int] = {}
    for tensor in _all_initializers(proto.graph):
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)
            end = (info.offset or 0) + (info.length or 0)
            needed[info.location] = max(needed.get(info.location, 0), end)
    quantized = any(node.op_type in QUANTIZED_OPS for node in proto.graph.node) or any(
        t.data_type in _INT8_TYPES and math.prod(t.dims) >= _WEIGHT_MIN_ELEMENTS for t in proto.graph.initializer
    )
    return OnnxInterface(tensor_signature(proto.graph.input), tensor_signature(proto.graph.output), needed, quantized)


def _all_initializers(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
            elif attr.type == onnx.AttributeProto.GRAPH:
                tensors.extend(_all_initializers(attr.g))
    return tensors


def inspect_model_folder(folder: Path, kind: ModelKind | None) -> ModelInfo:
    """Check a model folder and describe it; raise `ModelFolderError` listing every problem."""
    if not folder.is_dir():
        raise ModelFolderError([f"{folder} is not a directory"])
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    # Without config.json nothing says "sentence-transformer": assume the product's own model,
    # so an empty folder lists all six jina-v3 files.
    plain = bool(config) and "lora_adaptations" not in config
    detected: ModelKind = "sentence-transformer" if plain else "jina-v3"
    kind = kind or detected
    required = JINA_FILES if kind == "jina-v3" else SENTENCE_TRANSFORMER_FILES
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise ModelFolderError([f"missing file {folder / name}" for name in missing], kind)

    problems: list[str] = []
    try:
        iface = read_onnx_interface(folder / "model.onnx")
    except Exception as exc:  # noqa: BLE001 -- onnx raises several unrelated types for a corrupt file
        raise ModelFolderError([f"{folder / 'model.onnx'} is not a readable ONNX model: {exc}"], kind) from None
    truncated = False
    for location, size in iface.external_files.items():
        path = folder / location
        if not path.is_file():
            problems.append(f"missing file {path} (the weights model.onnx refers to)")
        elif path.stat().st_size < size:
            truncated = True
            problems.append(f"{path} is truncated: {path.stat().st_size} bytes, the graph needs {size}")
    output_name = _check_interface(kind, iface, problems)
    if problems:
        raise ModelFolderError(problems, kind, truncated=truncated)

    tok_config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    hidden = int(config.get("hidden_size") or _hidden_from_output(iface, output_name))
    positions = int(config.get("max_position_embeddings") or 512)
    model_max = int(tok_config.get("model_max_length") or positions)
    if model_max > 10**6:  # transformers' "no limit" sentinel
        model_max = positions
    st_config = folder / "sentence_bert_config.json"
    seq_length = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    return ModelInfo(
        folder=folder,
        kind=kind,
        hidden_size=hidden,
        lora_adaptations=list(config.get("lora_adaptations") or []),
        task_instructions=dict(config.get("task_instructions") or {}),
        matryoshka_dimensions=sorted(int(d) for d in config.get("matryoshka_dimensions") or [hidden]),
        model_max_length=min(model_max, positions),
        vocab_size=int(config.get("vocab_size") or 0),
        pad_id=int(config.get("pad_token_id") or 0),
        output_name=output_name,
        input_names=list(iface.inputs),
        quantized=iface.quantized,
        max_seq_length=int(seq_length) if seq_length else None,
    )


def _check_interface(kind: ModelKind, iface: OnnxInterface, problems: list[str]) -> str:
    int64 = onnx.TensorProto.INT64
    for name in ("input_ids", "attention_mask"):
        if name not in iface.inputs:
            problems.append(f"model.onnx has no input `{name}` (inputs: {', '.join(iface.inputs)})")
        elif iface.inputs[name][0] != int64 or len(iface.inputs[name][1]) != 2:
            problems.append(f"model.onnx input `{name}` must be int64 [batch, sequence]")
    if kind == "jina-v3":
        task = iface.inputs.get("task_id")
        if task is None:
            problems.append("model.onnx has no input `task_id`: not a jina-v3 export")
        elif task[0] != int64 or task[1]:
            problems.append("model.onnx input `task_id` must be a 0-d int64 scalar")
        if JINA_OUTPUT not in iface.outputs:
            problems.append(f"model.onnx has no output `{JINA_OUTPUT}` (outputs: {', '.join(iface.outputs)})")
        return JINA_OUTPUT
    extra = set(iface.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
    if extra:
        problems.append(f"model.onnx has inputs a sentence-transformer model does not take: {sorted(extra)}")
    for name in SENTENCE_TRANSFORMER_OUTPUTS:
        if name in iface.outputs:
            return name
    problems.append(
        f"model.onnx has none of the outputs {SENTENCE_TRANSFORMER_OUTPUTS} (outputs: {', '.join(iface.outputs)})"
    )
    return SENTENCE_TRANSFORMER_OUTPUTS[0]


def _hidden_from_output(iface: OnnxInterface, output_name: str) -> int:
    dims = iface.outputs.get(output_name, (0, []))[1]
    last = dims[-1] if dims else 0
    return last if isinstance(last, int) and last > 0 else 0
