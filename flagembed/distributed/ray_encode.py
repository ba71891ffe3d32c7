"""Corpus encoding on Ray Data: an actor pool (one actor per GPU, or N CPU actors) encodes shards in parallel.

Each actor holds one ``Embedder``/``M3Embedder`` (built once, on its device) and turns one shard (a range of
one input file, read by the actor itself) into Parquet bytes; the driver writes every shard atomically and
records it in the manifest as it arrives, so an interrupted job resumes where it stopped.

Failure guarantees: an actor that dies (OOM killer, segfault, lost node) is restarted and its shard retried,
at most ``max_retries`` times; an exception raised while encoding (a bad record, a model error) fails the job at
once, naming the input file and record range; a pool that makes no progress for ``stall_timeout`` seconds
(e.g. actors holding every CPU so Ray Data cannot schedule its own tasks) fails instead of hanging.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flagembed._io import check_output_dir
from flagembed.distributed.plan import Shard, expand_inputs, file_identity, plan_shards, read_shard
from flagembed.distributed.shards import (
    FORMAT,
    VERSION,
    ShardError,
    finished,
    read_manifest,
    shard_bytes,
    write_manifest,
    write_shard,
)
from flagembed.engine.progress import progress_bar

logger = logging.getLogger(__name__)

Kind = Literal["auto", "dense", "m3"]
_KILL_MARKER = ".test-killed-actor"


class EncodeStalledError(TimeoutError):
    """The actor pool finished no shard within the stall bound (starved of resources, or hung)."""


class EncodeJobError(RuntimeError):
    """Encoding a shard failed (the message names its input file and records) or retries ran out."""


@dataclass
class EncodeReport:
    """What a run did: shards in the plan, skipped (already finished), encoded now, rows encoded now."""

    out: Path
    shards: int
    skipped: int
    encoded: int
    rows: int
    seconds: float


class ShardEncoder:
    """Ray Data actor: builds the model once on its device, then encodes one shard per call."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        from flagembed.inference import Embedder, M3Embedder

        torch.set_num_threads(spec["threads"])
        cls = M3Embedder if spec["kind"] == "m3" else Embedder
        self.model = cls(spec["path"], device=spec["device"], show_progress=False, **spec["model_kwargs"])
        self.spec = spec

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out_shard, out_data, out_rows = [], [], []
        for raw in batch["shard"]:
            shard = Shard(**json.loads(raw))
            self._maybe_die(shard)
            ids, docs, rows = read_shard(shard)
            try:
                dense, sparse = self._encode(docs)
            except Exception as exc:  # re-raised with the shard's place; Ray Data fails the job with it
                raise EncodeJobError(f"encoding {shard.where()} failed: {type(exc).__name__}: {exc}") from exc
            data = shard_bytes(ids, rows, docs if self.spec["store_text"] else None, dense, sparse)
            out_shard.append(shard.index)
            out_data.append(data)
            out_rows.append(len(ids))
        return {
            "shard": np.asarray(out_shard, dtype=np.int64),
            "data": np.asarray(out_data, dtype=object),
            "rows": np.asarray(out_rows, dtype=np.int64),
        }

    def _encode(self, docs: list[dict[str, Any]]) -> tuple[Any, Any]:
        """Passages exactly as ``encode_corpus`` embeds them in one process (instruction, max length)."""
        outputs = self.spec["outputs"]
        if self.spec["kind"] == "m3":
            want = {"return_dense": "dense" in outputs, "return_sparse": "sparse" in outputs}
            enc = self.model.encode_corpus(docs, output="batch", return_colbert_vecs=False, **want)
            return enc.dense, enc.sparse
        return self.model.encode_corpus(docs), None

    def _maybe_die(self, shard: Shard) -> None:
        """Test fault injection: the first actor to reach shard ``kill_at_shard`` exits like a crashed process."""
        if self.spec.get("kill_at_shard") == shard.index:
            marker = Path(self.spec["out"]) / _KILL_MARKER
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)



def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError('distributed encoding needs Ray Data: pip install "flagembed[ray]"') from None
    return ray


