"""Hard-negative mining: never a positive or the query, ranks from the range, top-up, chunking-invariant."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from flagembed.train.mining import candidate_corpus, mine_hard_negatives, parse_range


class HashEmbedder:
    """Deterministic unit vectors per text; texts sharing a first word land close together."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def _vec(self, text: str) -> np.ndarray:
        head = np.random.default_rng(zlib.crc32(text.split()[0].encode())).normal(size=self.dim)
        tail = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim)
        v = head + 0.3 * tail
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode_corpus(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts])

    def encode_queries(self, texts: list[str], **kwargs: object) -> np.ndarray:
        self.calls.append(len(texts))
        return np.stack([self._vec(t) for t in texts])


def _examples() -> list[dict]:
    topics = ["cell", "gene", "brain", "virus", "water"]
    out = []
    for i in range(12):
        t = topics[i % len(topics)]
        out.append({"query": f"{t} query {i}", "pos": [f"{t} positive {i}"], "neg": [f"{t} other {i}"], "id": i})
    return out


def test_never_returns_a_positive_or_the_query():
    examples = _examples()
    pool = candidate_corpus(examples) + [ex["query"] for ex in examples] + [f"cell filler {k}" for k in range(40)]
    mined, stats = mine_hard_negatives(
        HashEmbedder(), examples, candidate_pool=pool, range_for_sampling="0-30", negative_number=6, seed=3
    )
    for ex, rec in zip(examples, mined):
        assert len(rec["neg"]) == 6 and len(set(rec["neg"])) == 6
        assert not set(rec["neg"]) & set(ex["pos"])
        assert ex["query"] not in rec["neg"]
        assert rec["id"] == ex["id"] and rec["pos"] == ex["pos"]  # other fields kept
    assert stats.dropped_positives > 0 and stats.dropped_query_copies > 0  # both actually came up in the ranking


def test_negatives_come_from_the_rank_range():
    examples = _examples()
    emb = HashEmbedder()
    corpus = candidate_corpus(examples)
    lo, hi = 3, 9
    mined, _ = mine_hard_negatives(emb, examples, range_for_sampling=(lo, hi), negative_number=4, seed=0)
    cvec = emb.encode_corpus(corpus)
    for ex, rec in zip(examples, mined):
        order = np.argsort(-(cvec @ emb._vec(ex["query"])), kind="stable")
        allowed = {corpus[j] for j in order[lo:hi]} - set(ex["pos"])
        assert set(rec["neg"]) <= allowed


def test_short_lists_are_topped_up_randomly():
    examples = _examples()
    mined, stats = mine_hard_negatives(HashEmbedder(), examples, range_for_sampling="20-23", negative_number=5)
    assert all(len(r["neg"]) == 5 for r in mined)
    assert stats.topped_up_queries == len(examples) and stats.random_negatives > 0
    for ex, rec in zip(examples, mined):
        assert not set(rec["neg"]) & set(ex["pos"])


def test_chunked_search_gives_the_same_result():
    examples = _examples()
    emb = HashEmbedder()
    whole, _ = mine_hard_negatives(emb, examples, range_for_sampling="1-10", negative_number=3, chunk_size=100)
    parts, _ = mine_hard_negatives(emb, examples, range_for_sampling="1-10", negative_number=3, chunk_size=5)
    assert whole == parts
    assert emb.calls[-3:] == [5, 5, 2]  # queries encoded chunk by chunk


def test_argument_errors():
    with pytest.raises(ValueError, match="10-210"):
        parse_range("ten")
    with pytest.raises(ValueError, match="start < end"):
        parse_range("5-5")
    with pytest.raises(ValueError, match="negative_number"):
        mine_hard_negatives(HashEmbedder(), _examples(), negative_number=0)
    with pytest.raises(ValueError, match=r"examples\[1\]"):
        mine_hard_negatives(HashEmbedder(), [{"query": "a", "pos": ["b"]}, {"pos": ["c"]}])


@pytest.mark.slow
def test_real_model_mining_on_scifact(minilm_path, shared_data):
    """Real embedder + data: mined negatives are relevant-looking but never positives."""
    import json

    from flagembed.inference import Embedder

    root = shared_data / "scifact-train"
    corpus = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line, _ in zip(f, range(300)):
            d = json.loads(line)
            corpus[d["_id"]] = f"{d['title']} {d['text']}".strip()
    docs = list(corpus.values())
    examples = [{"query": docs[i][:80], "pos": [docs[i]]} for i in range(0, 40, 4)]
    emb = Embedder(minilm_path, device="cpu", max_length=64)
    mined, stats = mine_hard_negatives(emb, examples, candidate_pool=docs, range_for_sampling="0-20", negative_number=5)
    assert stats.dropped_positives == len(examples)  # each positive ranked in 0-20 and was removed
    for ex, rec in zip(examples, mined):
        assert ex["pos"][0] not in rec["neg"] and len(rec["neg"]) == 5


def test_progress_bar_over_queries(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    import sys

    examples = [{"query": f"q{i % 7} {i}", "pos": [f"q{i % 7} pos {i}"], "neg": [f"n{i}"]} for i in range(1200)]
    mine_hard_negatives(HashEmbedder(), examples, range_for_sampling="0-5", negative_number=2, show_progress=False)
    assert "Mining" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # auto: on for a terminal and a large job
    mine_hard_negatives(HashEmbedder(), examples, range_for_sampling="0-5", negative_number=2, chunk_size=500)
    err = capsys.readouterr().err
    assert "Mining" in err and "/1200" in err
