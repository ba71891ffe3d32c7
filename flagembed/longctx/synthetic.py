"""Synthetic long-context training rows that need no LLM: passkey, needle and key-value retrieval.

Each row is a chat row (``messages``: user = long context + question, assistant = answer), sized in tokens
with the model's tokenizer, so :func:`flagembed.longctx.data.build_rows` labels only the answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from flagembed.longctx.harness import prompts as P

Kind = Literal["passkey", "needle", "kv"]
KV_PROMPT = "Extract the value corresponding to the specified key in the JSON object below.\n\n"
NEEDLES = (
    ("The secret ingredient of the soup is {v}.", "What is the secret ingredient of the soup?", "The secret "
     "ingredient of the soup is {v}."),
    ("The magic city is {v}.", "What is the magic city?", "The magic city is {v}."),
)
VALUES = ("saffron", "basil", "ginger", "Lisbon", "Kyoto", "Nairobi", "cumin", "Oslo", "thyme", "Quito")


def _text(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def passkey_row(tokenizer: Any, length: int, depth: float, key: int) -> dict[str, Any]:
    """A passkey conversation whose user turn is ``length`` tokens (before the chat template)."""
    prompt = P.passkey_prompt(tokenizer, length, depth, key)
    return {"messages": [{"role": "user", "content": _text(tokenizer, prompt.input_ids)},
                         {"role": "assistant", "content": f"The pass key is {key}."}],
            "kind": "passkey", "length": length, "depth": depth}


def needle_row(tokenizer: Any, length: int, depth: float, rng: np.random.Generator,
               haystack: str = P.NOISE) -> dict[str, Any]:
    """A needle conversation: a fact with a random value inside ``haystack``, asked back."""
    fact, question, answer = NEEDLES[int(rng.integers(len(NEEDLES)))]
    value = VALUES[int(rng.integers(len(VALUES)))]
    prompt = P.build_insertion_prompt(tokenizer, length, depth, f"\n\n{fact.format(v=value)}\n\n", f"\n\n{question}",
                                      haystack)
    return {"messages": [{"role": "user", "content": _text(tokenizer, prompt.input_ids)},
                         {"role": "assistant", "content": answer.format(v=value)}],
            "kind": "needle", "length": length, "depth": depth}


def kv_row(tokenizer: Any, length: int, rng: np.random.Generator) -> dict[str, Any]:
    """Key-value retrieval: a JSON object of random UUID pairs (about ``length`` tokens), one key asked."""

    def new_uuid() -> str:
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

    key, value = new_uuid(), new_uuid()
    question = f'\n\nKey: "{key}"\nThe value associated with the specified key is: '

    def n_tokens(obj: dict[str, str]) -> int:
        text = KV_PROMPT + json.dumps(obj, indent=0) + question
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    one = n_tokens({key: value})
    per_pair = max(1, n_tokens({key: value, new_uuid(): new_uuid()}) - one)
    items = [(new_uuid(), new_uuid()) for _ in range(max(0, (length - one) // per_pair))]
    items.insert(int(rng.integers(len(items) + 1)), (key, value))
    context = json.dumps(dict(items), indent=0)
    return {"messages": [{"role": "user", "content": KV_PROMPT + context + question},
                         {"role": "assistant", "content": value}], "kind": "kv", "length": length}


def synthetic_rows(tokenizer: Any, n: int, lengths: Sequence[int], kinds: Sequence[Kind] = ("passkey",),
                   seed: int = 0, haystack: str = P.NOISE) -> list[dict[str, Any]]:
    """``n`` rows cycling through ``kinds`` with lengths and depths drawn from ``default_rng(seed)``.

    Raises:
        ValueError: an unknown kind, or no length given.
    """
    if not lengths:
        raise ValueError("give at least one length")
    for k in kinds:
        if k not in ("passkey", "needle", "kv"):
            raise ValueError(f"unknown synthetic kind {k!r}; known: passkey, needle, kv")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind, length = kinds[i % len(kinds)], int(lengths[int(rng.integers(len(lengths)))])
        depth = float(rng.integers(0, 101))
        if kind == "passkey":
            rows.append(passkey_row(tokenizer, length, depth, int(rng.integers(10000, 100000))))
        elif kind == "needle":
            rows.append(needle_row(tokenizer, length, depth, rng, haystack))
        else:
            rows.append(kv_row(tokenizer, length, rng))
    return rows


__all__ = ["kv_row", "needle_row", "passkey_row", "synthetic_rows"]
