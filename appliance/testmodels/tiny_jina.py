"""Tiny random model with jina-embeddings-v3's exact ONNX interface and file layout.

The real model is ~2.2 GB; tests need something that loads in milliseconds but
exercises the same code paths: the same input/output names, dtypes and ranks
(including the 0-d ``task_id`` scalar and the decoy ``13049`` pooler output),
the same external-data layout (``model.onnx`` + ``model.onnx_data``), an
XLM-RoBERTa-like fast tokenizer and a jina-like ``config.json``.

Everything is built offline from numpy, ``onnx.helper`` and ``tokenizers`` with
a fixed seed, so two builds are byte-identical.

Usage::

    python -m appliance.testmodels.tiny_jina OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

__all__ = [
    "LORA_ADAPTATIONS",
    "MAX_POSITION_EMBEDDINGS",
    "OUTPUT_FILES",
    "build_onnx_model",
    "build_tiny_jina",
    "build_tokenizer",
]

# --- constants mirrored from jina-embeddings-v3 -------------------------------

LORA_ADAPTATIONS: tuple[str, ...] = (
    "retrieval.query",
    "retrieval.passage",
    "separation",
    "classification",
    "text-matching",
)
TASK_INSTRUCTIONS: dict[str, str] = {
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "separation": "",
    "classification": "",
    "text-matching": "",
}
JINA_MATRYOSHKA_DIMENSIONS: tuple[int, ...] = (32, 64, 128, 256, 512, 768, 1024)
MAX_POSITION_EMBEDDINGS = 8194
LORA_RANK = 4
PAD_ID = 1
BOS_ID = 0
EOS_ID = 2
UNK_ID = 3
SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3
MASK_TOKEN = "<mask>"  # always the last id, as in XLM-R
DECOY_OUTPUT = "13049"  # name of jina's pooler output in the exported ONNX graph

OPSET = 17  # has LayerNormalization; old enough for Triton's onnxruntime
IR_VERSION = 8  # the IR version that goes with opset 17
EXTERNAL_DATA = "model.onnx_data"
OUTPUT_FILES: tuple[str, ...] = (
    "model.onnx",
    EXTERNAL_DATA,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
)

# Cap on learned pieces so the vocab size does not drift when the corpus is edited.
MAX_VOCAB_SIZE = 3000

# Small multilingual corpus the Unigram vocab is derived from. It only has to
# produce a plausible mix of whole words, sub-words and characters.
CORPUS = """
The quick brown fox jumps over the lazy dog. A self-hosted embedding server turns
text into vectors so that similar documents end up close to each other. Search,
retrieval, clustering and classification all work on these vectors. The query
asks for evidence and the passage provides the answer. Machine learning models
read tokens, not words, and every token has an identifier. Please represent the
document for retrieval and the query for retrieving evidence documents. What is
the capital of France? Paris is the capital and the largest city of France. How
many people live in Berlin? About three point seven million people live there.
Water boils at one hundred degrees Celsius at sea level. The weather today is
sunny with a light breeze, tomorrow it will rain in the morning and clear up in
the evening. Numbers such as 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14 appear too.

Der schnelle braune Fuchs springt über den faulen Hund. Ein Einbettungsserver
verwandelt Texte in Vektoren, damit ähnliche Dokumente nahe beieinander liegen.
Die Suche nach Informationen ist wichtig für Menschen und Maschinen. Wie spät
ist es? Heute ist das Wetter schön, morgen regnet es wahrscheinlich. Größe,
Straße, Mädchen, Bäume, schön, müde, heißen, Übung, Ärger, Öffnung.

El rápido zorro marrón salta sobre el perro perezoso. Un servidor de
incrustaciones convierte textos en vectores para que los documentos parecidos
queden cerca. ¿Dónde está la biblioteca? La búsqueda de información es útil.
Mañana vamos a la playa con nuestros amigos, niños y niñas. ¡Qué día tan bonito!

Le renard brun rapide saute par-dessus le chien paresseux. Un serveur
d'intégration transforme le texte en vecteurs afin que les documents similaires
soient proches. Où est la gare ? Nous allons au marché avec les élèves. Ça va
très bien, merci beaucoup. L'été dernier, nous étions à la mer. Français, garçon,
cœur, naïve, être, fenêtre, hôpital, où, déjà.

La volpe marrone salta sopra il cane pigro. Il modello legge il testo e produce
vettori. A raposa marrom pula sobre o cão preguiçoso. Onde fica a estação? De
snelle bruine vos springt over de luie hond. Den snabba bruna räven hoppar över
den lata hunden.

