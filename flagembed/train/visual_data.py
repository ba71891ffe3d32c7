"""Visualized-BGE training data: query / positive / negative items that are texts, images or image+text.

One JSONL row per example (image paths relative to the file's folder)::

    t2it:        {"query": "a red circle", "pos": {"image": "a.png", "text": "red circle"}, "neg": [...]}
    edit_image:  {"query": {"image": "a.png", "text": "make it blue"}, "pos": "b.png", "neg": ["c.png"]}

An item is a string (a text; for ``edit_image`` candidates, an image path) or an ``{"image", "text"}``
dict. ``pos`` may be one item or a list (one is drawn per epoch). The collator turns each side into a
text-only batch and an image batch whose ids carry the image slots, as the inference engine does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from flagembed._io import iter_jsonl
from flagembed.engine import pad_ids, tokenize
from flagembed.models.vision import preprocess
from flagembed.models.vision.multimodal import image_sequence_ids

TaskType = Literal["t2it", "edit_image"]
TASK_TYPES = ("t2it", "edit_image")
Item = dict[str, Any]  # {"image": str | None, "text": str}


def _item(value: Any, base: Path, image_default: bool, where: str) -> Item:
    if isinstance(value, str):
        return {"image": str(base / value), "text": ""} if image_default else {"image": None, "text": value}
    if isinstance(value, dict) and set(value) <= {"image", "text"} and value:
        image, text = value.get("image"), value.get("text") or ""
        if image is not None and not isinstance(image, str) or not isinstance(text, str):
            raise ValueError(f"{where}: 'image' and 'text' must be strings")
        return {"image": str(base / image) if image is not None else None, "text": text}
    raise ValueError(f"{where}: an item must be a string or an {{'image', 'text'}} dict, got {value!r:.80}")


def load_visual_rows(files: Sequence[str | Path], task_type: TaskType, max_rows: int | None = None) -> list[dict]:
    """Rows ``{"query": Item, "pos": [Item], "neg": [Item]}`` from JSONL files, checked against ``task_type``.

    Raises:
        ValueError: unknown task type, a malformed row or one that does not fit the task (file and line named).
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task_type {task_type!r}; valid: {', '.join(TASK_TYPES)}")
    rows: list[dict] = []
    for file in files:
        base = Path(file).parent
        for lineno, rec in iter_jsonl(file):
            where = f"{file}:{lineno}"
            if "query" not in rec or "pos" not in rec:
                raise ValueError(f"{where}: a row needs 'query' and 'pos'")
            pos = rec["pos"] if isinstance(rec["pos"], list) else [rec["pos"]]
            cand_image = task_type == "edit_image"
            row = {
                "query": _item(rec["query"], base, False, where),
                "pos": [_item(p, base, cand_image, where) for p in pos],
                "neg": [_item(n, base, cand_image, where) for n in rec.get("neg", [])],
            }
            _check_task(row, task_type, where)
            rows.append(row)
            if max_rows is not None and len(rows) >= max_rows:
                return rows
    if not rows:
        raise ValueError(f"no training rows in {[str(f) for f in files]}")
    return rows


def _check_task(row: dict, task_type: TaskType, where: str) -> None:
    q, cands = row["query"], row["pos"] + row["neg"]
    if not row["pos"]:
        raise ValueError(f"{where}: 'pos' is empty")
    if task_type == "t2it" and (q["image"] is not None or any(c["image"] is None for c in cands)):
        raise ValueError(f"{where}: t2it needs a text query and image (+text) candidates")
    if task_type == "edit_image" and (q["image"] is None or any(c["image"] is None or c["text"] for c in cands)):
        raise ValueError(f"{where}: edit_image needs an image+text query and image-only candidates")


class VisualTrainDataset(Dataset):
    """One query with ``group_size`` candidates (positive first); negatives re-drawn each epoch."""

    def __init__(self, rows: list[dict], group_size: int, seed: int = 42) -> None:
        if group_size < 1:
            raise ValueError(f"train_group_size must be >= 1, got {group_size}")
        if group_size > 1:
            for i, row in enumerate(rows):
                if not row["neg"]:
                    raise ValueError(f"row {i} has no 'neg' items but train_group_size is {group_size}")
        self.rows, self.group_size, self.seed, self.epoch = rows, group_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = random.Random(hash((self.seed, self.epoch, i)))
        row = self.rows[i]
        k = self.group_size - 1
        negs = rng.sample(row["neg"], k) if len(row["neg"]) >= k else [rng.choice(row["neg"]) for _ in range(k)]
        return {"query": row["query"], "candidates": [rng.choice(row["pos"]), *negs]}


class VisualCollator:
    """Items → per-side ``{"text": batch | None, "image": batch | None, "order": rows}`` tensors."""

    def __init__(self, tokenizer: Any, *, num_image_tokens: int, image_size: int, text_max_len: int) -> None:
        self.tokenizer = tokenizer
        self.slots = num_image_tokens
        self.image_size = image_size
        self.text_max_len = text_max_len
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def side(self, items: list[Item]) -> dict[str, Any]:
        """One side (queries or candidates) as a text-only batch plus an image batch."""
        text_at = [i for i, it in enumerate(items) if it["image"] is None]
        image_at = [i for i, it in enumerate(items) if it["image"] is not None]
        out: dict[str, Any] = {"text": None, "image": None}
        if text_at:
            ids = tokenize(self.tokenizer, [items[i]["text"] for i in text_at], self.text_max_len).ids
            out["text"] = self._pad(ids)
        if image_at:
            ids = tokenize(self.tokenizer, [items[i]["text"] for i in image_at], self.text_max_len).ids
            batch = self._pad([image_sequence_ids(row, self.slots, self.pad_id) for row in ids])
            batch["pixels"] = torch.stack([preprocess(items[i]["image"], self.image_size) for i in image_at])
            out["image"] = batch
        positions = torch.tensor(text_at + image_at)
        out["order"] = torch.argsort(positions)  # rows of cat(text, image) back in item order
        return out

    def _pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        input_ids, mask = pad_ids(ids, self.pad_id)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        queries = [f["query"] for f in features]
        cands = [c for f in features for c in f["candidates"]]
        return {"queries": self.side(queries), "candidates": self.side(cands)}


def embed_side(model: Any, side: dict[str, Any]) -> torch.Tensor:
    """Embeddings of one collated side, in item order (text rows through the text path, image rows jointly)."""
    parts = []
    if side["text"] is not None:
        parts.append(model(side["text"]["input_ids"], side["text"]["attention_mask"]))
    if side["image"] is not None:
        img = side["image"]
        parts.append(model(img["input_ids"], img["attention_mask"], img["pixels"]))
    return torch.cat(parts)[side["order"].to(parts[0].device)]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (used by the benchmark and tests)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
