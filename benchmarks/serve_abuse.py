"""Abuse test for ``flagembed serve``: do bad clients slow good ones down, grow the server, or hold sockets?

Starts the real server (``flagembed serve``, via serve_load's helpers) on 127.0.0.1 with an M3-style model
and a reranker, then runs bounded phases, each ``--seconds`` long:

* ``baseline``: ``--good`` clients alternate one-sentence ``/v1/embeddings`` and 4-document ``/v1/rerank`` calls;
* ``surrogates``: the same, plus ``--abusers`` clients sending batches with one lone UTF-16 surrogate
  (``"\\ud800"``) to embeddings, sparse, multivector and rerank in turn;
* ``multivector``: the same, plus abusers sending maximal multi-vector requests (``max_inputs`` texts of the
  model's full length, far over ``max_multivector_values``);
* ``baseline_end``: the baseline again; ratios are against the mean of both baselines (a shared machine drifts);

and reports the good clients' requests/s per phase (ratio to baseline), the server's peak RSS, and finally how
long ``--slow`` idle, slow-header and slow-body connections stay open against the configured timeouts.

With no ``--model``, it builds tiny random checkpoints (tests/tiny_m3.py with bge-m3-sized 1024-dim ColBERT
vectors, and a tiny cross-encoder), so it runs offline in about a minute:

    python benchmarks/serve_abuse.py --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from serve_load import SENTENCES, free_port, start_server

ROOT = Path(__file__).resolve().parents[1]
LONG = " ".join(SENTENCES) * 8  # well over any tiny model's max length
PHASES = ("baseline", "surrogates", "multivector", "baseline_end")


def tiny_models(folder: Path) -> tuple[str, str]:
    """A tiny M3 (1024-dim ColBERT head, like bge-m3) and a tiny cross-encoder, from the test builders."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_m3
    import tiny_models as tm

    m3 = tiny_m3.build_m3(folder / "tiny-m3", colbert_dim=1024)
    rr = tm.build_bert(folder / "tiny-reranker", classifier=True)
    return str(m3), str(rr)


