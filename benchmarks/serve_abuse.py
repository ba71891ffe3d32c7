"""Abuse test for ``flagembed serve``: do bad clients slow good ones down, grow the server, or hold sockets?

Starts the real server (``flagembed serve``, via serve_load's helpers) on 127.0.0.1 with an M3-style model
and a reranker, then runs bounded phases, each ``--seconds`` long:

* ``baseline``: ``--good`` clients alternate one-sentence ``/v1/embeddings`` and 4-document ``/v1/rerank`` calls;
* ``surrogates``: the same, plus ``--abusers`` clients sending batches with one lone UTF-16 surrogate
  (``"\\ud800"``) to embeddings, sparse, multivector and rerank in turn;
* ``multivector``: the same, plus abusers sending maximal multi-vector requests (``max_inputs`` texts of the
  model's full length, far over ``max_multivector_values``);

Abuse phases alternate with baselines (``--rounds`` times each, abusers in a separate client process), and each
abuse phase is compared with the mean of the baselines on either side, since a shared machine drifts. It
reports the good clients' requests/s (mean ratio per abuse kind), the server's peak RSS, and finally how long
``--slow`` idle, slow-header and slow-body connections stay open against the configured timeouts.

With no ``--model``, it builds tiny random checkpoints (tests/tiny_m3.py with bge-m3-sized 1024-dim ColBERT
vectors, and a tiny cross-encoder), so it runs offline in about a minute:

    python benchmarks/serve_abuse.py --seconds 6 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from serve_load import SENTENCES, free_port, start_server

ROOT = Path(__file__).resolve().parents[1]
LONG = " ".join(SENTENCES) * 8  # well over any tiny model's max length
ABUSE_KINDS = ("surrogates", "multivector")
SERVER: psutil.Process  # the server under test, set in main()


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


async def abuse(url: str, abusers: int, kind: str, seconds: float, max_inputs: int, rate: float) -> dict:
    """``abusers`` clients cycling through :func:`abuse_payloads` for ``seconds`` (each at most ``rate``
    requests/s; 0: as fast as the server answers); status counts."""
    status: dict[int, int] = {}
    stop = time.monotonic() + seconds
    payloads = abuse_payloads(kind, max_inputs)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=abusers)) as http:

        async def abuser(k: int) -> None:
            i = k
            while time.monotonic() < stop:
                path, body = payloads[i % len(payloads)]
                sent = time.monotonic()
                try:
                    r = await http.post(path, content=body, headers={"content-type": "application/json"})
                    code = r.status_code
                except httpx.TransportError:  # the server may close an abuser's connection: count it, go on
                    code = -1
                status[code] = status.get(code, 0) + 1
                i += 1
                if rate > 0:
                    await asyncio.sleep(max(0.0, sent + 1 / rate - time.monotonic()))

        await asyncio.gather(*(abuser(k) for k in range(abusers)))
    return status


def abuse_process(url: str, abusers: int, kind: str, seconds: float, max_inputs: int, rate: float, out: Any) -> None:
    """Abusers in their own process, so their client-side work does not slow the good clients' event loop."""
    out.put(asyncio.run(abuse(url, abusers, kind, seconds, max_inputs, rate)))


async def good_clients(url: str, good: int, seconds: float) -> dict:
    """``good`` clients alternating one-sentence embeddings and 4-document rerank calls for ``seconds``."""
    ok = errors = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=good)) as http:

        async def client(k: int) -> None:
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

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(good)))
        elapsed = time.perf_counter() - start
    return {"good_rps": ok / elapsed, "good_errors": errors}