Быстрая коричневая лиса прыгает через ленивую собаку. Сервер превращает текст в
векторы. Где находится библиотека? Сегодня хорошая погода.

Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Καλημέρα κόσμε.

快速的棕色狐狸跳过了懒狗。嵌入服务器把文本变成向量，相似的文档彼此靠近。
今天天气很好，我们去公园散步。机器学习模型读取词元而不是单词。检索文档和回答问题。
北京是中国的首都。你好，世界！谢谢你的帮助。

素早い茶色の狐が怠け者の犬を飛び越える。今日はいい天気ですね。ありがとうございます。
カタカナ、ひらがな、漢字を使います。

빠른 갈색 여우가 게으른 개를 뛰어넘는다. 안녕하세요, 세계! 감사합니다.

الثعلب البني السريع يقفز فوق الكلب الكسول. مرحبا بالعالم.

तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। नमस्ते दुनिया।

Hello world! Hello, world. hello WORLD :) e-mail: someone@example.com, URL:
https://example.com/path?q=1&lang=en #hashtag $5 €10 £3 ¥100 50% (a) [b] {c} <d>
"quoted" 'single' `backtick` ~tilde ^caret *star _under | pipe \\ back / slash
+ plus = equals ; semicolon ... — – • … « » „ “ ” ‘ ’
"""


# --- tokenizer ---------------------------------------------------------------


def _normalizer() -> normalizers.Normalizer:
    """XLM-R-like normalizer: NFKC plus collapsing runs of spaces."""
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """SentencePiece-style whitespace handling, as in XLM-R."""
    return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")


def _corpus_words(text: str) -> list[str]:
    """Split the corpus like the tokenizer does, then split punctuation off words."""
    normalized = _normalizer().normalize_str(text.replace("\n", " "))
    words: list[str] = []
    for word, _ in _pre_tokenizer().pre_tokenize_str(normalized):
        # Count "▁world" and "!" separately so "world!" still yields a "▁world" piece.
        words.extend(re.findall(r"▁?\w+|[^\w▁]|▁", word))
    return words


def _unigram_vocab(text: str, max_size: int) -> list[tuple[str, float]]:
    """Build Unigram pieces with log-probability scores, deterministically.

    UnigramTrainer is multithreaded and not reproducible, so pieces are counted
    by hand: every character (always kept, so nothing known becomes ``<unk>``),
    plus whole words and their 2..5 character prefixes/sub-strings.

    Args:
        text: Training text.
        max_size: Maximum number of pieces including special tokens.

    Returns:
        ``(piece, score)`` pairs in id order: specials, learned pieces, ``<mask>``.
    """
    words = _corpus_words(text)
    chars: Counter[str] = Counter()
    subwords: Counter[str] = Counter()
    for word in words:
        chars.update(word)
        subwords[word] += 2  # favour whole words over their fragments
        for length in range(2, 6):
            for start in range(len(word) - length + 1):
                subwords[word[start : start + length]] += 1
    # Printable ASCII always tokenizes to something better than <unk>.
    for code in range(0x21, 0x7F):
        chars[chr(code)] += 1
    chars["▁"] += 1
    for piece in list(subwords):
        if len(piece) < 2:
            del subwords[piece]

    budget = max_size - len(SPECIAL_TOKENS) - 1 - len(chars)
    if budget < 0:
        raise ValueError(f"max_size={max_size} is smaller than the character set")
    # Sort by (-count, piece) so ties break identically on every run.
    kept_chars = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))
    kept_subwords = sorted(subwords.items(), key=lambda kv: (-kv[1], kv[0]))[:budget]
    learned = kept_chars + kept_subwords
    total = float(sum(count for _, count in learned))
    # Characters get an extra penalty so the Viterbi path prefers longer pieces.
    scored = [(piece, round(math.log(count / total) - 2.0, 6)) for piece, count in kept_chars]
    scored += [(piece, round(math.log(count / total), 6)) for piece, count in kept_subwords]
    return [(tok, 0.0) for tok in SPECIAL_TOKENS] + scored + [(MASK_TOKEN, 0.0)]


def build_tokenizer(max_vocab_size: int = MAX_VOCAB_SIZE) -> Tokenizer:
    """Build the XLM-RoBERTa-like Unigram fast tokenizer.

    Args:
        max_vocab_size: Upper bound on the vocabulary size.

    Returns:
        A tokenizer with ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3 and
        ``<mask>`` as the last id; no padding or truncation configured.
    """
    vocab = _unigram_vocab(CORPUS, max_vocab_size)
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=False))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)],
    )
    # Registered as added tokens so literal "<s>" etc. in text map to their ids.
    tokenizer.add_special_tokens(
        [AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS]
        + [AddedToken(MASK_TOKEN, special=True, normalized=False, lstrip=True)]
    )
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


# --- ONNX graph --------------------------------------------------------------


class _GraphBuilder:
    """Accumulates nodes and initializers with deterministic, unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: set[str] = set()

    def init(self, name: str, array: npt.NDArray[Any]) -> str:
        """Register a constant tensor as an initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, name: str, array: npt.NDArray[Any]) -> str:
        """Emit a small structural constant once as a Constant node and return its name.

        Shape/axes constants must stay inline: onnxruntime's shape inference
        cannot read them from external data, and only weights are initializers.
        """
        if name not in self._consts:
            self._consts.add(name)
            tensor = numpy_helper.from_array(np.asarray(array), name)
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"Constant_{name}", value=tensor))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """Append a single-output node and return its output name."""
        self._count += 1
        output = out or f"{op_type.lower()}_{self._count}"
        node = helper.make_node(op_type, list(inputs), [output], name=f"{op_type}_{self._count}", **attrs)
        self.nodes.append(node)
        return output


class _Weights:
    """Draws float32 weights from one seeded generator in a fixed order."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def normal(self, shape: Sequence[int], scale: float) -> npt.NDArray[np.float32]:
        """Gaussian weights with the given standard deviation."""
        return (self._rng.standard_normal(shape) * scale).astype(np.float32)

    def gamma(self, hidden: int) -> npt.NDArray[np.float32]:
        """LayerNorm scale near 1 so activations keep unit-ish magnitude."""
        return (1.0 + self._rng.standard_normal(hidden) * 0.1).astype(np.float32)


