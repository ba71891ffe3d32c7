"""``flagembed longctx``: the long-context evaluation harness and the context-extension recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from flagembed.cli.common import TrustRemoteCode, emit_table, fail

longctx_app = typer.Typer(help="Long-context LLMs: evaluation harness and context extension.", no_args_is_help=True)
eval_app = typer.Typer(help="Passkey, needle, perplexity, topic retrieval, LongBench.", no_args_is_help=True)
longctx_app.add_typer(eval_app, name="eval")

MODEL = typer.Option(..., "--model", "-m", help="Causal LM (folder or hub id).")
OUT = typer.Option(None, "--out", "--output", "-o", help="Write the full result as JSON here.")
PLOT = typer.Option(None, "--plot", help="Write the heat map / curve PNG here.")
ROPE_THETA = typer.Option(None, "--rope-theta", help="Load with this RoPE base (e.g. 2e8).")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: the model's own placement).")
DTYPE = typer.Option("auto", "--dtype", help="auto, fp32, fp16 or bf16.")
CHAT = typer.Option("auto", "--chat", help="auto (use the chat template if any), yes or no.")
BEACON = typer.Option(
    False, "--beacon", help="Read with Activation Beacon (the folder's beacon_* settings and tensors, else fresh ones)."
)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{flag}: expected comma-separated numbers, got {text!r}")
    if not values:
        fail(f"{flag}: give at least one value")
    return values


def _chat(value: str) -> bool | str:
    if value not in ("auto", "yes", "no"):
        fail(f"--chat: expected auto, yes or no, got {value!r}")
    return value if value == "auto" else value == "yes"


def _load(
    model: str, device: Optional[str], dtype: str, rope_theta: Optional[float], trust: bool, beacon: bool = False
) -> tuple[Any, Any]:
    from flagembed.longctx import load_causal_lm

    if beacon:
        return _load_beacon(model, device, dtype, rope_theta, trust)
    try:
        return load_causal_lm(model, device=device, dtype=dtype,
                              rope={"theta": rope_theta} if rope_theta else None, trust_remote_code=trust)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _load_beacon(model: str, device: Optional[str], dtype: str, rope_theta: Optional[float], trust: bool) -> Any:
    import torch

    from flagembed.longctx.beacon import load_beacon_model
    from flagembed.models import load_tokenizer

    if rope_theta or trust:
        fail("--beacon reads stock Llama/Qwen2/Mistral checkpoints: --rope-theta and --trust-remote-code do not apply")
    dtypes = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        fail(f"--dtype: expected one of {', '.join(dtypes)}, got {dtype!r}")
    try:
        return load_beacon_model(model, dtype=dtypes[dtype], device=device), load_tokenizer(model)
    except (FileNotFoundError, ValueError, OSError) as exc:
        fail(str(exc))


def _finish(result: dict[str, Any], out: Optional[Path], plot: Optional[Path], plotter: Any = None) -> None:
    from flagembed._io import save_json

    if out is not None:
        save_json(out, result)
        typer.echo(f"wrote {out}")
    if plot is not None and plotter is not None:
        plotter(result, plot)
        typer.echo(f"wrote {plot}")


def _grid_table(result: dict[str, Any]) -> None:
    header = ["length"] + [f"d{d}" for d in result["depths"]] + ["mean"]
    rows = [[str(n)] + [f"{v:.2f}" for v in row] + [f"{sum(row) / len(row):.2f}"]
            for n, row in zip(result["lengths"], result["matrix"])]
    emit_table(header, rows)


@eval_app.command("passkey")
def passkey(
    model: str = MODEL,
    lengths: str = typer.Option("256,512,1024", help="Comma-separated prompt lengths in tokens."),
    depths: str = typer.Option("0,25,50,75,100", help="Comma-separated needle depths in percent."),
    samples: int = typer.Option(1, help="Prompts per cell."),
    seed: int = typer.Option(123, help="Seed of the passkeys."),
    max_new_tokens: int = typer.Option(8, help="Tokens to generate."),
    chat: str = CHAT,
    out: Optional[Path] = OUT,
    plot: Optional[Path] = PLOT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """Passkey retrieval accuracy over a length × depth grid."""
    from flagembed.longctx.harness import eval_passkey, plot_heatmap

    grid = _ints(lengths, "--lengths"), _ints(depths, "--depths")
    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    result = eval_passkey(lm, tok, *grid, seed=seed, samples=samples, max_new_tokens=max_new_tokens, chat=_chat(chat))
    _grid_table(result)
    _finish(result, out, plot, plot_heatmap)


@eval_app.command("needle")
def needle(
    model: str = MODEL,
    lengths: str = typer.Option("256,512,1024", help="Comma-separated prompt lengths in tokens."),
    depths: str = typer.Option("0,25,50,75,100", help="Comma-separated needle depths in percent."),
    haystack: Optional[list[Path]] = typer.Option(None, help="Haystack .txt files or folders (default: filler)."),
    max_new_tokens: int = typer.Option(50, help="Tokens to generate."),
    chat: str = CHAT,
    out: Optional[Path] = OUT,
    plot: Optional[Path] = PLOT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """Needle-in-a-haystack: ROUGE-L recall of the needle over a length × depth grid."""
    from flagembed.longctx.harness import eval_needle, plot_heatmap

    grid = _ints(lengths, "--lengths"), _ints(depths, "--depths")
    for p in haystack or []:
        if not p.exists():
            fail(f"--haystack: {p} does not exist")
    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    result = eval_needle(lm, tok, *grid, haystack=haystack or None, max_new_tokens=max_new_tokens, chat=_chat(chat))
    _grid_table(result)
    _finish(result, out, plot, plot_heatmap)


@eval_app.command("ppl")
def ppl(
    model: str = MODEL,
    data: Path = typer.Option(..., "--data", help="Text file (one document per line) or JSONL with a 'text' field."),
    lengths: str = typer.Option("256,512,1024", help="Comma-separated window lengths in tokens."),
    stride: int = typer.Option(0, help="Window stride; 0 scores the first L tokens of each long-enough text."),
    limit: Optional[int] = typer.Option(None, help="At most this many documents."),
    out: Optional[Path] = OUT,
    plot: Optional[Path] = PLOT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """Sliding-window perplexity at each length."""
    from flagembed._io import read_texts
    from flagembed.longctx.harness import perplexity_by_length, plot_ppl

    sizes = _ints(lengths, "--lengths")
    if not data.is_file():
        fail(f"--data: {data} is not a file")
    texts = [str(t) for t in read_texts(data)][:limit]
    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    try:
        result = perplexity_by_length(lm, tok, texts, sizes, stride=stride)
    except ValueError as exc:
        fail(str(exc))
    emit_table(["length", "docs", "tokens", "ppl"], [[str(r["max_length"]), str(r["documents"]), str(r["tokens"]),
                                                      f"{r['ppl']:.3f}"] for r in result["runs"]])
    _finish(result, out, plot, plot_ppl)


@eval_app.command("topic")
def topic(
    model: str = MODEL,
    data: Path = typer.Option(..., "--data", help="LongChat topic_retrieval JSON/JSONL (context, topics)."),
    limit: Optional[int] = typer.Option(None, help="At most this many rows."),
    max_new_tokens: int = typer.Option(50, help="Tokens to generate."),
    chat: str = CHAT,
    out: Optional[Path] = OUT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """LongChat topic retrieval accuracy by number of topics."""
    import json

    from flagembed._io import read_jsonl
    from flagembed.longctx.harness import eval_topic

    if not data.is_file():
        fail(f"--data: {data} is not a file")
    text = data.read_text(encoding="utf-8").lstrip()
    rows = json.loads(text) if text.startswith("[") else list(read_jsonl(data))
    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    try:
        result = eval_topic(lm, tok, rows[:limit], max_new_tokens=max_new_tokens, chat=_chat(chat))
    except ValueError as exc:
        fail(str(exc))
    emit_table(["topics", "tokens", "accuracy", "n"], [[k, f"{g['tokens']:.0f}", f"{g['accuracy']:.3f}", str(g["n"])]
                                                      for k, g in result["groups"].items()])
    _finish(result, out, None)


@eval_app.command("longbench")
def longbench(
    model: str = MODEL,
    data: Path = typer.Option(..., "--data", help="Folder with LongBench <task>.jsonl files (or data/<task>.jsonl)."),
    tasks: Optional[list[str]] = typer.Option(None, "--task", help="Tasks to run (default: every file present)."),
    max_length: int = typer.Option(31500, help="Prompt budget; longer prompts are cut in the middle."),
    limit: Optional[int] = typer.Option(None, help="At most this many rows per task."),
    infbench: bool = typer.Option(False, "--infbench", help="The folder holds InfiniteBench files instead."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap prompts in the chat template."),
    out: Optional[Path] = OUT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """LongBench (or InfiniteBench) with the official prompts and scorers, on a local copy of the data."""
    from flagembed.longctx.harness import eval_infbench, eval_longbench

    if not data.is_dir():
        fail(f"--data: {data} is not a folder")
    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    try:
        if infbench:
            result = eval_infbench(lm, tok, data, tasks or ("longbook_qa_eng",), max_length=max_length, limit=limit,
                                   chat=chat)
        else:
            result = eval_longbench(lm, tok, data, tasks, max_length=max_length, limit=limit, chat=chat)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = [[t, f"{s:.2f}"] for t, s in result["scores"].items()]
    emit_table(["task", "score"], rows + [["avg", f"{result['avg']:.2f}"]])
    _finish(result, out, None)


__all__ = ["eval_app", "longctx_app"]


@eval_app.command("mmlu")
def mmlu(
    model: str = MODEL,
    data: Path = typer.Option(..., "--data", help="MMLU folder (test/<subject>_test.csv) or one CSV file."),
    few_shot: int = typer.Option(0, help="Dev examples per subject in the prompt."),
    limit: Optional[int] = typer.Option(None, help="At most this many questions per subject."),
    out: Optional[Path] = OUT,
    rope_theta: Optional[float] = ROPE_THETA,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
    beacon: bool = BEACON,
) -> None:
    """Short-context retention: multiple-choice accuracy by answer likelihood."""
    from flagembed.longctx.retention import eval_mmlu

    lm, tok = _load(model, device, dtype, rope_theta, trust_remote_code, beacon)
    try:
        result = eval_mmlu(lm, tok, data, few_shot=few_shot, limit=limit)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = [[s, f"{r['accuracy']:.3f}", str(r["n"])] for s, r in result["subjects"].items()]
    emit_table(["subject", "accuracy", "n"], rows + [["all", f"{result['accuracy']:.3f}", str(result["n"])]])
    _finish(result, out, None)


@longctx_app.command("synth")
def synth(
    model: str = typer.Option(..., "--model", "-m", help="Model or tokenizer folder (lengths are its tokens)."),
    out: Path = typer.Option(..., "--out", "--output", "-o", help="JSONL file of chat rows."),
    n: int = typer.Option(100, "--rows", "-n", help="Number of rows."),
    lengths: str = typer.Option("4096", help="Comma-separated context lengths in tokens."),
    kinds: str = typer.Option("passkey,needle,kv", help="Comma-separated: passkey, needle, kv."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Synthetic long-context training rows (passkey / needle / key-value retrieval), no LLM needed."""
    from flagembed._io import atomic_write
    from flagembed.longctx.synthetic import synthetic_rows
    from flagembed.models import load_tokenizer, resolve_model_path

    try:
        tok = load_tokenizer(resolve_model_path(model, kind="tokenizer"))
        rows = synthetic_rows(tok, n, _ints(lengths, "--lengths"), [k.strip() for k in kinds.split(",")], seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    import json

    with atomic_write(out, "w") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    typer.echo(f"wrote {len(rows)} rows to {out}")


@longctx_app.command("qa")
def qa(
    docs: list[Path] = typer.Option(..., "--docs", help="Long documents: .txt files or folders of them."),
    endpoint: str = typer.Option(..., "--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1."),
    llm: str = typer.Option(..., "--llm", help="Model name at the endpoint."),
    out: Path = typer.Option(..., "--out", "--output", "-o", help="JSONL file of chat rows."),
    cache: Optional[Path] = typer.Option(None, help="JSONL response cache (default: <out>.cache.jsonl)."),
    questions: int = typer.Option(4, help="Questions per chunk."),
    chunk_chars: int = typer.Option(16000, help="Characters per chunk sent to the LLM."),
    max_retries: int = typer.Option(3, help="Retries on connection errors, 429 and 5xx."),
) -> None:
    """Long-document QA conversations written by an OpenAI-compatible chat endpoint (API key: OPENAI_API_KEY)."""
    import json

    from flagembed._io import atomic_write
    from flagembed.longctx.harness.prompts import read_haystack
    from flagembed.longctx.qa_builder import ChatClient, build_qa_rows

    texts = []
    for d in docs:
        if not d.exists():
            fail(f"--docs: {d} does not exist")
        texts.extend(read_haystack([f]) for f in (sorted(d.glob("*.txt")) if d.is_dir() else [d]))
    client = ChatClient(endpoint, llm, cache=cache or out.with_suffix(".cache.jsonl"), max_retries=max_retries)
    rows, stats = build_qa_rows(texts, client, questions=questions, chunk_chars=chunk_chars)
    with atomic_write(out, "w") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    emit_table(["item", "value"], [[k, str(v)] for k, v in stats.items()] + [["calls", str(client.calls)]])


@longctx_app.command("extend")
def extend_cmd(
    model: str = MODEL,
    data: list[Path] = typer.Option(..., "--data", help="JSONL rows: 'messages' (chat) or 'text'; repeatable."),
    out: Path = typer.Option(..., "--out", "--output", "-o", help="Run folder: checkpoints, adapter/, merged/."),
    max_length: int = typer.Option(8192, help="Longest training row in tokens (longer chat rows are dropped)."),
    rope_theta: Optional[float] = typer.Option(None, "--rope-theta", help="New RoPE base (e.g. 2e8)."),
    rope_type: str = typer.Option("default", help="default, linear, dynamic, yarn or llama3."),
    rope_factor: Optional[float] = typer.Option(None, help="Scaling factor for non-default RoPE types."),
    rope_original_max: Optional[int] = typer.Option(None, help="Original context for yarn/llama3."),
    lora_rank: int = typer.Option(32, help="LoRA rank."),
    lora_alpha: int = typer.Option(16, help="LoRA alpha."),
    lora_dropout: float = typer.Option(0.0, help="LoRA dropout."),
    lora_targets: str = typer.Option("q_proj,k_proj,v_proj,o_proj", help="Comma-separated module names."),
    train_embeddings: bool = typer.Option(True, "--train-embeddings/--no-train-embeddings",
                                          help="Train embed_tokens fully (modules_to_save)."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="QLoRA: NF4 base with double quantisation."),
    dtype: str = DTYPE,
    learning_rate: float = typer.Option(5e-5, "--lr", help="Learning rate (linear decay)."),
    epochs: float = typer.Option(1.0, help="Epochs."),
    max_steps: int = typer.Option(-1, help="Stop after this many steps (-1: epochs)."),
    batch_size: int = typer.Option(1, help="Rows per device step."),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    chunk_size: int = typer.Option(4096, help="Positions per cross-entropy chunk."),
    pack: bool = typer.Option(False, "--pack", help="Pack text rows into full max-length rows."),
    group_by_length: bool = typer.Option(True, "--group-by-length/--no-group-by-length", help="Length-grouped rows."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default: each epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    merge: bool = typer.Option(False, "--merge", help="Also write <out>/merged, a plain full model."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Extend a causal LM's context: RoPE change + (Q)LoRA fine-tuning with chunked cross-entropy."""
    from flagembed.longctx.extend import ExtendConfig, extend

    cfg = ExtendConfig(
        model=model, data=[str(d) for d in data], output_dir=str(out), max_length=max_length, rope_theta=rope_theta,
        rope_type=rope_type, rope_factor=rope_factor, rope_original_max=rope_original_max, lora_rank=lora_rank,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()], train_embeddings=train_embeddings,
        load_in_4bit=load_in_4bit, dtype=dtype, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, grad_accum=grad_accum, chunk_size=chunk_size, pack=pack,
        group_by_length=group_by_length, save_steps=save_steps, resume=resume, merge=merge,
        trust_remote_code=trust_remote_code,
    )
    try:
        summary = extend(cfg)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    emit_table(["item", "value"], [[k, str(v)] for k, v in summary.items()])


@longctx_app.command("merge")
def merge_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="The adapter/ folder written by 'longctx extend'."),
    out: Path = typer.Option(..., "--out", "--output", "-o", help="Folder for the merged full model."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the one recorded in the adapter)."),
    dtype: str = DTYPE,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Fold an extension adapter into its base model (RoPE included); loads with plain AutoModelForCausalLM."""
    from flagembed.longctx.extend import merge_adapter

    if not (adapter / "adapter_config.json").is_file():
        fail(f"--adapter: {adapter} holds no adapter_config.json")
    try:
        path = merge_adapter(adapter, out, base_model=base, dtype=dtype, trust_remote_code=trust_remote_code)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}")
