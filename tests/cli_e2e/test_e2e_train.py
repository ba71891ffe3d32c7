"""mine -> score -> finetune embedder -> eval / embed with the fine-tuned folder -> merge -> eval.

Each step is a fresh ``flagembed`` process that reads what the previous step wrote.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from e2e_helpers import find_json, name_only, read_corpus, read_queries

pytestmark = pytest.mark.slow

NEG = 3


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _doc_text(d):
    return f"{d['title']} {d['text']}".strip()


@pytest.fixture(scope="module")
def train_files(ws, tiny_cross_encoder):
    """train.jsonl (query + its first relevant abstract), pool.jsonl, and the teacher under models/ce."""
    import csv

    by_id = {d["_id"]: d for d in read_corpus(ws.cwd)}
    with open(ws.cwd / "scifact" / "qrels" / "train.tsv", encoding="utf-8") as f:
        first = {}
        for row in csv.DictReader(f, delimiter="\t"):
            first.setdefault(row["query-id"], row["corpus-id"])
    rows = [{"query": q["text"], "pos": [_doc_text(by_id[first[q["_id"]]])]} for q in read_queries(ws.cwd)]
    (ws.cwd / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pool = [{"text": _doc_text(d)} for d in by_id.values()]
    (ws.cwd / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")
    shutil.copytree(tiny_cross_encoder, ws.cwd / "models" / "ce", dirs_exist_ok=True)
    return rows, [p["text"] for p in pool]


@pytest.fixture(scope="module")
def mined(ws, train_files):
    ws.run("mine", "-m", ws.model, "-i", "train.jsonl", "-o", "train_hn.jsonl", "--candidate-pool", "pool.jsonl",
           "--range-for-sampling", "2-20", "--negative-number", str(NEG))  # fmt: skip
    return _jsonl(ws.cwd / "train_hn.jsonl")


@pytest.fixture(scope="module")
def scored(ws, mined):
    ws.run("score", "-r", "models/ce", "-i", "train_hn.jsonl", "-o", "train_kd.jsonl", "--batch-size", "8")
    return _jsonl(ws.cwd / "train_kd.jsonl")


@pytest.fixture(scope="module")
def finetuned(ws, scored):
    ws.run("finetune", "embedder", "-m", ws.model, "--train-data", "train_kd.jsonl", "--output", "ft",
           "--train_group_size", "2", "--query_max_len", "32", "--passage_max_len", "64",
           "--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "1e-4",
           "--knowledge_distillation", "true", "--save_steps", "2", "--logging_steps", "1",
           "--report_to", "none", "--disable_tqdm", "true", timeout=600)  # fmt: skip
    return ws.cwd / "ft"


def test_mine(mined, train_files):
    rows, pool = train_files
    assert [m["query"] for m in mined] == [r["query"] for r in rows]
    for m, r in zip(mined, rows):
        assert m["pos"] == r["pos"]
        assert len(m["neg"]) == NEG and len(set(m["neg"])) == NEG
        assert not set(m["neg"]) & set(m["pos"]) and m["query"] not in m["neg"]
        assert set(m["neg"]) <= set(pool)


def test_score_matches_python_reranker(scored, mined, ws):
    from flagembed import Reranker

    rr = Reranker(str(ws.cwd / "models" / "ce"), device="cpu")
    for s, m in zip(scored[:3], mined[:3]):
        assert s["neg"] == m["neg"] and len(s["pos_scores"]) == 1 and len(s["neg_scores"]) == NEG
        want = rr.compute_score([(m["query"], p) for p in m["pos"] + m["neg"]])
        np.testing.assert_allclose(s["pos_scores"] + s["neg_scores"], want, atol=1e-4)


def test_finetune_output(finetuned, ws):
    from safetensors.numpy import load_file

    assert (finetuned / "modules.json").is_file() and (finetuned / "1_Pooling" / "config.json").is_file()
    history = json.loads((finetuned / "loss_history.json").read_text(encoding="utf-8"))
    assert history, "loss_history.json is empty after 2 steps with --logging_steps 1"
    assert list(finetuned.glob("checkpoint-*")), "no checkpoint-* folder with --save_steps 2"
    base = load_file(str(ws.model_dir / "model.safetensors"))
    new = load_file(str(finetuned / "model.safetensors"))
    key = next(k for k in new if k.endswith("encoder.layer.0.attention.self.query.weight"))
    base_key = next(k for k in base if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not np.array_equal(new[key], base[base_key]), "fine-tuning did not change the weights"
    # the saved model keeps the base model's max length, not the training truncation (64 tokens)
    cfg = json.loads((finetuned / "sentence_bert_config.json").read_text(encoding="utf-8"))
    base_cfg = json.loads((ws.model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    assert cfg["max_seq_length"] == base_cfg["max_seq_length"]


def test_finetuned_embed_and_sentence_transformers(finetuned, ws, local_embedder):
    name_only(ws)
    from sentence_transformers import SentenceTransformer

    from flagembed import Embedder

    texts = ["Statins reduce LDL cholesterol.", "Vitamin D and bone density. " * 30]
    (ws.cwd / "ft_texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    ws.run("embed", "-m", "ft", "-i", "ft_texts.txt", "-o", "ft.npy")
    got = np.load(ws.cwd / "ft.npy")
    mine = Embedder(str(finetuned), device="cpu").encode(texts)
    np.testing.assert_allclose(got, mine, atol=1e-5)
    assert np.abs(got - local_embedder.encode(texts)).max() > 1e-4, "fine-tuned vectors equal the base model's"
    st = SentenceTransformer(str(finetuned), device="cpu").encode(texts, normalize_embeddings=False)
    np.testing.assert_allclose(st, mine, atol=1e-5)


def test_finetuned_eval(finetuned, ws):
    name_only(ws)
    ws.run("eval", "retrieval", "-m", "ft", "-d", "scifact", "--split", "train", "-o", "ft-eval", "--k-values", "1,10")
    (result,) = find_json(ws.cwd / "ft-eval")
    assert 0.0 < json.loads(result.read_text(encoding="utf-8"))["metrics"]["ndcg_at_10"] <= 1.0


@pytest.fixture(scope="module")
def merged(finetuned, ws):
    ws.run("merge", "--models", "ft", ws.model, "--weights", "0.5", "0.5", "--type", "encoder", "--out", "merged")
    return ws.cwd / "merged"


def test_merge_is_the_average_without_checkpoints(merged, finetuned, ws):
    from safetensors.numpy import load_file

    assert not list(merged.glob("checkpoint-*")), "merge copied the fine-tune's checkpoint folders"
    a, b = load_file(str(finetuned / "model.safetensors")), load_file(str(ws.model_dir / "model.safetensors"))
    m = load_file(str(merged / "model.safetensors"))
    key = next(k for k in m if k.endswith("encoder.layer.0.attention.self.query.weight"))
    bkey = next(k for k in b if k.endswith("encoder.layer.0.attention.self.query.weight"))
    np.testing.assert_allclose(m[key], 0.5 * a[key] + 0.5 * b[bkey], atol=1e-6)
    assert (merged / "modules.json").is_file()


def test_merged_eval(merged, ws):
    ws.run("eval", "retrieval", "-m", "merged", "-d", "scifact", "--split", "train", "-o", "merged-eval",
           "--k-values", "1,10")  # fmt: skip
    (result,) = find_json(ws.cwd / "merged-eval")
    assert 0.0 < json.loads(result.read_text(encoding="utf-8"))["metrics"]["ndcg_at_10"] <= 1.0
