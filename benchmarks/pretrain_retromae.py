"""RetroMAE continued pre-training of all-MiniLM-L6-v2 on SciFact corpus text, then contrastive fine-tuning.

Held-out nDCG@10 (finetune_scifact.py's split: 709 train / 100 dev claims, seed 0) of: the base model,
base + fine-tuning, RetroMAE only, RetroMAE + the same fine-tuning. Fine-tuning data = finetune_m3.py's
mined hard negatives (same pool and length; created if missing). Pooling is MiniLM's mean pooling
throughout (the encoder_model/ folder has no sentence-transformers config, so it is passed explicitly).

    nice -n 5 .venv/bin/python benchmarks/pretrain_retromae.py [--pool-size 1000] [--pretrain-steps 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, add_bf16_option, contrastive_finetune, print_table, training_bf16, write_json  # noqa: E402
from finetune_m3 import corpus_pool, eval_pool, mined_examples  # noqa: E402
from finetune_scifact import load_split, ndcg_at_10  # noqa: E402


def score(model: str, pool: list[str], corpus: dict, queries: dict, dev: list[str], qrels: dict, length: int) -> float:
    from flagembed.inference import Embedder

    emb = Embedder(model, device="cpu", pooling="mean", normalize=True, max_length=length, batch_size=64)
    vecs = emb.encode_corpus([corpus[d] for d in pool])
    return ndcg_at_10(emb, pool, vecs, queries, dev, qrels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(ROOT / "out" / "pretrain_retromae"))
    ap.add_argument("--mined-dir", default=str(ROOT / "out" / "finetune_m3"))
    ap.add_argument("--pool-size", type=int, default=0, help="docs searched, mined and pre-trained on (0: all)")
    ap.add_argument("--eval-pool-size", type=int, default=0, help="docs searched in evaluation (0: the pool)")
    ap.add_argument("--skip", default="", help="comma-separated rows to skip, e.g. 'retromae-only'")
    ap.add_argument("--max-length", type=int, default=64, help="passage tokens in fine-tuning")
    ap.add_argument("--eval-max-length", type=int, default=128)
    ap.add_argument("--pretrain-length", type=int, default=128)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--pretrain-batch", type=int, default=8)
    ap.add_argument("--pretrain-lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=88)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--temperature", type=float, default=0.05)
    add_bf16_option(ap)
    args = ap.parse_args()
    args.bf16 = training_bf16(args.bf16)

    from transformers import TrainingArguments

    from flagembed.train.retromae import RetroMAEArguments, pretrain_retromae

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, dev, corpus, queries, qrels = load_split()
    pool = corpus_pool(dev, train, corpus, qrels, args.pool_size)
    searched = eval_pool(pool, dev, qrels, args.eval_pool_size)
    times: dict[str, float] = {}
    data_file = Path()  # set after pre-training (finetune_m3.py may be mining the same file meanwhile)

    def finetune(start: str, name: str) -> str:
        model_dir = out / name
        shutil.rmtree(model_dir, ignore_errors=True)
        t = time.perf_counter()
        contrastive_finetune(
            start, data_file, model_dir, group_size=args.group_size, passage_max_len=args.max_length,
            warmup_steps=max(1, args.max_steps // 10), learning_rate=args.lr, max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size, temperature=args.temperature,
            sentence_pooling_method="mean", loss_plot=False, bf16=args.bf16,
        )  # fmt: skip
        times[f"finetune_{name}_s"] = time.perf_counter() - t
        return str(model_dir)

    # RetroMAE on the corpus text of the pool (what the retriever will search)
    text_file = out / f"corpus_text_{len(pool)}.jsonl"
    with open(text_file, "w", encoding="utf-8") as f:
        for d in pool:
            f.write(json.dumps({"text": corpus[d]}) + "\n")
    pre_dir = out / "retromae"
    shutil.rmtree(pre_dir, ignore_errors=True)
    t = time.perf_counter()
    pre = pretrain_retromae(
        RetroMAEArguments(
            model_name_or_path="all-MiniLM-L6-v2", train_data=[str(text_file)], max_seq_length=args.pretrain_length
        ),
        TrainingArguments(
            output_dir=str(pre_dir), max_steps=args.pretrain_steps, per_device_train_batch_size=args.pretrain_batch,
            learning_rate=args.pretrain_lr, warmup_steps=max(1, args.pretrain_steps // 10), logging_steps=5,
            save_strategy="no", report_to="none", use_cpu=True, seed=42, disable_tqdm=True, bf16=args.bf16,
        ),
    )  # fmt: skip
    times["pretrain_s"] = time.perf_counter() - t
    print(f"retromae: {pre.global_step} steps, loss {pre.loss_history[:1]} -> {pre.loss_history[-1:]}", flush=True)

    mined_dir = Path(args.mined_dir)
    mined_dir.mkdir(parents=True, exist_ok=True)
    data_file = mined_examples(mined_dir, train, pool, corpus, queries, qrels, args.max_length)
    rows, results = [], {}
    plan = [
        ("all-MiniLM-L6-v2 (base)", "all-MiniLM-L6-v2"),
        ("base + fine-tune", finetune("all-MiniLM-L6-v2", "ft")),
        *([] if "retromae-only" in args.skip else [("RetroMAE only", pre.encoder_dir)]),
        ("RetroMAE + fine-tune", finetune(pre.encoder_dir, "retromae_ft")),
    ]
    for name, model in plan:
        t = time.perf_counter()
        results[name] = score(model, searched, corpus, queries, dev, qrels, args.eval_max_length)
        times[f"eval_{name}_s"] = time.perf_counter() - t
        rows.append([name, f"{results[name]:.4f}"])
        print(rows[-1], flush=True)
    print_table(["model", "dev nDCG@10"], rows)
    print(f"pool {len(pool)} docs (pre-training text, mining), searched {len(searched)}, {len(dev)} claims")
    print(f"timings: {times}")
    path = write_json(
        "pretrain_retromae",
        {
            "split": {"train": len(train), "dev": len(dev), "pool": len(pool), "searched": len(searched), "seed": 0},
            "config": vars(args),
            "ndcg_at_10": results,
            "pretrain": {"steps": pre.global_step, "loss": pre.train_loss, "history": pre.loss_history},
            "timings_s": times,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
