"""Reranker training data: query groups from the reference jsonl format and (query, passage) pair ids.

A record is ``{"query", "pos": [..], "neg": [..], "pos_scores"?, "neg_scores"?, "query_prompt"?,
"passage_prompt"?, "prompt"?}`` (WAVE2_REFERENCE.md §3.b). Each item is one query with one positive
first and ``train_group_size - 1`` negatives; sampling is seeded per ``(seed, epoch, index)`` as for
embedders. Pairs are built like the reference's datasets:

- encoder: query cut to ``q_len + p_len // 4`` tokens, passage to ``p_len + q_len // 2``, then
  ``[CLS] q [SEP] p [SEP]`` (the tokenizer's own pair template) with only the passage cut so the pair
  fits ``q_len + p_len``;
- decoder / layerwise: ``[bos] q`` + ``sep p`` (the ``sep + p`` part cut so that, with ``sep + prompt``
  appended, the pair fits ``q_len + p_len``) + ``sep prompt``; bos only when it exists and differs from pad.

Batches are right-padded: the score is read at each row's last real token, exactly where the inference
rerankers read it, so a trained model scores the same in training and in ``LLMReranker``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flagembed.engine import pad_ids, tokenize
from flagembed.inference.pair_inputs import DEFAULT_LLM_PROMPT, pair_template
from flagembed.train.data import TrainFile, shuffle_chunks
from flagembed.train.reranker_config import RerankerDataArguments

DECODER_QUERY_INSTRUCTION = "A: "
DECODER_PASSAGE_INSTRUCTION = "B: "


def _instruct(text: str, instruction: str | None, fmt: str) -> str:
    return fmt.format(instruction, text) if instruction is not None else text


def sample_reranker_group(
    example: dict[str, Any], args: RerankerDataArguments, rng: np.random.Generator
) -> dict[str, Any]:
    """One query (instruction applied), its positive first, ``train_group_size - 1`` negatives, teacher scores."""
    group = args.train_group_size
    pos, neg = example["pos"], example["neg"]
    i = int(rng.integers(len(pos)))
    first = pos[i]
    if args.shuffle_ratio > 0 and len(first) > 100 and rng.random() < args.shuffle_ratio:
        first = shuffle_chunks(first, rng)
    texts = [first]
    scores = [float(example["pos_scores"][i])] if "pos_scores" in example else None
    need = group - 1
    if need > 0:
        pool = list(range(len(neg))) * math.ceil(need / len(neg)) if len(neg) < need else list(range(len(neg)))
        picked = [pool[j] for j in rng.choice(len(pool), size=need, replace=False)]
        texts += [neg[j] for j in picked]
        if scores is not None:
            scores += [float(example["neg_scores"][j]) for j in picked]
    return _item(example, texts, scores, args)


def _item(
    example: dict[str, Any], texts: list[str], scores: list[float] | None, args: RerankerDataArguments
) -> dict[str, Any]:
    """A query group with the instructions applied (a record's query_prompt/passage_prompt override them)."""
    q_instr = args.query_instruction_for_rerank
    if q_instr is not None and example.get("query_prompt") is not None:
        q_instr = example["query_prompt"]
    p_instr = args.passage_instruction_for_rerank
    if p_instr is not None and example.get("passage_prompt") is not None:
        p_instr = example["passage_prompt"]
    return {
        "query": _instruct(example["query"], q_instr, args.query_instruction_format),
        "passages": [_instruct(t, p_instr, args.passage_instruction_format) for t in texts],
        "teacher_scores": scores,
        "prompt": example.get("prompt"),
    }


def labelled_pairs(
    examples: list[dict[str, Any]], args: RerankerDataArguments
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every (query, pos) and (query, neg) pair of ``examples`` as one-passage items, with 1/0 labels."""
    items, labels = [], []
    for ex in examples:
        for label, key in ((1, "pos"), (0, "neg")):
            for text in ex.get(key) or []:
                items.append(_item(ex, [text], None, args))
                labels.append(label)
    return items, labels


class RerankerTrainDataset(torch.utils.data.Dataset):
    """Query groups over all examples; ``set_epoch`` re-draws the negatives."""

    def __init__(self, examples: list[dict[str, Any]], args: RerankerDataArguments, *, seed: int = 42) -> None:
        self.examples = examples
        self.args = args
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the negatives of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return sample_reranker_group(self.examples[index], self.args, rng)


def split_examples(
    files: list[TrainFile], ratio: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All examples, split into (train, held-out) with ``ratio`` of them held out (seeded, at least one each).

    Raises:
        ValueError: too few examples to hold some out.
    """
    examples = [ex for f in files for ex in f.examples]
    if ratio <= 0:
        return examples, []
    n_out = max(1, round(len(examples) * ratio))
    if n_out >= len(examples):
        raise ValueError(f"calibration_ratio {ratio} leaves no training example out of {len(examples)}")
    order = np.random.default_rng([seed, 7]).permutation(len(examples))
    held = {int(i) for i in order[:n_out]}
    return [ex for i, ex in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def _ids(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    return tokenize(tokenizer, texts, max_len, add_special_tokens=False).ids


@dataclass
class PairBatchIds:
    """Token ids (and type ids for BERT-style pairs) of each pair, unpadded."""

    ids: list[list[int]]
    types: list[list[int]] | None


def encoder_pair_ids(
    tokenizer: Any, queries: list[str], passages: list[str], query_max_len: int, passage_max_len: int
) -> PairBatchIds:
    """``prefix q middle p suffix`` per pair, built like the reference's encoder dataset (module doc)."""
    tpl = pair_template(tokenizer)
    total = query_max_len + passage_max_len
    q_ids = _ids(tokenizer, queries, query_max_len + passage_max_len // 4)
    p_ids = _ids(tokenizer, passages, passage_max_len + query_max_len // 2)
    out, types = [], []
    with_types = (tpl.first_type, tpl.second_type) != (0, 0)
    for q, p in zip(q_ids, p_ids):
        room = total - tpl.num_special - len(q)
        if room < 0:  # only when q alone exceeds the budget; cut the query rather than overflow
            q, room = q[: len(q) + room], 0
        p = p[:room]
        head = [*tpl.prefix, *q, *tpl.middle]
        out.append([*head, *p, *tpl.suffix])
        types.append([tpl.first_type] * len(head) + [tpl.second_type] * (len(p) + len(tpl.suffix)))
    return PairBatchIds(out, types if with_types else None)


def decoder_pair_ids(
    tokenizer: Any,
    queries: list[str],
    passages: list[str],
    query_max_len: int,
    passage_max_len: int,
    prompts: list[str],
    sep_token: str = "\n",
) -> PairBatchIds:
    """``[bos] q sep p sep prompt`` per pair, built like the reference's LLM dataset (module doc)."""
    sep = list(tokenizer(sep_token, add_special_tokens=False)["input_ids"])
    bos_id, pad_id = tokenizer.bos_token_id, tokenizer.pad_token_id
    bos = [int(bos_id)] if bos_id is not None and bos_id != pad_id else []
    q_ids = _ids(tokenizer, queries, query_max_len + passage_max_len // 4)
    p_ids = _ids(tokenizer, passages, passage_max_len + query_max_len // 2)
    prompt_cache: dict[str, list[int]] = {}
    out = []
    for q, p, prompt in zip(q_ids, p_ids, prompts):
        if prompt not in prompt_cache:
            prompt_cache[prompt] = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        prompt_ids = prompt_cache[prompt]
        budget = query_max_len + passage_max_len - len(prompt_ids) - len(sep)
        first, second = bos + q, sep + p
        room = budget - len(first)
        if room < 0:
            first, room = first[: max(0, len(first) + room)], 0
        out.append(first + second[:room] + sep + prompt_ids)
    return PairBatchIds(out, None)


class RerankerCollator:
    """Build every pair of a batch of query groups and right-pad them into tensors.

    Output: ``{"pair": {"input_ids", "attention_mask"[, "token_type_ids"]}, "group_size": G,
    "teacher_scores": (B, G) or None}``; pairs are ordered group by group, positive first.
    """

    def __init__(self, tokenizer: Any, args: RerankerDataArguments, model_type: str) -> None:
        self.tokenizer = tokenizer
        self.args = args
        self.decoder = model_type != "encoder"
        ids = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
        self.pad_id = int(next((t for t in ids if t is not None), 0))

    def pair_ids(self, items: list[dict[str, Any]]) -> PairBatchIds:
        """Unpadded ids of every pair in ``items`` (group by group)."""
        a = self.args
        queries = [x["query"] for x in items for _ in x["passages"]]
        passages = [p for x in items for p in x["passages"]]
        if not self.decoder:
            return encoder_pair_ids(self.tokenizer, queries, passages, a.query_max_len, a.passage_max_len)
        default = a.prompt if a.prompt is not None else DEFAULT_LLM_PROMPT
        prompts = [x.get("prompt") or default for x in items for _ in x["passages"]]
        return decoder_pair_ids(
            self.tokenizer, queries, passages, a.query_max_len, a.passage_max_len, prompts, a.sep_token
        )

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate query groups.

        Raises:
            ValueError: groups of different sizes in one batch.
        """
        sizes = sorted({len(x["passages"]) for x in items})
        if len(sizes) != 1:
            raise ValueError(f"all groups in a batch must have the same size, got sizes {sizes}")
        built = self.pair_ids(items)
        ids, mask = pad_ids(built.ids, self.pad_id, "right", self.args.pad_to_multiple_of)
        pair = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if built.types is not None:
            types, _ = pad_ids(built.types, 0, "right", self.args.pad_to_multiple_of)
            pair["token_type_ids"] = torch.from_numpy(types)
        teacher = None
        if all(x["teacher_scores"] is not None for x in items):
            teacher = torch.tensor([x["teacher_scores"] for x in items], dtype=torch.float32)
        return {"pair": pair, "group_size": sizes[0], "teacher_scores": teacher}
