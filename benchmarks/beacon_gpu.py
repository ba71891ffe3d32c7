"""Beacon vs full attention on a GPU: prefill time, peak memory, KV bytes and decode tokens/s (random 7B Qwen2).

A randomly initialised Qwen2-7B-shaped model (L28, H3584, 28 heads, 4 KV heads, vocab 152,064) in bf16 -- speed
and memory only, no quality (no weights offline). Full attention is plain HF (sdpa, logits for the last token only);
beacon is this package's runtime with W = 2048 and r in {2, 4, 8}. Targets (LONG_CONTEXT.md §13): beacon KV at 128K
with r = 8 <= 1/7 of full, prefill >= 1.5x faster than full attention at 128K, flat decode latency.

    python benchmarks/beacon_gpu.py                      # H100/H200, <= 8 min; JSON to $OUT or bench_results/
    python benchmarks/beacon_gpu.py --tiny               # CPU smoke test of the code path (tiny shape)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flagembed.longctx.beacon import BeaconModel, BeaconSettings  # noqa: E402

QWEN2_7B = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1e6,
    eos_token_id=151643,
    bos_token_id=151643,
)
TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    eos_token_id=2,
    bos_token_id=1,
)


def build(shape: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**shape)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model.eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def kv_bytes_full(cfg, n: int, dtype: torch.dtype) -> int:
    hd = cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * hd * n * torch.finfo(dtype).bits // 8


@torch.no_grad()
def full_run(model, ids: torch.Tensor, new: int, device: str) -> dict:
    from transformers import DynamicCache

    peak_reset(device)
    sync(device)
    t0 = time.perf_counter()
    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    sync(device)
    prefill = time.perf_counter() - t0
    tok = out.logits[:, -1:].argmax(-1)
    t1 = time.perf_counter()
    for _ in range(new):
        out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
    sync(device)
    decode = time.perf_counter() - t1
    return {
        "prefill_s": prefill,
        "decode_tok_s": new / decode if new else None,
        "peak_gib": peak_gib(device),
        "kv_bytes": kv_bytes_full(model.config, ids.shape[1] + new, model.dtype),
    }


@torch.no_grad()
def beacon_run(beacon: BeaconModel, ids: torch.Tensor, new: int, device: str) -> dict:
    peak_reset(device)
    beacon.reset()
    session = beacon.session
    sync(device)
    t0 = time.perf_counter()
    logits = session.feed(ids, logits="last").logits
    sync(device)
    prefill = time.perf_counter() - t0
    kv_after_prefill = beacon.memory.nbytes()
    t1 = time.perf_counter()
    for _ in range(new):
        logits = session.feed(logits[:, -1].argmax(-1, keepdim=True), logits="last").logits
    sync(device)
    decode = time.perf_counter() - t1
    return {
        "prefill_s": prefill,
        "decode_tok_s": new / decode if new else None,
        "peak_gib": peak_gib(device),
        "kv_bytes": kv_after_prefill,
        "kv_entries": list(beacon.memory.sizes()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shape on CPU (code-path smoke test)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    ap.add_argument("--ratios", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--decode-at", type=int, nargs="+", default=[32768, 131072], help="lengths with a decode test")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--budget-s", type=float, default=420, help="skip remaining runs past this wall time")
    args = ap.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.tiny:
        args.lengths, args.window, args.decode_at, args.new_tokens = [256, 1024], 64, [1024], 8
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    start = time.time()
    model = build(TINY if args.tiny else QWEN2_7B, device, dtype)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params on {device} ({dtype})", flush=True)
    warm = torch.randint(0, model.config.vocab_size, (1, 2 * args.window), device=device)
    full_run(model, warm, 2, device)  # warm-up kernels
    rows = []
    for n in args.lengths:
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=device)
        new = args.new_tokens if n in args.decode_at else 0
        runs = [("full", None)] + [(f"beacon r={r}", r) for r in args.ratios]
        for name, r in runs:
            if time.time() - start > args.budget_s:
                print(f"  skip {name} at {n}: past the {args.budget_s:.0f} s budget", flush=True)
                continue
            try:
                if r is None:
                    res = full_run(model, ids, new, device)
                else:
                    settings = BeaconSettings(window=args.window, stride=args.window, ratio=(r,))
                    beacon = BeaconModel(model, settings).eval()
                    res = beacon_run(beacon, ids, new, device)
            except torch.cuda.OutOfMemoryError as exc:
                res = {"error": f"OOM: {str(exc)[:80]}"}
            row = {"length": n, "run": name, **res}
            rows.append(row)
            print(f"  {json.dumps(row)}", flush=True)
    full = {r["length"]: r for r in rows if r["run"] == "full" and "error" not in r}
    print(
        f"\n{'length':>8} {'run':<12} {'prefill s':>10} {'x full':>7} {'peak GiB':>9} {'KV GiB':>8} {'KV/full':>8} "
        f"{'decode tok/s':>12}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['length']:>8} {r['run']:<12} {r['error']}")
            continue
        f = full.get(r["length"])
        speed = f["prefill_s"] / r["prefill_s"] if f else float("nan")
        kv_ratio = r["kv_bytes"] / f["kv_bytes"] if f else float("nan")
        dec = f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] else "-"
        print(
            f"{r['length']:>8} {r['run']:<12} {r['prefill_s']:>10.2f} {speed:>7.2f} {r['peak_gib']:>9.1f} "
            f"{r['kv_bytes'] / 2**30:>8.2f} {kv_ratio:>8.3f} {dec:>12}"
        )
    import transformers

    payload = {
        "rows": rows,
        "args": vars(args),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "wall_s": time.time() - start,
    }
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parents[1] / "bench_results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "beacon_gpu.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'beacon_gpu.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
