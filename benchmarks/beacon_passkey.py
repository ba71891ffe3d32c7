"""Does beacon memory carry information? A tiny Llama learns passkeys, first within one window, then through beacons.

Stage 1 trains a small random Llama (all weights) on passkey prompts that fit one window W. Stage 2 freezes it
and trains only the beacon parameters on prompts 8x the window, the key always in an earlier window than the
question. Then, per prompt length: passkey accuracy of the beacon model, of the same base reading the prompt
window by window without memory (it sees only the question's window), and of the base with full attention
over the whole prompt (positions beyond its training length); and the KV memory of each.

Token task: [bos] noise... KEY d1..dk noise... QUERY -> d1..dk eos (digits and noise are random tokens).
Beacons are appended (``--pos append``, the default here): the question's window then holds raw tokens only,
as in the training recipe's last window and in the base's own training; with ``interleave`` the partial last
window carries beacons the base never saw and that no loss made harmless (the answer is the only target).

    nice -n 5 python benchmarks/beacon_passkey.py                # the measured run (r = 2; ~15 min, 1 thread)
    nice -n 5 python benchmarks/beacon_passkey.py --ratio 4 --param qkvo --name beacon_passkey_r4
    nice -n 5 python benchmarks/beacon_passkey.py --base-steps 100 --beacon-steps 20 --eval 8   # smoke
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table, write_json  # noqa: E402

from flagembed.longctx.beacon import BeaconModel, BeaconSettings, freeze_base  # noqa: E402

PAD, BOS, EOS, KEY, QUERY = 0, 1, 2, 3, 4
DIGIT0, N_DIGITS = 5, 10
NOISE0 = DIGIT0 + N_DIGITS
VOCAB = 64


def build_model(layers: int, hidden: int, seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=layers,
        intermediate_size=hidden * 2,
        max_position_embeddings=4096,
        eos_token_id=EOS,
        bos_token_id=BOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def make_batch(
    g: torch.Generator, batch: int, length: int, key_len: int, key_before: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences of exactly ``length`` tokens (prompt + answer + eos), labels on the answer, and the keys.

    The key starts at 1..(key_before - key_len); None means anywhere before the question."""
    answer = key_len + 1
    prompt_len = length - answer
    q_at = prompt_len - 1
    ids = torch.randint(NOISE0, VOCAB, (batch, length), generator=g)
    keys = torch.randint(DIGIT0, DIGIT0 + N_DIGITS, (batch, key_len), generator=g)
    limit = (q_at - key_len - 1) if key_before is None else min(key_before, q_at) - key_len - 1
    starts = torch.randint(1, max(limit, 1) + 1, (batch,), generator=g)
    ids[:, 0] = BOS
    for b in range(batch):
        s = int(starts[b])
        ids[b, s] = KEY
        ids[b, s + 1 : s + 1 + key_len] = keys[b]
    ids[:, q_at] = QUERY
    ids[:, prompt_len : prompt_len + key_len] = keys
    ids[:, -1] = EOS
    labels = torch.full_like(ids, -100)
    labels[:, prompt_len:] = ids[:, prompt_len:]
    return ids, labels, keys


