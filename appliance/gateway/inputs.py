"""OpenAI's four shapes of `input` -> a list of texts or a list of token-id lists."""

from __future__ import annotations

from typing import cast

from appliance.errors import InvalidRequestError
from appliance.gateway.schemas import InputItem


def normalize_input(value: str | list[InputItem]) -> list[str] | list[list[int]]:
    """`"text"`, `["a", "b"]`, `[1, 2, 3]` (one input) or `[[1, 2], [3]]`; never a mix.

    Errors name the offending index (`input[3]`).
    """
    if isinstance(value, str):
        return [value]
    first = value[0]
    if isinstance(first, int):
        for index, item in enumerate(value):
            if not isinstance(item, int):
                raise _mixed(index, "token ids")
        return [cast(list[int], value)]
    kind = str if isinstance(first, str) else list
    for index, item in enumerate(value):
        if not isinstance(item, kind):
            raise _mixed(index, "strings" if kind is str else "token-id lists")
        if kind is list and not item:
            raise InvalidRequestError(f"input[{index}] is an empty list of token ids", param=f"input[{index}]")
    return cast(list[str] | list[list[int]], value)


def _mixed(index: int, expected: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"input[{index}] does not match input[0]: `input` must be a string, a list of strings, "
        f"a list of token ids or a list of token-id lists (expected {expected})",
        param=f"input[{index}]",
    )
