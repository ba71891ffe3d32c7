"""One QLoRA training step at 32K tokens on a random Llama-3-8B-shaped model: chunked CE vs HF's full-logits loss.

Prepared for an H100/H200 (<= 8 min; no weights needed, nothing downloaded). The base is built in bf16 on the GPU
with random weights, its decoder linears are swapped for bitsandbytes NF4 (double quantisation, bf16 compute),
LoRA r 32 / alpha 16 goes on q/k/v/o, embed_tokens is trained fully (modules_to_save), gradient checkpointing is
on. For each loss it runs one warm-up step at 2K tokens, then one optimizer step at ``--seq`` tokens, and records
peak ``torch.cuda.max_memory_allocated`` and tokens/s. An out-of-memory step is recorded as such.

    python benchmarks/context_extension_gpu.py [--seq 32768] [--layers 32] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
                 tie_word_embeddings=False)


def quantize_linears(model: torch.nn.Module, compute_dtype: torch.dtype) -> int:
    """Replace every decoder-layer nn.Linear by a bitsandbytes NF4 Linear4bit (quantised on .cuda())."""
    import bitsandbytes as bnb

    count = 0
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, compress_statistics=True,
                                             quant_type="nf4")
                setattr(parent, name, q.cuda())
                count += 1
    torch.cuda.empty_cache()
    return count


def build(layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from flagembed._compat import dtype_kwargs

    cfg = LlamaConfig(**{**LLAMA3_8B, "num_hidden_layers": layers})
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 2e8}  # the recipe's base (5.x field)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", **dtype_kwargs(torch.bfloat16))
    n_q = quantize_linears(model, torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.config.use_cache = False
    lora = LoraConfig(r=32, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      modules_to_save=["embed_tokens"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    return model, n_q


def step(model, opt, seq: int, chunked: bool, chunk_size: int) -> dict:
    from flagembed.longctx import causal_lm_loss

    ids = torch.randint(0, LLAMA3_8B["vocab_size"], (1, seq), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        if chunked:
            loss = causal_lm_loss(model, ids, ids, chunk_size=chunk_size)
        else:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError as exc:
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"seq": seq, "oom": True, "error": str(exc).splitlines()[0]}
    seconds = time.perf_counter() - start
    return {"seq": seq, "oom": False, "loss": float(loss), "seconds": seconds, "tokens_per_s": seq / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=32768)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "context_extension_gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    import bitsandbytes
    import peft
    import transformers

    t0 = time.perf_counter()
    model, n_q = build(args.layers)
    build_s = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=5e-5)
    results = {}
    for name, chunked in (("chunked_ce", True), ("full_logits_ce", False)):
        warm = step(model, opt, 2048, chunked, args.chunk_size)
        main_step = step(model, opt, args.seq, chunked, args.chunk_size)
        results[name] = {"warmup": warm, "step": main_step}
        print(name, json.dumps(main_step), flush=True)
    logits_gib = args.seq * LLAMA3_8B["vocab_size"] * 4 / 2**30
    payload = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version(),
        "layers": args.layers, "quantized_linears": n_q, "trainable_parameters": sum(p.numel() for p in trainable),
        "build_seconds": build_s, "fp32_logits_gib_at_seq": logits_gib, "results": results,
        "total_seconds": time.perf_counter() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(f"{'loss':<16}{'peak GiB':>10}{'tokens/s':>10}")
    for name, r in results.items():
        s = r["step"]
        print(f"{name:<16}{'OOM' if s['oom'] else format(s['peak_gib'], '.1f'):>10}"
              f"{'-' if s['oom'] else format(s['tokens_per_s'], '.0f'):>10}")
    print(f"(fp32 logits alone at {args.seq} tokens: {logits_gib:.1f} GiB) wrote {args.out}")


if __name__ == "__main__":
    main()
