"""The same end-to-end checks on real weights: multilingual-e5-small behind jina-v3's interface.

`e5-small-jina` (built by ../shared/tools/test-assets) has the real XLM-R tokenizer (250002 ids),
absolute positions (max 512 tokens), e5's own task prompts ("query: ", "passage: ") and
Matryoshka sizes [32, 64, 128, 256, 384]. Skipped, with the reason, when ../shared is absent.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import openai
import pytest

from harness.reference import Reference
from harness.served import E5, JINA_TASKS, Served, assert_matches_reference

pytestmark = [pytest.mark.e2e, pytest.mark.assets]

TEXTS = [
    "Hello world",
    "how much protein should a woman eat per day",
    "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "Wie viel Eiweiß braucht eine Frau täglich?",
    "埃菲尔铁塔在哪里?",
    "¿Dónde está la biblioteca?",
    "x",
    "The Eiffel Tower is located in Paris, France. " * 8,
]
PARAPHRASES = [
    "Follow the white rabbit.",
    "Sigue al conejo blanco.",
    "Folge dem weißen Kaninchen.",
    "跟着白兔走。",
]
UNRELATED = [
    "The stock market crashed today.",
    "Photosynthesis converts light into chemical energy.",
]


@pytest.mark.parametrize("task", JINA_TASKS)
def test_every_e5_task_matches_the_reference(
    e5_stack: Served, e5_ref: Reference, task: str
) -> None:
    vectors, body = e5_stack.embed(E5, TEXTS, task=task)
    for text, got in zip(TEXTS, vectors):
        assert got.shape == (384,)
        assert_matches_reference(got, e5_ref.embed(text, task), f"e5 {task}: {text[:30]!r}")
    want_tokens = sum(len(e5_ref.ids(text, task)) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": want_tokens, "total_tokens": want_tokens}


def test_e5_through_the_openai_client_matches_the_reference(
    e5_stack: Served, e5_ref: Reference
) -> None:
    with openai.OpenAI(
        base_url=f"{e5_stack.base_url}/v1", api_key="unused", max_retries=0
    ) as client:
        result = client.embeddings.create(
            model=E5, input=TEXTS[:5], extra_body={"task": "retrieval.passage"}
        )
    for text, item in zip(TEXTS[:5], result.data):
        assert_matches_reference(
            np.asarray(item.embedding), e5_ref.embed(text, "retrieval.passage"), text
        )


def test_e5_tasks_give_different_vectors(e5_stack: Served) -> None:
    # e5's prompt is "query: " for four of the tasks: among those only the adapter differs.
    text = "Follow the white rabbit."
    vectors = {task: e5_stack.embed(E5, [text], task=task)[0][0] for task in JINA_TASKS}
    for a, b in combinations(JINA_TASKS, 2):
        assert np.abs(vectors[a] - vectors[b]).max() > 1e-3, f"{a} and {b} give the same vector"


@pytest.mark.parametrize("task", JINA_TASKS)
def test_e5_cross_lingual_paraphrases_score_above_unrelated_sentences(
    e5_stack: Served, task: str
) -> None:
    vectors, _ = e5_stack.embed(E5, PARAPHRASES + UNRELATED, task=task)
    paraphrases, unrelated = vectors[: len(PARAPHRASES)], vectors[len(PARAPHRASES) :]
    for i, anchor in enumerate(paraphrases):
        similar = min(float(anchor @ other) for j, other in enumerate(paraphrases) if j != i)
        different = max(float(anchor @ other) for other in unrelated)
        assert similar > different, (
            f"{task}: {PARAPHRASES[i]!r} is closer to an unrelated sentence ({different:.3f}) "
            f"than to one of its translations ({similar:.3f})"
        )


def test_e5_dimensions_128_equal_the_reference_truncated_then_normalized(
    e5_stack: Served, e5_ref: Reference
) -> None:
    for task in ("retrieval.query", "text-matching"):
        vectors, _ = e5_stack.embed(E5, TEXTS, task=task, dimensions=128)
        for text, got in zip(TEXTS, vectors):
            assert got.shape == (128,)
            assert_matches_reference(
                got, e5_ref.embed(text, task, dimensions=128), f"e5 d=128 {task}: {text[:30]!r}"
            )