def _layer_norm(g: _GraphBuilder, w: _Weights, x: str, prefix: str, hidden: int) -> str:
    """LayerNormalization over the hidden axis with random affine parameters."""
    scale = g.init(f"{prefix}.weight", w.gamma(hidden))
    bias = g.init(f"{prefix}.bias", w.normal([hidden], 0.05))
    return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=1e-5)


def _lora_linear(g: _GraphBuilder, w: _Weights, x: str, task_id: str, prefix: str, hidden: int, lora: bool) -> str:
    """``x @ W + b`` plus, optionally, the task's low-rank update ``(x @ A[t]) @ B[t]``."""
    weight = g.init(f"{prefix}.weight", w.normal([hidden, hidden], 0.15))
    bias = g.init(f"{prefix}.bias", w.normal([hidden], 0.02))
    y = g.op("Add", g.op("MatMul", x, weight), bias)
    if not lora:
        return y
    # Stacked per-task adapters; Gather on the scalar task_id drops the task axis.
    lora_a = g.init(f"{prefix}.lora_A", w.normal([len(LORA_ADAPTATIONS), hidden, LORA_RANK], 0.18))
    lora_b = g.init(f"{prefix}.lora_B", w.normal([len(LORA_ADAPTATIONS), LORA_RANK, hidden], 0.18))
    a_t = g.op("Gather", lora_a, task_id, axis=0)
    b_t = g.op("Gather", lora_b, task_id, axis=0)
    delta = g.op("MatMul", g.op("MatMul", x, a_t), b_t)
    return g.op("Add", y, delta)


def _embeddings(g: _GraphBuilder, w: _Weights, input_ids: str, task_id: str, vocab_size: int, hidden: int) -> str:
    """Word embeddings (+ per-task LoRA) + absolute position embeddings, then LayerNorm."""
    word_table = g.init("embeddings.word_embeddings.weight", w.normal([vocab_size, hidden], 0.2))
    words = g.op("Gather", word_table, input_ids, axis=0)
    # Embedding LoRA as in jina: A is indexed by token id like an embedding table.
    lora_a = g.init(
        "embeddings.word_embeddings.lora_A",
        w.normal([len(LORA_ADAPTATIONS), vocab_size, LORA_RANK], 0.25),
    )
    lora_b = g.init(
        "embeddings.word_embeddings.lora_B",
        w.normal([len(LORA_ADAPTATIONS), LORA_RANK, hidden], 0.25),
    )
    a_rows = g.op("Gather", g.op("Gather", lora_a, task_id, axis=0), input_ids, axis=0)
    words = g.op("Add", words, g.op("MatMul", a_rows, g.op("Gather", lora_b, task_id, axis=0)))

    # Position ids 0..seq-1 computed from the runtime shape, so any length works.
    seq_len = g.op(
        "Squeeze",
        g.op("Shape", input_ids, start=1, end=2),
        g.const("const.axes0", np.array([0], np.int64)),
    )
    positions = g.op(
        "Range",
        g.const("const.zero", np.array(0, np.int64)),
        seq_len,
        g.const("const.one", np.array(1, np.int64)),
    )
    pos_table = g.init("embeddings.position_embeddings.weight", w.normal([MAX_POSITION_EMBEDDINGS, hidden], 0.1))
    summed = g.op("Add", words, g.op("Gather", pos_table, positions, axis=0))
    return _layer_norm(g, w, summed, "embeddings.LayerNorm", hidden)


