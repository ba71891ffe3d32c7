"""Token-exact prompts for passkey retrieval and needle-in-a-haystack (the reference's texts, LONG_CONTEXT.md §5).

A prompt is ``[tokenizer specials] description + haystack[:a] + needle + haystack[a:b] + question``, built on
token ids so that its length is exactly ``length`` tokens and the needle starts at the planned token index
``len(specials) + len(description) + round((budget - question - needle - description) * depth / 100)``.
With ``chat=True`` the text between the specials is wrapped as one user turn of the tokenizer's chat template
(then the length grows by the template's overhead; the real length is recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

DESCRIPTION = (
    "There is an important infomation hidden in the following context. Find the information and memorize it. "
    "I will quiz you about the important information there.\n"
)  # sic, as in the reference
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_INFO = "\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n"
PASSKEY_QUESTION = "\n\nWhat is the pass key?"
NEEDLE = "\n\nThe best thing to do in San Francisco is sitting in Dolores Park and eating a hamburg on a sunny day.\n\n"
NEEDLE_QUESTION = "\n\nWhat is the best thing to do in San Francisco?\nAnswer:"


@dataclass
class Prompt:
    """One built prompt: ids to feed, the expected answer and where the needle sits."""

    input_ids: list[int]
    answer: str
    length: int  # the target length in tokens
    depth: float  # percent
    needle_start: int  # token index of the needle's first token (exact without chat wrapping)
    needle_tokens: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("input_ids")
        out["tokens"] = len(self.input_ids)
        return out


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer itself puts before a text (e.g. Llama's bos); empty for Qwen-style tokenizers."""
    with_specials = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = _ids(tokenizer, "a")
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            return with_specials[:start]
    return []


def chat_ids(tokenizer: Any, text: str) -> list[int]:
    """``text`` as one user turn of the tokenizer's chat template, with the generation prompt, as ids."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def haystack_ids(tokenizer: Any, text: str, n_tokens: int) -> list[int]:
    """At least ``n_tokens`` ids of ``text``, repeated as often as needed."""
    base = _ids(tokenizer, text)
    if not base:
        raise ValueError("haystack text is empty after tokenization")
    repeats = -(-n_tokens // len(base))
    return _ids(tokenizer, " ".join([text] * repeats)) if repeats > 1 else base


def read_haystack(paths: Iterable[str | Path] | None) -> str:
    """The text of local haystack files (sorted, joined by blank lines); the passkey noise when none are given."""
    files: list[Path] = []
    for p in paths or []:
        p = Path(p)
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    if not files:
        return NOISE
    texts = [f.read_text(encoding="utf-8") for f in files]
    return "\n\n".join(t for t in texts if t.strip())


def build_insertion_prompt(
    tokenizer: Any,
    length: int,
    depth: float,
    needle: str,
    question: str,
    haystack: str = NOISE,
    description: str = DESCRIPTION,
    answer: str = "",
    chat: bool = False,
) -> Prompt:
    """A prompt of exactly ``length`` tokens (before chat wrapping) with ``needle`` at ``depth`` percent.

    Raises:
        ValueError: the fixed parts (specials, description, needle, question) do not fit in ``length``, or the
            depth is outside [0, 100].
    """
    if not 0 <= depth <= 100:
        raise ValueError(f"depth must be in [0, 100], got {depth}")
    specials = [] if chat else special_prefix(tokenizer)
    desc, info, quest = _ids(tokenizer, description), _ids(tokenizer, needle), _ids(tokenizer, question)
    budget = length - len(specials)
    free = budget - len(desc) - len(info) - len(quest)
    if free < 0:
        raise ValueError(f"length {length} is too short: description, needle and question take {budget - free} tokens")
    before = int(round(free * depth / 100))
    hay = haystack_ids(tokenizer, haystack, free)
    ids = specials + desc + hay[:before] + info + hay[before:free] + quest
    start = len(specials) + len(desc) + before
    if chat:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        ids = chat_ids(tokenizer, text)
    return Prompt(ids, answer, length, depth, start, len(info))


def passkey_prompt(tokenizer: Any, length: int, depth: float, key: int | str, chat: bool = False,
                   question: str = PASSKEY_QUESTION) -> Prompt:
    """The reference's passkey prompt (noise haystack) with ``key`` at ``depth`` percent."""
    return build_insertion_prompt(tokenizer, length, depth, PASSKEY_INFO.format(key=key), question, NOISE,
                                  answer=str(key), chat=chat)


def passkeys(n: int, seed: int = 123) -> list[int]:
    """``n`` five-digit keys from ``numpy.random.default_rng(seed)``, drawn in order (the reference's keys)."""
    rng = np.random.default_rng(seed)
    return [int(k) for k in rng.integers(10000, 99999, size=n)]


def grid(start: int, stop: int, num: int) -> list[int]:
    """``linspace(start, stop, num)`` as ints (the reference's length and depth grids)."""
    return [int(x) for x in np.linspace(start, stop, num)]


def uses_chat(tokenizer: Any, chat: bool | str) -> bool:
    """``chat="auto"``: wrap prompts in the chat template when the tokenizer has one."""
    if chat == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return bool(chat)


def check_grid(lengths: Sequence[int], depths: Sequence[float]) -> None:
    """Raise ValueError for an empty grid or a non-positive length."""
    if not lengths or not depths:
        raise ValueError("lengths and depths must each name at least one value")
    for i, n in enumerate(lengths):
        if n < 1:
            raise ValueError(f"lengths[{i}] is {n}; lengths must be >= 1")


__all__ = [
    "DESCRIPTION",
    "NEEDLE",
    "NEEDLE_QUESTION",
    "NOISE",
    "PASSKEY_INFO",
    "PASSKEY_QUESTION",
    "Prompt",
    "build_insertion_prompt",
    "check_grid",
    "grid",
    "haystack_ids",
    "passkey_prompt",
    "passkeys",
    "read_haystack",
    "special_prefix",
    "uses_chat",
]
