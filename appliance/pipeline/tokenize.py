"""Text -> token ids with the model's own tokenizer and task instruction."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from appliance.errors import InvalidRequestError


class TextEncoder:
    """Tokenizes for one model: prefixes the task instruction, adds `<s>`…`</s>`, checks length.

    Runs in a worker thread (tokenizers releases the GIL), never on the event loop.
    """

    def __init__(self, tokenizer_path: Path, *, instructions: dict[str, str], max_tokens: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.instructions = instructions
        self.max_tokens = max_tokens
        self.special_count = len(self.tokenizer.encode("").ids)

    def prefixed(self, texts: list[str], task: str | None) -> list[str]:
        prefix = self.instructions.get(task, "") if task else ""
        return [prefix + t for t in texts] if prefix else texts

    def encode(self, texts: list[str], task: str | None) -> list[list[int]]:
        """Token ids per text; an input over `max_tokens` content tokens is refused, never cut."""
        encodings = self.tokenizer.encode_batch(self.prefixed(texts, task), add_special_tokens=True)
        ids = [e.ids for e in encodings]
        limit = self.max_tokens + self.special_count
        for index, seq in enumerate(ids):
            if len(seq) > limit:
                raise InvalidRequestError(
                    f"input[{index}] has {len(seq) - self.special_count} tokens, more than this model's "
                    f"limit of {self.max_tokens}; shorten or split it",
                    param=f"input[{index}]",
                    code="context_length_exceeded",
                )
        return ids