def phase(url: str, good: int, abusers: int, kind: str, seconds: float, max_inputs: int, rate: float = 0) -> dict:
    """One bounded phase: good clients here, abusers (if any) in a second process at the same time."""
    proc = None
    if abusers:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=abuse_process, args=(url, abusers, kind, seconds, max_inputs, rate, queue))
        proc.start()
        time.sleep(1.0)  # let the abusers start (spawn imports) before measuring
    cpu = SERVER.cpu_times()
    result = asyncio.run(good_clients(url, good, seconds - 1.0 if abusers else seconds))
    after = SERVER.cpu_times()
    result["server_cpu_s"] = after.user + after.system - cpu.user - cpu.system
    status: dict[int, int] = {}
    if proc is not None:
        status = queue.get(timeout=seconds + 120)
        proc.join(30)
    return {**result, "abuse_requests": sum(status.values()), "abuse_status": status}


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
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2, help="abuse phases of each kind")
    parser.add_argument("--rss-bound-mb", type=float, default=200.0, help="allowed peak RSS growth")
    parser.add_argument("--abuse-rate", type=float, default=0.0, help="requests/s per abuser (0: flood)")
    parser.add_argument("--slow", type=int, default=200, help="slow/idle connections to open at the end")
    parser.add_argument("--timeout", type=float, default=2.0, help="server --header-timeout and --body-timeout")
    parser.add_argument("--max-inputs", type=int, default=512)
    parser.add_argument("--reject-delay", type=float, default=None, help="server --reject-delay (default: its own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/serve_abuse.json")
    args = parser.parse_args()
    bounded = 1 <= args.rounds <= 10 and 1 <= args.good <= 200 and 0 <= args.abusers <= 100
    if not (bounded and 2 < args.seconds <= 120 and 0 <= args.slow <= 1000):
        raise SystemExit("--rounds 1..10, --good 1..200, --abusers 0..100, --seconds (2, 120], --slow 0..1000")

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
        if args.reject_delay is not None:
            extra += ["--reject-delay", str(args.reject_delay)]
        proc = start_server(model, port, True, extra, args.device)
        url = f"http://127.0.0.1:{port}"
        global SERVER
        SERVER = psutil.Process(proc.pid)
        try:
            info = httpx.get(f"{url}/info", timeout=10).json()
            phase(url, 4, 0, "baseline", 2.0, args.max_inputs)  # warm-up
            rss_start = psutil.Process(proc.pid).memory_info().rss
            runs: list[tuple[str, dict]] = []
            kinds = ["baseline"]
            for _ in range(args.rounds):
                for kind in ABUSE_KINDS:
                    kinds += [kind, "baseline"]
            with RssSampler(proc.pid) as rss:
                for kind in kinds:
                    abusers = 0 if kind == "baseline" else args.abusers
                    r = phase(url, args.good, abusers, kind, args.seconds, args.max_inputs, args.abuse_rate)
                    runs.append((kind, {**r, "rss_mb": psutil.Process(proc.pid).memory_info().rss / 2**20}))
            slow = asyncio.run(slow_connections(port, args.slow, args.timeout * 3 + 5)) if args.slow else {}
            alive = httpx.get(f"{url}/health", timeout=10).status_code == 200
        finally:
            proc.terminate()
            proc.wait(60)

    name = Path(model).name
    print(f"\n{args.good} good clients, {args.abusers} abusers, {args.seconds:.0f} s per phase, model {name}")
    pace = f"{args.abuse_rate:g} req/s each" if args.abuse_rate else "as fast as answered"
    print(f"abusers send {pace}; server CPU seconds per phase in the 'cpu s' column")
    cols = f"{'good req/s':>10} {'ratio':>6} {'cpu s':>6} {'good errors':>11} {'abuse req':>9}"
    print(f"{'phase':<12} {cols}  abuse statuses")
    for i, (kind, r) in enumerate(runs):
        if kind != "baseline":  # runs alternate, so both neighbours are baselines
            r["ratio"] = r["good_rps"] / ((runs[i - 1][1]["good_rps"] + runs[i + 1][1]["good_rps"]) / 2)
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        print(
            f"{kind:<12} {r['good_rps']:>10.1f} {ratio:>6} {r['server_cpu_s']:>6.1f} {r['good_errors']:>11d} "
            f"{r['abuse_requests']:>9d}  "
            f"{dict(sorted(r['abuse_status'].items()))}"
        )
    results = {k: float(np.mean([r["ratio"] for kind, r in runs if kind == k])) for k in ABUSE_KINDS}
    verdict = "ok" if min(results.values()) >= 0.9 else "BELOW 0.90"
    print("mean good-client throughput vs baseline: " + ", ".join(f"{k} {v:.2f}" for k, v in results.items()), verdict)
    growth = (rss.peak - rss_start) / 2**20
    within = "within" if growth <= args.rss_bound_mb else "OVER"
    print(
        f"server RSS: {rss_start / 2**20:.0f} MB after warm-up, peak {rss.peak / 2**20:.0f} MB "
        f"(+{growth:.0f} MB, {within} the {args.rss_bound_mb:g} MB bound)"
    )
    if slow:
        worst = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(slow.items()))
        late = "closed in time" if max(slow.values()) <= args.timeout + 1 else "HELD TOO LONG"
        print(f"{args.slow} slow connections (timeouts {args.timeout:g} s), longest open: {worst}: {late}")
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
            "mean_ratio": results,
            "runs": runs,
            "rss_mb": {"after_warmup": rss_start / 2**20, "peak": rss.peak / 2**20, "growth": growth},
            "slow_connections_s": slow,
            "alive": alive,
            "cpus": os.cpu_count(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