def actor_cpus(total_cpus: float, num_actors: int, cpus_per_actor: float | None, gpus_per_actor: float) -> float:
    """CPUs each actor reserves, leaving room for Ray Data's own tasks (else the pool waits forever).

    Default: 1 per actor, shrunk to fractions so the pool takes at most ``total - 0.5`` CPUs.

    Raises:
        ValueError: the pool would hold every CPU of the cluster (the deadlock seen with 2 actors on 2 CPUs).
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    if cpus_per_actor is None:
        cpus_per_actor = min(1.0, math.floor((total_cpus - 0.5) / num_actors * 100) / 100)
    if cpus_per_actor <= 0 or num_actors * cpus_per_actor >= total_cpus:
        raise ValueError(
            f"{num_actors} actor(s) x {cpus_per_actor:g} CPU would hold all {total_cpus:g} CPUs of the Ray cluster, "
            "leaving none for Ray Data's own tasks (the job would wait forever): use fewer actors, a fractional "
            "cpus_per_actor (e.g. 0.5), or a cluster with more CPUs (ray.init(num_cpus=...))"
        )
    return cpus_per_actor


def encode_corpus(
    model: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    kind: Kind = "auto",
    outputs: Sequence[str] | None = None,
    shard_size: int = 10_000,
    num_actors: int = 1,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0,
    address: str | None = None,
    max_retries: int = 3,
    stall_timeout: float = 900,
    store_text: bool = True,
    overwrite: bool = False,
    show_progress: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    kill_at_shard: int | None = None,
) -> EncodeReport:
    """Encode corpus files into Parquet shards under ``out`` with a Ray Data actor pool; resumable.

    Args:
        model: embedder name or folder; ``kind="auto"`` picks ``M3Embedder`` when it has BGE-M3 heads.
        inputs: JSONL / Parquet files or folders (``_id``/``id``, ``title``, ``text``), local or object store.
        out: local (or shared-filesystem) folder for ``shard-NNNNNN.parquet`` files and ``manifest.json``.
        outputs: ``dense`` (default) and, for M3, ``sparse`` (default both). ColBERT vectors are not sharded.
        shard_size: records per shard (the unit of work, of retry and of resumption).
        num_actors: actors in the pool; each takes ``gpus_per_actor`` GPUs (0: CPU actors).
        address: Ray cluster to join (``auto``, ``ray://host:10001``); ``None`` starts a local one unless Ray
            is already initialized in this process.
        max_retries: restarts of a dead actor and retries of its shard before the job fails.
        stall_timeout: seconds without any finished shard before the job fails (covers model loading).
        overwrite: replace shards of a different job in ``out`` instead of refusing.
        on_progress: called as ``on_progress(done, total)`` after every shard.
        kill_at_shard: test fault injection: the actor encoding this shard index exits once, mid-run.

    Raises:
        ShardError: ``out`` holds shards of another job (without ``overwrite``).
        EncodeJobError: a shard failed (file and records named) or an actor died more than ``max_retries`` times.
        EncodeStalledError: no shard finished within ``stall_timeout`` seconds.
        ValueError: bad arguments, or a pool that would hold every CPU of the cluster.
    """
    start = time.perf_counter()
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    files = expand_inputs(inputs)
    shards = plan_shards(files, shard_size)
    out = Path(out)
    check_output_dir(out, what="shard folder")
    out.mkdir(parents=True, exist_ok=True)
    spec, job, source = _model_spec(model, kind, outputs, model_kwargs or {})
    job.update(shard_size=shard_size, inputs=[file_identity(f) for f in files], store_text=store_text)
    manifest = read_manifest(out)
    done: dict[str, Any] = {}
    if manifest is not None:
        try:
            done = finished(out, manifest, job)
        except ShardError:
            if not overwrite:
                raise
            for stale in out.glob("shard-*.parquet"):
                stale.unlink()
            (out / _KILL_MARKER).unlink(missing_ok=True)
    manifest = {"format": FORMAT, "version": VERSION, "job": job, "source": source, "total": len(shards)}
    manifest.update(shards=dict(done), complete=len(done) == len(shards))
    write_manifest(out, manifest)
    pending = [s for s in shards if s.name not in done]
    logger.info("%d shards planned, %d already finished, %d to encode", len(shards), len(done), len(pending))
    rows = 0
    if pending:
        spec.update(out=str(out), store_text=store_text, kill_at_shard=kill_at_shard)
        rows = _run_pool(pending, spec, manifest, out, num_actors, cpus_per_actor, gpus_per_actor, address,
                         max_retries, stall_timeout, show_progress, on_progress)  # fmt: skip
    manifest["complete"] = True
    write_manifest(out, manifest)
    seconds = time.perf_counter() - start
    return EncodeReport(out, len(shards), len(done), len(pending), rows, seconds)


def _model_spec(
    model: str | os.PathLike[str], kind: Kind, outputs: Sequence[str] | None, model_kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Load the model once here (CPU) for its identity; the actors rebuild it from the resolved folder."""
    from flagembed.index import model_info
    from flagembed.index.build import load_embedder
    from flagembed.index.identity import model_source

    if kind not in ("auto", "dense", "m3"):
        raise ValueError(f"unknown kind {kind!r}; valid: auto, dense, m3")
    modes = None if kind == "auto" else (["dense", "sparse"] if kind == "m3" else ["dense"])
    kwargs = {k: v for k, v in model_kwargs.items() if k != "device"}
    embedder = load_embedder(model, modes, device="cpu", show_progress=False, **kwargs)
    is_m3 = hasattr(embedder, "vocab_size")
    chosen = list(outputs) if outputs is not None else (["dense", "sparse"] if is_m3 else ["dense"])
    valid = ("dense", "sparse") if is_m3 else ("dense",)
    for i, o in enumerate(chosen):
        if o not in valid:
            raise ValueError(f"outputs[{i}] = {o!r} is not available for this model; valid: {', '.join(valid)}")
    if not chosen:
        raise ValueError(f"outputs is empty; valid: {', '.join(valid)}")
    info = model_info(embedder)
    job = {"model": info, "outputs": chosen, "max_length": embedder.passage_max_length}
    if is_m3:
        job["vocab_size"] = embedder.vocab_size
    spec = {
        "kind": "m3" if is_m3 else "dense",
        "path": str(embedder.settings.path),
        "outputs": chosen,
        "model_kwargs": {**kwargs, "trust_remote_code": embedder.trust_remote_code},
    }
    return spec, job, model_source(embedder)


def _run_pool(
    pending: list[Shard],
    spec: dict[str, Any],
    manifest: dict[str, Any],
    out: Path,
    num_actors: int,
    cpus_per_actor: float | None,
    gpus_per_actor: float,
    address: str | None,
    max_retries: int,
    stall_timeout: float,
    show_progress: bool | None,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    ray = _ray()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        total_cpus = float(ray.cluster_resources().get("CPU", 0))
        cpus = actor_cpus(total_cpus, num_actors, cpus_per_actor, gpus_per_actor)
        spec.update(device="cuda" if gpus_per_actor > 0 else "cpu", threads=max(1, int(cpus)))
        items = [{"shard": json.dumps(s.to_dict())} for s in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(pending))
        ds = ds.map_batches(
            ShardEncoder,
            fn_constructor_kwargs={"spec": spec},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=cpus,
            num_gpus=gpus_per_actor or None,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
        return _consume(ds, pending, manifest, out, stall_timeout, show_progress, on_progress)
    finally:
        if owned:
            ray.shutdown()


def _consume(
    ds: Any,
    pending: list[Shard],
    manifest: dict[str, Any],
    out: Path,
    stall_timeout: float,
    show_progress: bool | None,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    """Write shards as they arrive; a background thread drives Ray Data so the wait for each has a bound."""
    by_index = {s.index: s for s in pending}
    results: queue.Queue[Any] = queue.Queue()

    def drive() -> None:
        try:
            for row in ds.iter_rows():
                results.put(row)
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            results.put(exc)
        results.put(None)

    threading.Thread(target=drive, name="flagembed-ray-encode", daemon=True).start()
    total, done, rows = len(manifest["shards"]) + len(pending), len(manifest["shards"]), 0
    last_write = 0.0
    with progress_bar(len(pending), show_progress, "Encoding shards", unit="shard", min_items=2) as bar:
        while True:
            try:
                item = results.get(timeout=stall_timeout)
            except queue.Empty:
                raise EncodeStalledError(
                    f"no shard finished in {stall_timeout:g} s ({done}/{total} done): the actor pool is stalled "
                    "(starved of CPUs/GPUs or hung); check `ray status`, lower num_actors or cpus_per_actor"
                ) from None
            if item is None:
                break
            if isinstance(item, BaseException):
                raise EncodeJobError(f"distributed encoding failed: {_root_message(item)}") from item
            shard = by_index[int(item["shard"])]
            digest = write_shard(out, shard.name, item["data"])
            entry = {**shard.to_dict(), "count": int(item["rows"]), "sha256": digest, "bytes": len(item["data"])}
            manifest["shards"][shard.name] = entry
            done, rows = done + 1, rows + int(item["rows"])
            if time.monotonic() - last_write > 2:  # the manifest is rewritten at most every 2 s (and at the end)
                write_manifest(out, manifest)
                last_write = time.monotonic()
            bar.update(1)
            logger.info("shard %s done (%d/%d)", shard.name, done, total)
            if on_progress is not None:
                on_progress(done, total)
    missing = [s.name for s in pending if s.name not in manifest["shards"]]
    write_manifest(out, manifest)
    if missing:
        raise EncodeJobError(f"the pool finished without {len(missing)} shard(s), e.g. {missing[0]}; re-run to retry")
    return rows


def _root_message(exc: BaseException) -> str:
    """The first (innermost) ``SomeError: message`` line of a Ray-wrapped traceback; ours name file and records."""
    for line in str(exc).splitlines():
        found = _ERROR_LINE.match(line.strip())
        if found and not found.group(1).startswith("ray.") and "UserCodeException" not in found.group(1):
            return found.group(2)
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