def _attention_bias(g: _GraphBuilder, attention_mask: str) -> str:
    """Additive key mask ``[B, 1, 1, S]``: 0 where attended, -1e9 where masked."""
    mask = g.op("Cast", attention_mask, to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.const("const.one_f", np.array(1.0, np.float32)), mask)
    bias = g.op("Mul", inverted, g.const("const.neg_large", np.array(-1e9, np.float32)))
    return g.op("Unsqueeze", bias, g.const("const.axes12", np.array([1, 2], np.int64)))


def _self_attention(
    g: _GraphBuilder,
    w: _Weights,
    x: str,
    bias: str,
    task_id: str,
    prefix: str,
    hidden: int,
    heads: int,
) -> str:
    """Multi-head self-attention with LoRA on Q and V and real key masking."""
    head_dim = hidden // heads
    split_shape = g.const("const.split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = g.const("const.merge_shape", np.array([0, 0, hidden], np.int64))

    def heads_first(t: str) -> str:
        # [B, S, H] -> [B, heads, S, head_dim]
        return g.op("Transpose", g.op("Reshape", t, split_shape), perm=[0, 2, 1, 3])

    q = heads_first(_lora_linear(g, w, x, task_id, f"{prefix}.query", hidden, lora=True))
    k = heads_first(_lora_linear(g, w, x, task_id, f"{prefix}.key", hidden, lora=False))
    v = heads_first(_lora_linear(g, w, x, task_id, f"{prefix}.value", hidden, lora=True))
    k_t = g.op("Transpose", k, perm=[0, 1, 3, 2])
    scale = g.const("const.attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k_t), scale), bias)
    probs = g.op("Softmax", scores, axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    merged = g.op("Reshape", context, merge_shape)
    return _lora_linear(g, w, merged, task_id, f"{prefix}.output", hidden, lora=False)


def _gelu(g: _GraphBuilder, x: str) -> str:
    """Exact GELU via Erf (the Gelu op only exists from opset 20)."""
    inv_sqrt2 = g.const("const.inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
    half = g.const("const.half", np.array(0.5, np.float32))
    one = g.const("const.one_f", np.array(1.0, np.float32))
    erf = g.op("Erf", g.op("Mul", x, inv_sqrt2))
    return g.op("Mul", g.op("Mul", x, half), g.op("Add", erf, one))


def _encoder_layer(
    g: _GraphBuilder,
    w: _Weights,
    x: str,
    bias: str,
    task_id: str,
    index: int,
    hidden: int,
    heads: int,
) -> str:
    """Post-LN transformer encoder layer (BERT/XLM-R style)."""
    prefix = f"encoder.layer.{index}"
    attn = _self_attention(g, w, x, bias, task_id, f"{prefix}.attention", hidden, heads)
    x = _layer_norm(g, w, g.op("Add", x, attn), f"{prefix}.attention.LayerNorm", hidden)
    inner = 4 * hidden
    w1 = g.init(f"{prefix}.intermediate.weight", w.normal([hidden, inner], 0.15))
    b1 = g.init(f"{prefix}.intermediate.bias", w.normal([inner], 0.02))
    w2 = g.init(f"{prefix}.ffn_output.weight", w.normal([inner, hidden], 0.08))
    b2 = g.init(f"{prefix}.ffn_output.bias", w.normal([hidden], 0.02))
    hidden_act = _gelu(g, g.op("Add", g.op("MatMul", x, w1), b1))
    ffn = g.op("Add", g.op("MatMul", hidden_act, w2), b2)
    return _layer_norm(g, w, g.op("Add", x, ffn), f"{prefix}.output.LayerNorm", hidden)


def _decoy_pooler(g: _GraphBuilder, w: _Weights, x: str, hidden: int) -> None:
    """jina's unused pooler output: tanh(dense(first token)), named ``13049``."""
    first = g.op("Gather", x, g.const("const.first_token", np.array(0, np.int64)), axis=1)
    weight = g.init("pooler.dense.weight", w.normal([hidden, hidden], 0.3))
    bias = g.init("pooler.dense.bias", w.normal([hidden], 0.3))
    g.op("Tanh", g.op("Add", g.op("MatMul", first, weight), bias), out=DECOY_OUTPUT)


def build_onnx_model(vocab_size: int, *, hidden: int, layers: int, heads: int, seed: int) -> onnx.ModelProto:
    """Build the jina-shaped encoder graph with random weights.

    Args:
        vocab_size: Rows of the word-embedding table.
        hidden: Hidden size.
        layers: Number of encoder layers.
        heads: Number of attention heads; must divide ``hidden``.
        seed: Seed for ``numpy.random.default_rng``.

    Returns:
        A checked ``ModelProto`` with all weights still inline.
    """
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    if layers < 1:
        raise ValueError("layers must be >= 1")
    g = _GraphBuilder()
    w = _Weights(seed)
    x = _embeddings(g, w, "input_ids", "task_id", vocab_size, hidden)
    bias = _attention_bias(g, "attention_mask")
    for index in range(layers):
        x = _encoder_layer(g, w, x, bias, "task_id", index, hidden, heads)
    g.op("Identity", x, out="text_embeds")
    _decoy_pooler(g, w, x, hidden)

    dims = ["batch_size", "sequence_length"]
    graph = helper.make_graph(
        g.nodes,
        "tiny_jina",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
            helper.make_tensor_value_info("task_id", TensorProto.INT64, []),
        ],
        outputs=[
            helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, [*dims, hidden]),
            helper.make_tensor_value_info(DECOY_OUTPUT, TensorProto.FLOAT, ["batch_size", hidden]),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="appliance.testmodels.tiny_jina",
        producer_version="1",
    )
    onnx.checker.check_model(model)
    return model


def _save_with_external_data(model: onnx.ModelProto, out_dir: Path) -> None:
    """Save graph to model.onnx and every initializer to model.onnx_data."""
    data_path = out_dir / EXTERNAL_DATA
    # onnx appends to an existing data file, which would corrupt a rebuild.
    data_path.unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(out_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA,
        size_threshold=0,
        convert_attribute=False,  # keep Constant nodes inline (see _GraphBuilder.const)
    )
    # onnx creates the data file 0600; Triton containers often run as another user.
    data_path.chmod(0o644)


# --- JSON side files ---------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    """Write stable, human-readable JSON (fixed indent, trailing newline)."""
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _matryoshka_dimensions(hidden: int) -> list[int]:
    """jina's Matryoshka sizes that fit in ``hidden``, plus ``hidden`` itself."""
    dims = [d for d in JINA_MATRYOSHKA_DIMENSIONS if d <= hidden]
    if hidden not in dims:
        dims.append(hidden)
    return dims


def _config(vocab_size: int, hidden: int, layers: int, heads: int, seed: int) -> dict[str, Any]:
    """jina-like config.json contents."""
    return {
        "architectures": ["XLMRobertaLoRA"],
        "model_type": "xlm-roberta",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "vocab_size": vocab_size,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "position_embedding_type": "absolute",
        "lora_rank": LORA_RANK,
        "lora_adaptations": list(LORA_ADAPTATIONS),
        "task_instructions": dict(TASK_INSTRUCTIONS),
        "matryoshka_dimensions": _matryoshka_dimensions(hidden),
        "test_assets": {
            "what": "tiny random jina-shaped model built by appliance.testmodels.tiny_jina",
            "seed": seed,
        },
    }


def _special_tokens_map() -> dict[str, str]:
    """XLM-R special tokens by role."""
    return {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": MASK_TOKEN,
    }


def _tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json as transformers' XLMRobertaTokenizer would expect."""
    return {
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "padding_side": "right",
        "tokenizer_class": "XLMRobertaTokenizer",
        **_special_tokens_map(),
        "clean_up_tokenization_spaces": True,
    }


# --- public entry point ------------------------------------------------------


def build_tiny_jina(out_dir: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Write the tiny jina-shaped model and its tokenizer files into ``out_dir``.

    Args:
        out_dir: Target directory; created if missing, files are overwritten.
        hidden: Hidden size.
        layers: Number of encoder layers.
        heads: Number of attention heads.
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    model = build_onnx_model(vocab_size, hidden=hidden, layers=layers, heads=heads, seed=seed)
    _save_with_external_data(model, out_dir)
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config())
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map())
    _write_json(out_dir / "config.json", _config(vocab_size, hidden, layers, heads, seed))
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m appliance.testmodels.tiny_jina OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = build_tiny_jina(args.out_dir, hidden=args.hidden, layers=args.layers, heads=args.heads, seed=args.seed)
    print(f"wrote {', '.join(OUTPUT_FILES)} to {out} in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