class RssSampler:
    """Peak resident memory of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def abuse_payloads(kind: str, max_inputs: int) -> list[tuple[str, bytes]]:
    """(path, body) pairs an abuser cycles through; bodies are ASCII JSON so ``\\ud800`` stays an escape."""
    if kind == "surrogates":
        texts = [*SENTENCES[:7], "bad \ud800 text"]
        return [
            ("/v1/embeddings", json.dumps({"input": texts}).encode()),
            ("/v1/embeddings/sparse", json.dumps({"input": texts}).encode()),
            ("/v1/embeddings/multivector", json.dumps({"input": texts}).encode()),
            ("/v1/rerank", json.dumps({"query": SENTENCES[0], "documents": texts}).encode()),
        ]
    return [("/v1/embeddings/multivector", json.dumps({"input": [LONG[:2000]] * max_inputs}).encode())]


async def phase(url: str, good: int, abusers: int, kind: str, seconds: float, max_inputs: int) -> dict:
    ok = errors = abuse_sent = 0
    abuse_status: dict[int, int] = {}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=good + abusers, max_keepalive_connections=good + abusers)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def good_client(k: int) -> None:
            nonlocal ok, errors
            i = k
            while time.monotonic() < stop:
                if i % 2:
                    r = await http.post("/v1/embeddings", json={"input": [SENTENCES[i % 8] + f" #{i}"]})
                else:
                    docs = [SENTENCES[(i + j) % 8] for j in range(4)]
                    r = await http.post("/v1/rerank", json={"query": SENTENCES[i % 8], "documents": docs})
                ok, errors = (ok + 1, errors) if r.status_code == 200 else (ok, errors + 1)
                i += good

        async def abuser(k: int) -> None:
            nonlocal abuse_sent
            payloads = abuse_payloads(kind, max_inputs)
            i = k
            while time.monotonic() < stop:
                path, body = payloads[i % len(payloads)]
                r = await http.post(path, content=body, headers={"content-type": "application/json"})
                abuse_status[r.status_code] = abuse_status.get(r.status_code, 0) + 1
                abuse_sent += 1
                i += 1

        start = time.perf_counter()
        tasks = [good_client(k) for k in range(good)] + [abuser(k) for k in range(abusers)]
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"good_rps": ok / elapsed, "good_errors": errors, "abuse_requests": abuse_sent, "abuse_status": abuse_status}


async def slow_connections(port: int, n: int, wait_s: float) -> dict:
    """Open ``n`` idle / slow-header / slow-body connections; seconds until the server closed each."""
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
    body_start = head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\": "

    async def one(i: int) -> tuple[str, float]:
        kind = ("idle", "slow_header", "slow_body")[i % 3]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        if kind != "idle":
            writer.write(head if kind == "slow_header" else body_start)
            await writer.drain()
        try:
            while await asyncio.wait_for(reader.read(4096), wait_s):
                pass
            closed = time.monotonic() - start
        except (asyncio.TimeoutError, ConnectionError):
            closed = float("inf") if not reader.at_eof() else time.monotonic() - start
        writer.close()
        return kind, closed

    results = await asyncio.gather(*(one(i) for i in range(n)))
    out: dict[str, float] = {}
    for kind, seconds in results:
        out[kind] = max(out.get(kind, 0.0), seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="M3-style model (default: a tiny random one with 1024-dim ColBERT)")
    parser.add_argument("--reranker", help="cross-encoder (default: a tiny random one)")
    parser.add_argument("--good", type=int, default=40)
    parser.add_argument("--abusers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--slow", type=int, default=200, help="slow/idle connections to open at the end")
    parser.add_argument("--timeout", type=float, default=2.0, help="server --header-timeout and --body-timeout")
    parser.add_argument("--max-inputs", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/serve_abuse.json")
    args = parser.parse_args()
    if not (1 <= args.good <= 200 and 0 <= args.abusers <= 100 and 0 < args.seconds <= 120 and 0 <= args.slow <= 1000):
        raise SystemExit("--good 1..200, --abusers 0..100, --seconds (0, 120], --slow 0..1000")

    with tempfile.TemporaryDirectory() as tmp:
        model, reranker = args.model, args.reranker
        if model is None or reranker is None:
            tiny_m3_path, tiny_rr_path = tiny_models(Path(tmp))
            model, reranker = model or tiny_m3_path, reranker or tiny_rr_path
        port = free_port()
        extra = [
            "--kind", "m3", "--reranker", reranker, "--max-inputs", str(args.max_inputs),
            "--header-timeout", str(args.timeout), "--body-timeout", str(args.timeout),
        ]  # fmt: skip
        proc = start_server(model, port, True, extra, args.device)
        url = f"http://127.0.0.1:{port}"
        try:
            info = httpx.get(f"{url}/info", timeout=10).json()
            asyncio.run(phase(url, 4, 0, "baseline", 2.0, args.max_inputs))  # warm-up
            rss_start = psutil.Process(proc.pid).memory_info().rss
            results: dict[str, dict] = {}
            with RssSampler(proc.pid) as rss:
                for kind in PHASES:
                    abusers = 0 if kind.startswith("baseline") else args.abusers
                    results[kind] = asyncio.run(phase(url, args.good, abusers, kind, args.seconds, args.max_inputs))
                    results[kind]["rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
            slow = asyncio.run(slow_connections(port, args.slow, args.timeout * 3 + 5)) if args.slow else {}
            alive = httpx.get(f"{url}/health", timeout=10).status_code == 200
        finally:
            proc.terminate()
            proc.wait(60)

    base = (results["baseline"]["good_rps"] + results["baseline_end"]["good_rps"]) / 2  # the machine drifts
    name = Path(model).name
    print(f"\n{args.good} good clients, {args.abusers} abusers, {args.seconds:.0f} s per phase, model {name}")
    print(f"{'phase':<12} {'good req/s':>10} {'ratio':>6} {'good errors':>11} {'abuse req':>9}  abuse statuses")
    for kind, r in results.items():
        ratio = r["good_rps"] / base if base else float("nan")
        r["ratio"] = ratio
        print(
            f"{kind:<12} {r['good_rps']:>10.1f} {ratio:>6.2f} {r['good_errors']:>11d} {r['abuse_requests']:>9d}  "
            f"{dict(sorted(r['abuse_status'].items()))}"
        )
    growth = (rss.peak - rss_start) / 2**20
    print(f"server RSS: {rss_start / 2**20:.0f} MB after warm-up, peak {rss.peak / 2**20:.0f} MB (+{growth:.0f} MB)")
    if slow:
        worst = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(slow.items()))
        print(f"{args.slow} slow connections (timeouts {args.timeout:g} s), longest open: {worst}")
    print(f"server alive afterwards: {alive}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from flagembed._io import save_json

    save_json(
        out,
        {
            "args": vars(args),
            "limits": info["limits"],
            "connections": info["connections"],
            "results": results,
            "rss_mb": {"after_warmup": rss_start / 2**20, "peak": rss.peak / 2**20, "growth": growth},
            "slow_connections_s": slow,
            "alive": alive,
            "cpus": os.cpu_count(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
