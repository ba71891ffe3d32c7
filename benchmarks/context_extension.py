"""Proof that context extension works (issue 16 acceptance), on CPU with a small Llama trained here.

1. A byte-level BPE tokenizer (digits split) and a small Llama are trained at context 256 on SciFact abstracts
   (../shared/data/scifact-train/corpus.jsonl, packed LM rows) mixed with 256-token passkey conversations.
2. "rope-only": the same weights with the RoPE base raised (no training).
3. "extended": the recipe of ``flagembed.longctx.extend`` (RoPE base raised + LoRA on q/k/v/o + trained
   embeddings, chunked CE, assistant-only labels, length-grouped rows) on 1,024-token inputs, merged.
Each model is scored with the harness: sliding-window perplexity at 256 and 1,024 on held-out SciFact text
(the first L tokens of long concatenations), and passkey accuracy at 256 and 1,024.
Targets: extended ppl@1024 <= 1.1 x its ppl@256, >= 2x lower than the original's ppl@1024, and its ppl@256
within 5 % of the original's.

    nice -n 5 .venv/bin/python benchmarks/context_extension.py [--quick] [--pretrain-steps N] [--extend-steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, scifact_docs, write_json  # noqa: E402

SIMPLE_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% else %}"
               "{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from flagembed.longctx.harness import prompts as P

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    extra = [P.DESCRIPTION + P.NOISE * 3 + P.PASSKEY_INFO.format(key=12345) + P.PASSKEY_QUESTION] * 50
    tok.train_from_iterator(texts + extra, trainer)
    bos = [("<s>", tok.token_to_id("<s>"))]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=bos)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  model_max_length=1 << 20)
    out.chat_template = SIMPLE_CHAT
    return out


def long_texts(tokenizer, docs: list[str], min_tokens: int) -> list[str]:
    """Concatenate abstracts (blank-line separated) into texts of at least ``min_tokens`` tokens."""
    out, cur, n = [], [], 0
    for d in docs:
        cur.append(d)
        n += len(tokenizer(d, add_special_tokens=False)["input_ids"]) + 1
        if n >= min_tokens:
            out.append("\n\n".join(cur))
            cur, n = [], 0
    return out


def row_mean_loss(model, inputs: dict) -> torch.Tensor:
    """Next-token CE averaged per row, then over rows: a passkey row (a few answer tokens) weighs as much as a
    256-token LM row; the token mean HF computes gives the answers under 1 % of the loss."""
    import torch.nn.functional as F

    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1].float()
    labels = inputs["labels"][:, 1:]
    tok = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    mask = labels.ne(-100)
    return ((tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def pretrain(model, tokenizer, docs: list[str], steps: int, batch: int, lr: float, seed: int,
             row_weighted: bool = False) -> list[float]:
    """LM rows (packed at 256) and 256-token passkey conversations, half and half in every batch."""
    from flagembed.longctx.data import PadCollator, build_rows, pack_texts
    from flagembed.longctx.synthetic import synthetic_rows

    g = torch.Generator().manual_seed(seed)
    lm_rows = pack_texts(tokenizer, docs, 256)
    n_pk = min(steps * (batch // 2), 1500)  # cycled when more steps are asked for
    pk_rows, _ = build_rows(tokenizer, synthetic_rows(tokenizer, n_pk, [128, 160, 192, 216, 236], seed=seed), 256)
    collate = PadCollator(tokenizer.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(
        math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    for step in range(steps):
        lm_idx = torch.randint(len(lm_rows), (batch - batch // 2,), generator=g).tolist()
        pk = [pk_rows[(step * (batch // 2) + j) % len(pk_rows)] for j in range(batch // 2)]
        inputs = collate([lm_rows[i] for i in lm_idx] + pk)
        loss = row_mean_loss(model, inputs) if row_weighted else model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def evaluate(model, tokenizer, texts: list[str], samples: int) -> dict:
    from flagembed.longctx.harness import eval_passkey, perplexity_by_length

    model.eval()
    ppl = perplexity_by_length(model, tokenizer, texts, [256, 1024], stride=0)
    pk = eval_passkey(model, tokenizer, [256, 1024], [0, 25, 50, 75, 100], samples=samples, max_new_tokens=10,
                      seed=7)
    return {"ppl_256": ppl["ppl"][0], "ppl_1024": ppl["ppl"][1], "passkey_256": pk["by_length"]["256"],
            "passkey_1024": pk["by_length"]["1024"], "ppl_docs": ppl["runs"][1]["documents"],
            "passkey_matrix": pk["matrix"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Tiny sizes, to check the script runs.")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--extend-steps", type=int, default=None)
    ap.add_argument("--rope-theta", type=float, default=160000.0, help="Extended RoPE base (original 10,000).")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--pretrain-batch", type=int, default=16)
    ap.add_argument("--extend-batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3, help="Pre-training learning rate.")
    ap.add_argument("--samples", type=int, default=None, help="Passkey prompts per (length, depth) cell.")
    ap.add_argument("--test-texts", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--row-weighted", action=argparse.BooleanOptionalAction, default=False,
                    help="pre-training loss: mean per row, then over rows (passkey rows count as much as LM rows; "
                         "default: HF's token mean)")
    ap.add_argument("--out", default=str(ROOT / "out" / "context_extension"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, LlamaConfig

    from flagembed._compat import IS_TRANSFORMERS_5
    from flagembed.longctx import ExtendConfig, extend, load_causal_lm
    from flagembed.longctx.data import build_rows
    from flagembed.longctx.synthetic import synthetic_rows

    quick = args.quick
    pre_steps = args.pretrain_steps or (30 if quick else 1200)
    ext_steps = args.extend_steps or (6 if quick else 200)
    n_docs = 600 if quick else 5183
    samples = args.samples or (1 if quick else 4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    docs = scifact_docs(n_docs)
    test_docs, train_docs = docs[:300], docs[300:]
    tok = train_tokenizer(train_docs, args.vocab)
    test_texts = long_texts(tok, test_docs, 1100)[: args.test_texts or (8 if quick else 24)]
    heads = args.heads
    kw = dict(vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=heads,
              num_key_value_heads=heads, intermediate_size=3 * args.hidden, max_position_embeddings=256,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              tie_word_embeddings=False)
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}} if IS_TRANSFORMERS_5 else {
        "rope_theta": 10000.0}
    model = AutoModelForCausalLM.from_config(LlamaConfig(**kw, **rope))
    n_params = sum(p.numel() for p in model.parameters())
    losses = pretrain(model, tok, train_docs, pre_steps, args.pretrain_batch, args.lr, seed=0,
                      row_weighted=args.row_weighted)
    t_pre = time.perf_counter() - t0
    print(f"pretrained {pre_steps} steps in {t_pre:.0f} s, last loss {sum(losses[-20:]) / 20:.3f}", flush=True)
    orig_dir = out / "original"
    model.save_pretrained(orig_dir)
    tok.save_pretrained(orig_dir)
    results = {"original": evaluate(model, tok, test_texts, samples)}
    print(f"original {results['original']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rope_model, _ = load_causal_lm(orig_dir, rope={"theta": args.rope_theta})
    results["rope-only"] = evaluate(rope_model, tok, test_texts, samples)
    # the extension data: 1,024-token SciFact texts and passkey conversations of 256..1,024 tokens
    long_train = long_texts(tok, train_docs, 1030)
    n_rows = ext_steps * args.extend_batch // 2 + 1
    pk = synthetic_rows(tok, n_rows, [256, 512, 768, 1000], seed=1)
    rows = [{"text": t} for t in long_train[:n_rows]] + pk
    data = out / "extend_data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    n_examples = len(build_rows(tok, rows, 1024)[0])
    t1 = time.perf_counter()
    summary = extend(ExtendConfig(
        model=str(orig_dir), data=[str(data)], output_dir=str(out / "run"), max_length=1024,
        rope_theta=args.rope_theta, lora_rank=16, lora_alpha=32, learning_rate=2e-3, max_steps=ext_steps,
        batch_size=args.extend_batch, warmup_ratio=0.05, chunk_size=1024, gradient_checkpointing=False,
        logging_steps=10, merge=True, extra={"save_strategy": "no"},
    ))
    t_ext = time.perf_counter() - t1
    merged = AutoModelForCausalLM.from_pretrained(summary["merged"])
    results["extended"] = evaluate(merged, tok, test_texts, samples)
    o, e = results["original"], results["extended"]
    targets = {
        "extended ppl@1024 <= 1.1 x ppl@256": e["ppl_1024"] <= 1.1 * e["ppl_256"],
        "extended ppl@1024 >= 2x lower than original": e["ppl_1024"] * 2 <= o["ppl_1024"],
        "extended ppl@256 within 5% of original": abs(e["ppl_256"] / o["ppl_256"] - 1) <= 0.05,
    }
    print_table(["model", "ppl@256", "ppl@1024", "passkey@256", "passkey@1024"],
                [[name, f"{r['ppl_256']:.2f}", f"{r['ppl_1024']:.2f}", f"{r['passkey_256']:.2f}",
                  f"{r['passkey_1024']:.2f}"] for name, r in results.items()])
    print()
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    sizes = {"params": n_params, "hidden": args.hidden, "layers": args.layers, "vocab": len(tok),
             "pretrain_steps": pre_steps, "pretrain_batch": args.pretrain_batch, "extend_steps": ext_steps,
             "extend_batch": args.extend_batch, "heads": heads, "pretrain_lr": args.lr,
             "extend_examples": n_examples, "rope_theta": args.rope_theta, "test_texts": len(test_texts),
             "passkey_samples_per_cell": samples,
             "row_weighted_pretrain_loss": args.row_weighted}
    print(f"\nsizes {sizes}\npretrain {t_pre:.0f} s (final loss {sum(losses[-20:]) / 20:.3f}), extend {t_ext:.0f} s, "
          f"trainable {summary['trainable_parameters']}, total {time.perf_counter() - t0:.0f} s")
    path = write_json("context_extension_quick" if quick else "context_extension", {
        "sizes": sizes, "results": results, "targets": targets, "pretrain_seconds": t_pre,
        "extend_seconds": t_ext, "extend_summary": summary, "pretrain_final_loss": sum(losses[-20:]) / 20})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
