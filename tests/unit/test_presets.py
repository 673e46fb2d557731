"""A request's task / input_type / preset -> what runs; token-id inputs fed as sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import InvalidRequestError
from appliance.pipeline.presets import Asked, resolve
from appliance.pipeline.tokenize import TextEncoder
from appliance.settings import CompiledPreset

PASSAGE = CompiledPreset(name="jina-passage", model="jina", task="retrieval.passage")
SMALL = CompiledPreset(name="jina-small", model="jina", dimensions=32, normalized=False, embedding_type="ubinary")
FLOAT = CompiledPreset(name="jina-float", model="jina", encoding_format="float")


@pytest.mark.parametrize(
    ("asked", "task", "param"),
    [
        (Asked(), None, "task"),
        (Asked(task="separation"), "separation", "task"),
        (Asked(input_type="query"), "retrieval.query", "input_type"),
        (Asked(input_type="passage"), "retrieval.passage", "input_type"),
        (Asked(input_type="document"), "retrieval.passage", "input_type"),
        (Asked(task="retrieval.query", input_type="query"), "retrieval.query", "task"),
    ],
)
def test_input_type_is_an_alias_of_task(asked: Asked, task: str | None, param: str) -> None:
    resolved = resolve(asked, None)
    assert (resolved.task, resolved.task_param) == (task, param)
    assert resolved.normalized is True and resolved.wire == "float" and resolved.dimensions is None


@pytest.mark.parametrize(
    ("asked", "says"),
    [
        (Asked(input_type="search_query"), "accepted values: `query`, `passage`, `document`"),
        (Asked(input_type="Query"), "unknown input_type"),
        (Asked(task="retrieval.query", input_type="passage"), "disagree"),
    ],
)
def test_bad_or_disagreeing_input_type_is_a_400_naming_it(asked: Asked, says: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve(asked, None)
    assert info.value.status_code == 400 and info.value.param == "input_type"
    assert says in info.value.message


def test_a_preset_fixes_the_task_and_agreeing_requests_pass() -> None:
    assert resolve(Asked(), PASSAGE).task == "retrieval.passage"
    assert resolve(Asked(task="retrieval.passage"), PASSAGE).task == "retrieval.passage"
    assert resolve(Asked(input_type="document"), PASSAGE).task == "retrieval.passage"
    assert resolve(Asked(dimensions=32, normalized=False), PASSAGE).dimensions == 32


@pytest.mark.parametrize(
    ("asked", "preset", "param"),
    [
        (Asked(task="retrieval.query"), PASSAGE, "task"),
        (Asked(input_type="query"), PASSAGE, "input_type"),
        (Asked(dimensions=64), SMALL, "dimensions"),
        (Asked(normalized=True), SMALL, "normalized"),
    ],
)
def test_a_request_asking_for_another_vector_than_its_preset_is_a_400(
    asked: Asked, preset: CompiledPreset, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve(asked, preset)
    assert info.value.param == param
    assert f"send model `{preset.model}`" in info.value.message


def test_a_presets_wire_format_is_a_default_the_request_overrides() -> None:
    small = resolve(Asked(), SMALL)
    assert (small.dimensions, small.normalized, small.wire) == (32, False, "ubinary")
    assert resolve(Asked(embedding_type="float"), SMALL).wire == "float"
    assert resolve(Asked(encoding_format="base64"), SMALL).wire == "ubinary"  # embedding_type wins, as without presets
    assert resolve(Asked(), FLOAT).wire == "float"
    assert resolve(Asked(encoding_format="base64"), FLOAT).wire == "base64"  # what the OpenAI SDK sends


# --- token-id inputs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(tiny_jina_dir: Path) -> TextEncoder:
    return TextEncoder(tiny_jina_dir / "tokenizer.json", instructions={"retrieval.query": "Q: "}, max_tokens=6,
                       vocab_size=250002)


def test_token_ids_are_fed_exactly_as_sent(encoder: TextEncoder) -> None:
    assert encoder.fit_ids([[5, 6, 7], [0, 9, 2]], truncate=False) == [[5, 6, 7], [0, 9, 2]]


def test_the_ids_tokenize_returns_for_a_text_are_what_the_text_embeds_with(encoder: TextEncoder) -> None:
    for task in (None, "retrieval.query"):
        ids = [p.id for p in encoder.pieces(["hello world"], task)[0]]
        assert encoder.fit_ids([ids], truncate=False) == encoder.encode_texts(["hello world"], task, truncate=False)
    bare = [p.id for p in encoder.pieces(["hello world"], None, add_special_tokens=False)[0]]
    assert bare == encoder.content_ids(["hello world"])[0]


def test_token_ids_over_the_sequence_limit_are_refused_or_cut_to_the_first_ids(encoder: TextEncoder) -> None:
    assert encoder.max_ids == 8  # 6 content tokens + <s> + </s>: the longest a text becomes
    ids = list(range(10, 20))
    with pytest.raises(InvalidRequestError) as info:
        encoder.fit_ids([ids], truncate=False)
    assert info.value.code == "context_length_exceeded" and "10 token ids" in info.value.message
    assert encoder.fit_ids([ids], truncate=True) == [ids[:8]]


@pytest.mark.parametrize("bad", [-1, 250002, 2**40])
def test_token_ids_outside_the_vocabulary_are_a_400(encoder: TextEncoder, bad: int) -> None:
    with pytest.raises(InvalidRequestError) as info:
        encoder.fit_ids([[5], [6, bad]], truncate=False)
    assert info.value.status_code == 400 and info.value.param == "input[1]"
    assert str(bad) in info.value.message
