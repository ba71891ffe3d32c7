"""Write the sentence-transformers module files beside a saved HF model folder.

The folder then loads with the same pooling and normalization in flagembed (which reads these files),
sentence-transformers and the reference FlagEmbedding (plain HF weights + tokenizer).
"""

from __future__ import annotations

import os
from pathlib import Path

from flagembed._io import atomic_write, save_json

_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "last_token": "pooling_mode_lasttoken",
}


def write_sentence_transformers_config(
    folder: str | os.PathLike[str],
    *,
    pooling: str,
    normalize: bool,
    dim: int,
    max_seq_length: int,
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
) -> None:
    """Write ``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json`` and ``2_Normalize``.

    Raises:
        ValueError: an unknown pooling method.
    """
    if pooling not in _POOLING_KEYS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(_POOLING_KEYS)}")
    root = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (root / "2_Normalize").mkdir(parents=True, exist_ok=True)
    save_json(root / "modules.json", modules)
    pool_cfg: dict[str, object] = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    pool_cfg[_POOLING_KEYS[pooling]] = True
    save_json(root / "1_Pooling" / "config.json", pool_cfg)
    save_json(root / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    prompts = {"query": query_prompt or "", "document": passage_prompt or ""}
    save_json(
        root / "config_sentence_transformers.json",
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine" if normalize else "dot"},
    )
    readme = root / "README.md"
    if not readme.exists():
        with atomic_write(readme, "w") as f:
            f.write(
                "---\nlibrary_name: sentence-transformers\ntags: [flagembed, sentence-similarity]\n---\n\n"
                f"Fine-tuned with flagembed. Pooling: {pooling}; normalized: {normalize}.\n"
            )
