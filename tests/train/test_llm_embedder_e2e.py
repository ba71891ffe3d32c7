"""LLM-Embedder end to end from the CLI: LM scoring on a SciFact-train slice, then distillation into a student."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_decoders import llm_tokenizer
from typer.testing import CliRunner


def _causal_lm(path: Path) -> Path:
    """A tiny Qwen2 causal LM with a byte-level tokenizer (every SciFact word has tokens); large random weights
    make its answer likelihood depend clearly on the key, so the teacher ranks keys rather than tying them."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    tok = llm_tokenizer("qwen2", padding_side="right")
    cfg = AutoConfig.for_model(
        "qwen2", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.5,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _slice(root: Path, out: Path, n: int = 16, n_neg: int = 3) -> Path:
    docs = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs[d["_id"]] = d
            if len(docs) >= 3000:
                break
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(root / "queries.jsonl", encoding="utf-8"))}
    rng = random.Random(0)
    ids = list(docs)

    def text(d: dict) -> str:
        return " ".join(f"{d['title']} {d['text']}".split()[:40])

    rows = []
    for line in list(open(root / "qrels" / "train.tsv", encoding="utf-8"))[1:]:
        qid, did, _ = line.split("\t")
        if did in docs and qid in queries and len(rows) < n:
            negs = [docs[i] for i in rng.sample(ids, n_neg)]
            rows.append({"query": queries[qid], "pos": [text(docs[did])], "neg": [text(d) for d in negs],
                         "answers": [docs[did]["title"]], "task": "chat"})  # fmt: skip
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _agreement(model: str, records: list[dict]) -> float:
    """Mean in-group rank correlation between the student's scores and the teacher's."""
    from flagembed import Embedder

    emb = Embedder(model, task="chat", device="cpu")
    out = []
    for r in records:
        q = emb.encode_queries([r["query"]])
        k = emb.encode_corpus(r["pos"] + r["neg"])
        out.append(_spearman((q @ k.T)[0], np.asarray(r["teacher_scores"])))
    return float(np.mean(out))


@pytest.mark.slow
def test_lm_scoring_then_distillation_moves_the_student_toward_the_teacher(shared_data, minilm_path, tmp_path):
    from flagembed.cli import app

    root = shared_data / "scifact-train"
    if not (root / "qrels" / "train.tsv").is_file():
        pytest.skip("scifact-train qrels are absent")
    data = _slice(root, tmp_path / "train.jsonl")
    lm = _causal_lm(tmp_path / "lm")
    runner = CliRunner()
    scored = tmp_path / "scored.jsonl"
    res = runner.invoke(app, ["score", "--lm", str(lm), "-i", str(data), "-o", str(scored), "--key-max-tokens", "64"])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in scored.read_text().splitlines()]
    assert len(records) == 16 and all(len(r["teacher_scores"]) == 4 for r in records)
    assert len({round(s, 4) for r in records for s in r["teacher_scores"]}) > 32  # keys do change the LM's answer NLL
    # student: the real small model (a random tiny BERT gives every instruction-prefixed key nearly the same vector)
    out = tmp_path / "student"
    res = runner.invoke(app, [
        "finetune", "embedder", "--model", str(minilm_path), "--train-data", str(scored), "--output", str(out),
        "--loss_type", "llm_embedder", "--use_train_config", "--task_instructions", "--knowledge_distillation",
        "--same_dataset_within_batch", "--train_group_size", "4", "--per_device_train_batch_size", "4",
        "--temperature", "0.01", "--learning_rate", "1e-4", "--max_steps", "4", "--query_max_len", "64",
        "--passage_max_len", "128", "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "4",
        "--seed", "1", "--loss_plot", "False", "--disable_tqdm", "True",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    before, after = _agreement(str(minilm_path), records), _agreement(str(out), records)
    assert before < after, (before, after)
