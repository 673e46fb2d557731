"""Inputs -> token ids with the model's own tokenizer, task instruction and length rules.

Runs in a worker thread (tokenizers releases the GIL), never on the event loop.
Nothing is cut unless the request asked for `truncate`; then the content is cut
and the special tokens (`<s>` … `</s>`) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.errors import InvalidRequestError
from appliance.spec.tokenizer import load_tokenizer


@dataclass(frozen=True)
class TokenPiece:
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class LateChunkPlan:
    """One sequence holding every input, and each input's [start, stop) token span in it."""

    ids: list[int]
    spans: list[tuple[int, int]]


class TextEncoder:
    """Tokenization for one model."""

    def __init__(self, tokenizer_path: Path, *, instructions: dict[str, str], max_tokens: int, vocab_size: int) -> None:
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.instructions = instructions
        self.max_tokens = max_tokens
        self.vocab_size = vocab_size
        empty = self.tokenizer.encode("").ids  # the template's special tokens: <s> </s>, [CLS] [SEP]
        self.head, self.tail = empty[:1], empty[1:]
        self.max_ids = max_tokens + len(empty)  # the longest sequence a text input becomes
        # No token covers more characters than the longest vocabulary piece, so a text longer than
        # this (with a 2x margin for whitespace the normalizer collapses) cannot fit in max_tokens.
        # Checked before tokenizing: a 10 MB string is refused at once instead of costing seconds
        # and a gigabyte in the tokenizer.
        longest_piece = max((len(piece) for piece in self.tokenizer.get_vocab()), default=1)
        self.max_chars = max(100_000, 2 * longest_piece * (max_tokens + len(empty)))

    def instruction(self, task: str | None) -> str:
        return self.instructions.get(task, "") if task else ""

    def encode_texts(self, texts: list[str], task: str | None, *, truncate: bool) -> list[list[int]]:
        """Token ids per text: instruction + text, wrapped in the special tokens."""
        prefix = self.instruction(task)
        texts = [self._cap_chars(index, text, truncate) for index, text in enumerate(texts)]
        encodings = self.tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=True)
        return [self._fit(index, e.ids, truncate) for index, e in enumerate(encodings)]

    def _cap_chars(self, index: int, text: str, truncate: bool) -> str:
        if len(text) <= self.max_chars:
            return text
        if truncate:
            return text[: self.max_chars]  # still more than max_tokens tokens; _fit cuts the rest
        raise InvalidRequestError(
            f"input[{index}] has {len(text)} characters, far more than this model's limit of "
            f"{self.max_tokens} tokens can hold; shorten it, or send `truncate: true` to cut it",
            param=f"input[{index}]",
            code="context_length_exceeded",
        )

    def fit_ids(self, token_lists: list[list[int]], *, truncate: bool) -> list[list[int]]:
        """Token-id inputs are fed exactly as sent (as TEI, vLLM and OpenAI do): no special tokens
        or instruction are added, so `/tokenize`'s ids reproduce the text's vector.

        Their limit is the longest sequence a text can become, `max_ids` (max_tokens plus the
        special tokens); `truncate` keeps the first `max_ids` ids.
        """
        out = []
        for index, tokens in enumerate(token_lists):
            param = f"input[{index}]" if len(token_lists) > 1 else "input"
            self.check_ids(tokens, param)
            if len(tokens) > self.max_ids:
                if not truncate:
                    raise InvalidRequestError(
                        f"{param} has {len(tokens)} token ids, more than this model's limit of {self.max_ids} "
                        f"per sequence ({self.max_tokens} content tokens and {self.max_ids - self.max_tokens} "
                        "special ones); shorten it, or send `truncate: true` to keep the first ones",
                        param=param,
                        code="context_length_exceeded",
                    )
                tokens = tokens[: self.max_ids]
            out.append(tokens)
        return out

    def check_ids(self, tokens: list[int], param: str) -> None:
        for position, token in enumerate(tokens):
            if not 0 <= token < self.vocab_size:
                raise InvalidRequestError(
                    f"{param}[{position}] = {token} is not a token id of this model (0..{self.vocab_size - 1})",
                    param=param,
                    code="invalid_token_id",
                )

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        for index, text in enumerate(texts):  # late chunking: all of them must fit in one sequence
            self._cap_chars(index, text, truncate=False)
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def late_chunk(self, contents: list[list[int]], task: str | None, *, instruction: bool = True) -> LateChunkPlan:
        """`<s>` instruction input0 input1 … `</s>`, with each input's own span.

        The instruction's trailing space is dropped before tokenizing it alone: in the joined
        text it would merge into the next word, alone it becomes a stray `▁` token.
        Token-id inputs (`instruction=False`) get no instruction, as in the plain path.
        """
        prefix = self.instruction(task).rstrip() if instruction else ""
        ids = [*self.head, *(self.content_ids([prefix])[0] if prefix else [])]
        spans = []
        for index, content in enumerate(contents):
            if not content:
                raise InvalidRequestError(f"input[{index}] has no tokens to pool", param=f"input[{index}]")
            spans.append((len(ids), len(ids) + len(content)))
            ids.extend(content)
        ids.extend(self.tail)
        content_count = len(ids) - len(self.head) - len(self.tail)
        if content_count > self.max_tokens:
            raise InvalidRequestError(
                f"late_chunking joins all inputs into one sequence of {content_count} tokens, more than this "
                f"model's limit of {self.max_tokens}; send fewer or shorter inputs",
                param="input",
                code="context_length_exceeded",
            )
        return LateChunkPlan(ids=ids, spans=spans)

    def pieces(self, texts: list[str], task: str | None, *, add_special_tokens: bool = True) -> list[list[TokenPiece]]:
        """What /tokenize shows: the same prefixing as the embedding path (and its special tokens)."""
        prefix = self.instruction(task)
        out = []
        for encoding in self.tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=add_special_tokens):
            out.append(
                [
                    TokenPiece(
                        id=i,
                        text=tok,
                        special=bool(special),
                        start=None if special else start,
                        stop=None if special else stop,
                    )
                    for i, tok, special, (start, stop) in zip(
                        encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
                    )
                ]
            )
        return out

    def _fit(self, index: int, ids: list[int], truncate: bool) -> list[int]:
        specials = len(self.head) + len(self.tail)
        content = len(ids) - specials
        if content <= self.max_tokens:
            return ids
        if truncate:
            return [*ids[: len(self.head) + self.max_tokens], *ids[len(ids) - len(self.tail) :]]
        raise InvalidRequestError(
            f"input[{index}] has {content} tokens, more than this model's limit of {self.max_tokens}; "
            "shorten it, or send `truncate: true` to cut it",
            param=f"input[{index}]",
            code="context_length_exceeded",
        )
