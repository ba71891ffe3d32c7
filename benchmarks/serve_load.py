"""Load test for ``flagembed serve``: N concurrent loopback clients, dynamic batching on vs off.

Starts the real server (``flagembed serve``) twice in a subprocess on 127.0.0.1, each time with the
same model and settings except ``--batching/--no-batching``, drives it with N concurrent clients
sending small requests for a bounded time, and reports requests/s, p50/p99 latency and batch fill
(requests and inputs per model call, from the server's /metrics). Prints the throughput ratio.

    python benchmarks/serve_load.py --model all-MiniLM-L6-v2 --clients 32 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SENTENCES = [
    "A cell is the basic unit of life.",
    "What is the capital of France?",
    "Mitochondria produce most of the cell's ATP.",
    "How do vaccines train the immune system?",
    "The giant panda is a bear native to China.",
    "Dense retrieval maps queries and passages to vectors.",
    "Which drugs reduce the risk of heart disease?",
    "Rain is water falling from clouds.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batching: bool, extra: list[str], device: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-c", "from flagembed.cli import main; main()", "serve", "--model", model,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--device", device,
        "--batching" if batching else "--no-batching", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not come up in 180 s")


async def drive(url: str, model: str, clients: int, seconds: float, texts_per_request: int) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.monotonic() < stop:
                texts = [SENTENCES[(i + j) % len(SENTENCES)] + f" #{i}" for j in range(texts_per_request)]
                t0 = time.perf_counter()
                r = await http.post("/v1/embeddings", json={"model": model, "input": texts})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += clients

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
        metrics = (await http.get("/metrics")).text
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "requests_per_batch": _mean(metrics, "flagembed_batch_requests"),
        "inputs_per_batch": _mean(metrics, "flagembed_batch_items"),
    }


def _mean(metrics: str, name: str) -> float:
    total = float(re.search(rf"^{name}_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(rf"^{name}_count (\S+)$", metrics, re.M).group(1))
    return total / count if count else float("nan")


def run_mode(args: argparse.Namespace, batching: bool) -> dict:
    port = free_port()
    proc = start_server(args.model, port, batching, args.server_arg, args.device)
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(drive(url, Path(args.model).name, min(4, args.clients), 2.0, args.texts))  # warm-up
        return asyncio.run(drive(url, Path(args.model).name, args.clients, args.seconds, args.texts))
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--texts", type=int, default=1, help="texts per request")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `flagembed serve` argument")
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.seconds > 600:
        raise SystemExit("--clients must be >= 1 and --seconds in (0, 600]")

    results = {"batching": run_mode(args, True), "no_batching": run_mode(args, False)}
    ratio = results["batching"]["rps"] / results["no_batching"]["rps"]
    cols = f"{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/batch':>10} {'inputs/batch':>12} {'errors':>7}"
    header = f"{'mode':<12} {cols}"
    print(f"\n{args.clients} clients x {args.seconds:.0f} s, {args.texts} text(s)/request, model {args.model}")
    print(header)
    print("-" * len(header))
    for mode, r in results.items():
        print(
            f"{mode:<12} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['requests_per_batch']:>10.1f} {r['inputs_per_batch']:>12.1f} {r['errors']:>7d}"
        )
    print(f"throughput ratio (batching / no batching): {ratio:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from flagembed._io import save_json

    save_json(out, {"args": vars(args), "results": results, "ratio": ratio, "cpus": os.cpu_count()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