def train_base(model, args, g) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=args.base_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.base_lr, total_steps=args.base_steps, pct_start=0.1)
    model.train()
    losses = []
    for step in range(args.base_steps):
        length = int(torch.randint(args.key_len + 6, args.window + 1, (1,), generator=g))
        ids, labels, _ = make_batch(g, args.batch, length, args.key_len, None)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), opt.zero_grad(), sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % max(1, args.base_steps // 10) == 0:
            print(f"  base step {step + 1}: loss {sum(losses[-50:]) / len(losses[-50:]):.3f}", flush=True)
    return losses


def train_beacon(beacon: BeaconModel, args, g) -> list[float]:
    freeze_base(beacon.model)
    params = [p for p in beacon.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.beacon_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.beacon_lr, total_steps=args.beacon_steps, pct_start=0.1)
    beacon.train()
    losses = []
    length = args.window * args.train_mult
    for step in range(args.beacon_steps):
        ids, labels, _ = make_batch(g, args.beacon_batch, length, args.key_len, length - args.window)
        loss = beacon(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), opt.zero_grad(), sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % max(1, args.beacon_steps // 10) == 0:
            print(f"  beacon step {step + 1}: loss {sum(losses[-20:]) / len(losses[-20:]):.3f}", flush=True)
    beacon.eval()
    return losses


@torch.no_grad()
def greedy(model, ids: torch.Tensor, k: int) -> torch.Tensor:
    """k greedy tokens of a plain HF model (full attention over ``ids``)."""
    out = model.generate(input_ids=ids, max_new_tokens=k, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    return out[:, ids.shape[1] :]


def kv_bytes(model, n_tokens: int) -> int:
    c = model.config
    hd = c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * hd * 4 * n_tokens


@torch.no_grad()
def evaluate(base, beacon: BeaconModel, args, g) -> list[dict]:
    rows = []
    base.eval()
    k = args.key_len
    for mult in args.lengths:
        length = args.window * mult
        ids, _, keys = make_batch(g, args.eval, length, k, length - args.window)
        prompt = ids[:, : length - k - 1]
        got_beacon = beacon.generate(input_ids=prompt, max_new_tokens=k, eos_token_id=[])[:, prompt.shape[1] :]
        mem_bytes = beacon.memory.nbytes() // args.eval  # per sequence, after prompt + k - 1 decode steps
        mem_entries = sum(beacon.memory.sizes())
        last = (prompt.shape[1] // args.window) * args.window
        got_window = greedy(base, prompt[:, last:], k)  # window by window without memory: only this window
        got_full = greedy(base, prompt, k)
        acc = {
            name: float((got == keys).all(dim=1).float().mean())
            for name, got in (("beacon", got_beacon), ("window_no_memory", got_window), ("full_attention", got_full))
        }
        rows.append(
            {
                "length": prompt.shape[1],
                "x_window": mult,
                **acc,
                "beacon_kv_entries": mem_entries,
                "beacon_kv_bytes": mem_bytes,
                "window_kv_entries": prompt.shape[1] - last + k,
                "full_kv_entries": prompt.shape[1] + k,
                "full_kv_bytes": kv_bytes(base, prompt.shape[1] + k),
            }
        )
        print(f"  length {prompt.shape[1]} (x{mult}): {acc}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--ratio", type=int, default=2)
    ap.add_argument("--param", default="qkv", help="projections with beacon copies, e.g. qkv or qkvo")
    ap.add_argument("--pos", default="append", choices=["append", "interleave"], help="beacon placement")
    ap.add_argument("--key-len", type=int, default=3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--base-steps", type=int, default=1500)
    ap.add_argument("--base-lr", type=float, default=3e-3)
    ap.add_argument("--beacon-batch", type=int, default=4)
    ap.add_argument("--beacon-steps", type=int, default=2500)
    ap.add_argument("--beacon-lr", type=float, default=5e-3)
    ap.add_argument("--train-mult", type=int, default=8, help="beacon training prompts: this many windows")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4, 8], help="eval lengths in windows")
    ap.add_argument("--eval", type=int, default=50, help="prompts per length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="beacon_passkey", help="bench_results/<name>.json")
    ap.add_argument("--base-cache", type=Path, default=None, help="reuse (or save) the stage-1 base in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    base = build_model(args.layers, args.hidden, args.seed)
    print(f"stage 1: base ({sum(p.numel() for p in base.parameters()):,} params) on prompts <= {args.window} tokens")
    if args.base_cache and (args.base_cache / "config.json").is_file():
        from transformers import LlamaForCausalLM

        base, base_losses = LlamaForCausalLM.from_pretrained(args.base_cache), [float("nan")] * 50
        print(f"  loaded the trained base from {args.base_cache}")
    else:
        base_losses = train_base(base, args, g)
        if args.base_cache:
            base.save_pretrained(args.base_cache)
    t1 = time.time()
    settings = BeaconSettings(
        window=args.window, stride=args.window, ratio=(args.ratio,), pos=args.pos, param=tuple(args.param)
    )
    beacon = BeaconModel(copy.deepcopy(base), settings)
    n_beacon = freeze_base(beacon.model)
    print(f"stage 2: beacon params only ({n_beacon:,}) on prompts of {args.train_mult} windows, ratio {args.ratio}")
    beacon_losses = train_beacon(beacon, args, g)
    t2 = time.time()
    print("evaluation")
    rows = evaluate(base, beacon, args, torch.Generator().manual_seed(args.seed + 1))
    t3 = time.time()
    header = ["length", "x W", "beacon acc", "no-memory acc", "full-attn acc", "beacon KV", "window KV", "full KV"]
    print_table(
        header,
        [
            [
                r["length"],
                r["x_window"],
                f"{r['beacon']:.2f}",
                f"{r['window_no_memory']:.2f}",
                f"{r['full_attention']:.2f}",
                r["beacon_kv_entries"],
                r["window_kv_entries"],
                r["full_kv_entries"],
            ]
            for r in rows
        ],
    )
    print(f"KV entries are per layer (x {2 * args.layers} tensors of {base.config.num_key_value_heads} heads).")
    print(f"time: base {t1 - t0:.0f} s, beacon {t2 - t1:.0f} s, eval {t3 - t2:.0f} s")
    path = write_json(
        args.name,
        {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "rows": rows,
            "seconds": {"base": t1 - t0, "beacon": t2 - t1, "eval": t3 - t2},
            "base_loss_last50": sum(base_losses[-50:]) / 50,
            "beacon_loss_last20": sum(beacon_losses[-20:]) / 20,
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
