"""``flagembed embed`` and ``flagembed demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, emit_table, fail


def embed(
    model: str = typer.Option(..., "--model", "-m", help="Model name, hub id or local folder."),
    input: Path = typer.Option(
        ..., "--input", "-i", help="A .txt file (one text per line) or .jsonl (text or title+text)."
    ),
    output: Path = typer.Option(
        ..., "--output", "--out", "-o", help="Where to write the .npy array (- for standard output)."
    ),
    queries: bool = typer.Option(False, "--queries", help="Treat inputs as queries (adds the query instruction)."),
    instruction: Optional[str] = typer.Option(None, help="Instruction to prepend (overrides the model's)."),
    task: Optional[str] = typer.Option(
        None, help="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool (its query and passage instructions)."
    ),
    field: str = typer.Option("text", help="JSONL field holding the text."),
    batch_size: int = typer.Option(256, help="Items per batch."),
    max_length: Optional[int] = typer.Option(None, min=1, help="Max tokens per text (longer texts are truncated)."),
    max_tokens_per_batch: Optional[int] = typer.Option(None, help="Token budget per batch."),
    truncate_dim: Optional[int] = typer.Option(None, min=1, help="Matryoshka dimension to keep."),
    keep_blank: bool = typer.Option(
        False, "--keep-blank", help="Embed blank .txt lines too, so output row i is input line i."
    ),
    precision: str = typer.Option("float32", help="float32, int8, uint8, binary or ubinary."),
    device: Device = None,
    dtype: DType = "auto",
    backend: str = typer.Option(
        "torch", help="torch, onnx or openvino (a folder written by flagembed export --out runs with onnx)."
    ),
    quantize: Optional[str] = typer.Option(None, help="int8: static int8 (--backend openvino) or dynamic (onnx)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: auto)."),
    trust_remote_code: TrustRemoteCode = False,
    ray: bool = typer.Option(
        False, "--ray", help="Encode on a Ray cluster into Parquet shards under --output (a folder); resumable."
    ),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (auto, ray://host:10001)."),
    actors: int = typer.Option(1, "--actors", help="With --ray: actors in the pool (one per GPU, or CPU actors)."),
    gpus_per_actor: float = typer.Option(0, "--gpus-per-actor", help="With --ray: GPUs per actor (0: CPU)."),
    cpus_per_actor: Optional[float] = typer.Option(None, "--cpus-per-actor", help="With --ray: CPUs per actor."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="With --ray: records per shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --ray: replace shards of a different job."),
) -> None:
    """Embed a file of texts into a .npy array (or, with --ray, a corpus into Parquet shards)."""
    from flagembed._io import check_output_file, read_texts, save_npy

    if ray:
        _embed_ray(model, input, output, address, actors, cpus_per_actor, gpus_per_actor, shard_size, overwrite,
                   progress, {"batch_size": batch_size, "max_tokens_per_batch": max_tokens_per_batch,
                              "max_length": max_length, "truncate_dim": truncate_dim, "dtype": dtype,
                              "trust_remote_code": trust_remote_code})  # fmt: skip
        return
    from flagembed.inference import Embedder
    from flagembed.inference.inputs import as_corpus_list

    try:
        check_output_file(output)  # before the model loads: a bad destination fails in a second
        texts = read_texts(input, field=field, keep_blank=True)
        if input.suffix not in (".jsonl", ".json") and not keep_blank:
            lines, texts = len(texts), [t for t in texts if t.strip()]
            if len(texts) < lines:
                blank = lines - len(texts)
                typer.echo(
                    f"note: skipped {blank} blank line(s) of {input}; output rows follow the non-blank lines "
                    "(--keep-blank keeps row i = line i)",
                    err=True,
                )
        if not texts:
            typer.echo(f"warning: {input} holds no texts; writing an empty array", err=True)
        if queries:  # title+text records become one query string each
            texts = as_corpus_list(texts)[0]
        emb = Embedder(
            model,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            device=device,
            dtype=dtype,
            truncate_dim=truncate_dim,
            show_progress=progress,
            trust_remote_code=trust_remote_code,
            backend=backend,  # type: ignore[arg-type]
            quantize=quantize,  # type: ignore[arg-type]
            task=task,
        )
        kwargs = {"precision": precision}
        if max_length is not None:
            kwargs["max_length"] = max_length
        if instruction is not None:
            kwargs["instruction"] = instruction
        vectors = emb.encode_queries(texts, **kwargs) if queries else emb.encode_corpus(texts, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    save_npy(output, vectors)
    typer.echo(f"wrote {output} shape={tuple(vectors.shape)} dtype={vectors.dtype}", err=str(output) == "-")
    if emb.last_truncated:
        typer.echo(f"{emb.last_truncated} of {len(texts)} inputs were truncated to the max length", err=True)


def _embed_ray(
    model: str, input: Path, output: Path, address: Optional[str], actors: int, cpus: Optional[float], gpus: float,
    shard_size: int, overwrite: bool, progress: Optional[bool], kwargs: dict,
) -> None:  # fmt: skip
    from flagembed.distributed import EncodeJobError, EncodeStalledError, ShardError, encode_corpus

    try:
        report = encode_corpus(
            model, input, output, address=address, num_actors=actors, cpus_per_actor=cpus, gpus_per_actor=gpus,
            shard_size=shard_size, overwrite=overwrite, show_progress=progress,
            model_kwargs={k: v for k, v in kwargs.items() if v is not None},
        )  # fmt: skip
    except (ValueError, TypeError, OSError, ImportError, ShardError, EncodeJobError, EncodeStalledError) as exc:
        fail(str(exc))
    typer.echo(
        f"encoded {report.rows} documents in {report.encoded} shard(s) ({report.skipped} already done) "
        f"into {output} in {report.seconds:.1f} s"
    )


def demo(
    model: str = typer.Option("all-MiniLM-L6-v2", "--model", "-m", help="Model to run."),
    top_k: int = typer.Option(3, help="Hits shown per claim."),
    show: int = typer.Option(5, help="How many claims to print."),
    device: Device = None,
) -> None:
    """Embed the bundled SciFact sample and show the best abstracts for example claims."""
    from flagembed.demo import run_demo

    try:
        result = run_demo(model, top_k=top_k, device=device)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    for query, hits in list(zip(result.queries, result.hits))[:show]:
        typer.echo(f"\nclaim: {query['text']}")
        rows = [
            [f"{score:.3f}", "yes" if doc["_id"] in query["relevant"] else "", doc["title"][:90]] for doc, score in hits
        ]
        emit_table(["score", "relevant", "abstract title"], rows)
    typer.echo(
        f"\n{len(result.queries)} claims over {result.docs} abstracts with {model}: "
        f"recall@{result.top_k} = {result.recall_at_k:.3f} ({result.seconds:.1f} s)"
    )
