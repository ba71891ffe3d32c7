"""Embedder: dense text embeddings from any BGE/BERT/XLM-R/decoder checkpoint."""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from flagembed.engine import EngineConfig, Tokenized, resolve_dtype, run_batches, tokenize
from flagembed.engine.backends import (
    BACKENDS,
    QUANTIZE_CHOICES,
    OnnxRunner,
    OpenVinoRunner,
    export_backbone,
    is_export_folder,
    load_runner,
)
from flagembed.engine.devices import DeviceLike, DType, resolve_devices
from flagembed.engine.hardware import set_torch_threads
from flagembed.engine.pipeline import run_pipelined
from flagembed.engine.pool import WorkerPool, WorkerPoolError, concat_results
from flagembed.inference.inputs import apply_instruction, as_corpus_list, as_text_list
from flagembed.inference.quantize import Precision, quantize
from flagembed.models import (
    EncoderSettings,
    TextEncoder,
    load_backbone,
    load_tokenizer,
    open_checkpoint,
    resolve_settings,
    task_instructions,
)

logger = logging.getLogger(__name__)

ConvertTo = Literal["numpy", "torch"]


class Embedder:
    """Encode texts into dense vectors with a model's intended pooling, instructions and normalization.

    Settings come from, in order: the arguments, the checkpoint's sentence-transformers config,
    flagembed's model registry, and defaults (CLS pooling, L2 normalization, 512 tokens).
    ``task`` (``qa``, ``convsearch``, ``chat``, ``lrlm``, ``icl``, ``tool``) picks LLM-Embedder's query and
    passage instructions for that task (``flagembed.models.TASKS``).

    Example:
        >>> emb = Embedder("all-MiniLM-L6-v2")
        >>> q = emb.encode_queries(["what is BGE?"])
        >>> d = emb.encode_corpus([{"title": "BGE", "text": "BAAI general embedding"}])
        >>> scores = q @ d.T
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        pooling: Literal["cls", "mean", "last_token"] | None = None,
        normalize: bool | None = None,
        query_instruction: str | None = None,
        query_instruction_format: str | None = None,
        passage_instruction: str | None = None,
        passage_instruction_format: str | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        truncate_dim: int | None = None,
        batch_size: int = 256,
        max_tokens_per_batch: int | None = None,
        device: DeviceLike | Sequence[DeviceLike] = None,
        dtype: DType | torch.dtype = "auto",
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool | None = None,
        show_progress: bool | None = None,
        backend: Literal["torch", "onnx", "openvino"] = "torch",
        quantize: Literal["int8"] | None = None,
        num_threads: int | None = None,
        pad_to_multiple_of: int | None = None,
        task: str | None = None,
    ) -> None:
        _check_backend(backend, quantize)
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        ckpt = open_checkpoint(
            model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
        path, remote = ckpt.path, ckpt.trust_remote_code
        self.trust_remote_code: bool = remote  # whether the checkpoint's own code was allowed to run
        self.task = task  # LLM-Embedder task: its query and passage instructions (explicit ones win)
        if task is not None:
            task_query, task_passage = task_instructions(model_name_or_path, task)
            query_instruction = task_query if query_instruction is None else query_instruction
            passage_instruction = task_passage if passage_instruction is None else passage_instruction
        self.settings: EncoderSettings = resolve_settings(
            model_name_or_path,
            path,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            query_instruction=query_instruction,
            query_instruction_format=query_instruction_format,
            passage_instruction=passage_instruction,
            passage_instruction_format=passage_instruction_format,
            truncate_dim=truncate_dim,
            revision=revision,
        )
        spec = self.settings.spec
        onnx_device = "cpu" if backend != "torch" and device is None else device
        self.devices = resolve_devices(onnx_device)  # several devices: one worker process each (see encode)
        self.device = self.devices[0]
        if backend != "torch" and (len(self.devices) > 1 or self.device.type != "cpu"):
            raise ValueError(f"backend={backend!r} runs on one CPU device; got {[str(d) for d in self.devices]}")
        self.dtype = resolve_dtype(dtype, self.device, preferred=spec.dtype if spec else "fp16", cpu_bf16=True)
        if backend == "torch" and self.device.type == "cpu" and (num_threads is not None or len(self.devices) == 1):
            set_torch_threads(num_threads)  # process-wide: one per physical core unless num_threads says otherwise
        self.tokenizer = load_tokenizer(path, trust_remote_code=remote)
        if is_export_folder(path):  # written by `flagembed export --out`: graph + config, no torch weights
            backbone = export_backbone(path, backend, trust_remote_code=remote)
        else:
            backbone = self._load_backbone(path, remote)
        self.encoder = TextEncoder(
            backbone, self.settings.pooling, self.settings.normalize, self.settings.truncate_dim
        ).to(self.device)
        self.encoder.eval()
        _check_truncate_dim(self.settings.truncate_dim, self.encoder.hidden_size)
        self.backend = backend
        self.onnx: OnnxRunner | OpenVinoRunner | None = None  # runs the backbone; pooling stays in encoder
        if backend != "torch":
            # OpenVINO computes the non-int8 ops in the resolved dtype: bf16 (auto on AMX/AVX512-BF16 CPUs) or f32
            hint = ("bf16" if self.dtype == torch.bfloat16 else "f32") if backend == "openvino" else None
            self.onnx, _ = load_runner(
                backend, path, quantize=quantize, num_threads=num_threads, revision=revision,
                trust_remote_code=remote, precision_hint=hint,
            )  # fmt: skip
        self._length_warnings: set[tuple[int, int]] = set()
        self.max_length = self._cap_length(self.settings.max_length)
        self.query_max_length = self._cap_length(query_max_length) if query_max_length is not None else self.max_length
        self.passage_max_length = (
            self._cap_length(passage_max_length) if passage_max_length is not None else self.max_length
        )
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.pad_to_multiple_of = pad_to_multiple_of  # padded batch lengths rounded up (e.g. 8 for Gemma2)
        self.show_progress = show_progress
        self.last_truncated = 0  # how many inputs the latest call cut to max_length
        # On accelerators, tokenize the next chunk of this many texts while the model runs the current one;
        # on CPU both would compete for the same cores, so tokenization runs first (None).
        self.pipeline_chunk_size: int | None = 4096 if self.device.type != "cpu" else None
        self._pool: WorkerPool | None = None
        self._pool_factory = functools.partial(
            Embedder,
            str(path),
            pooling=self.settings.pooling,
            normalize=self.settings.normalize,
            max_length=self.max_length,
            truncate_dim=self.settings.truncate_dim,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            dtype=dtype,
            trust_remote_code=remote,
            show_progress=False,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Output dimension (after ``truncate_dim``)."""
        hidden = self.encoder.hidden_size
        return min(hidden, self.settings.truncate_dim) if self.settings.truncate_dim else hidden

    @property
    def engine_config(self) -> EngineConfig:
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return EngineConfig(
            device=self.device,
            batch_size=self.batch_size,
            max_tokens_per_batch=self.max_tokens_per_batch,
            pad_id=int(pad_id),
            padding_side="left" if getattr(tok, "padding_side", "right") == "left" else "right",
            pad_to_multiple_of=self.pad_to_multiple_of,
        )

    def _cap_length(self, length: int) -> int:
        if length < 1:
            raise ValueError(f"max_length must be >= 1, got {length}")
        limit = getattr(self.tokenizer, "model_max_length", None)
        positions = getattr(self.encoder.backbone.config, "max_position_embeddings", None)
        if isinstance(positions, int) and getattr(self.encoder.backbone.config, "model_type", "") in (
            "xlm-roberta",
            "roberta",
            "camembert",
        ):
            positions -= 2  # RoBERTa-style position ids start after the padding index
        for cap in (limit, positions):
            if isinstance(cap, int) and 0 < cap < 1_000_000 and length > cap:
                if (length, cap) not in self._length_warnings:  # once per value, not per call
                    self._length_warnings.add((length, cap))
                    logger.warning("max_length %d exceeds the model's limit %d; using %d", length, cap, cap)
                length = cap
        return length

    # ------------------------------------------------------------------ public API
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        convert_to: ConvertTo = "numpy",
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts as they are (plus ``instruction`` if given).

        Texts longer than ``max_length`` tokens are truncated (``self.last_truncated`` counts them).
        A single string returns a 1-D vector; an empty list returns shape ``(0, dim)``.

        Args:
            texts: a string or a list of strings.
            precision: ``float32`` or a quantized form (``int8``, ``uint8``, ``binary``, ``ubinary``);
                see :mod:`flagembed.inference.quantize` for the calibration (``ranges``).
            convert_to: ``numpy`` (float32 array) or ``torch`` (float32 tensor; float32 precision only).

        Raises:
            TypeError: an item is not a string (the message names its index).
        """
        items, single = as_text_list(texts)
        items = apply_instruction(items, instruction, instruction_format or "{}{}")
        emb = self._encode_texts(
            items,
            max_length=self._cap_length(max_length) if max_length is not None else self.passage_max_length,
            batch_size=batch_size,
            normalize=normalize,
            truncate_dim=truncate_dim,
            show_progress=show_progress,
        )
        return self._convert(emb, single, convert_to, precision, ranges)

    def encode_queries(self, queries: str | Sequence[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed queries with the model's query instruction and ``query_max_length``."""
        kwargs.setdefault("max_length", self.query_max_length)
        kwargs.setdefault("instruction", self.settings.query_instruction)
        kwargs.setdefault("instruction_format", self.settings.query_instruction_format)
        return self.encode(queries, **kwargs)

    def encode_corpus(self, corpus: Any, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed passages (strings or ``{"title","text"}`` dicts) with the passage instruction, if any."""
        texts, single = as_corpus_list(corpus)
        kwargs.setdefault("max_length", self.passage_max_length)
        kwargs.setdefault("instruction", self.settings.passage_instruction)
        kwargs.setdefault("instruction_format", self.settings.passage_instruction_format)
        return self.encode(texts[0] if single else texts, **kwargs)

    def close(self) -> None:
        """Stop the per-device worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _load_backbone(self, path: Any, trust_remote_code: bool) -> torch.nn.Module:
        """The torch backbone of ``path`` (a subclass may build it from the config and load weights itself)."""
        return load_backbone(path, dtype=self.dtype, trust_remote_code=trust_remote_code)

    def _encode_parallel(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        """Split ``texts`` into contiguous chunks, one per device worker; errors and crashes propagate."""
        parts = self._map_workers("_encode_chunk", texts, **kwargs)
        self.last_truncated = sum(n for _, n in parts)
        return concat_results([emb for emb, _ in parts])

    def _map_workers(self, method: Any, items: list[Any], **kwargs: Any) -> list[Any]:
        """``WorkerPool.map`` on the per-device workers (started on first use, restarted after a worker died)."""
        if self._pool is None:
            self._pool = WorkerPool(self._pool_factory, [str(d) for d in self.devices])
            weakref.finalize(self, self._pool.close)
        try:
            return self._pool.map(method, items, **kwargs)
        except WorkerPoolError:
            self._pool = None  # the pool shut itself down; the next call starts fresh workers
            raise

    def _encode_chunk(self, texts: list[str], **kwargs: Any) -> tuple[np.ndarray, int]:
        """Worker side of :meth:`_encode_parallel`: embeddings plus the truncation count."""
        emb = self._encode_texts(texts, **kwargs)
        return emb, self.last_truncated

    def tokenize(self, texts: Sequence[str], max_length: int) -> Tokenized:
        """Token ids for ``texts`` (no padding), counting truncations in ``last_truncated``."""
        tok = tokenize(self.tokenizer, texts, max_length)
        self.last_truncated = tok.num_truncated
        if tok.num_truncated:
            logger.info("%d of %d inputs were truncated to %d tokens", tok.num_truncated, len(texts), max_length)
        return tok

    def encode_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed texts that are already token ids (special tokens included, no padding), in input order.

        For callers whose prompts need their own tokenization (e.g. the ICL query layout of
        :class:`~flagembed.inference.compat.FlagICLModel`); batching, padding and pooling are the usual ones.
        """
        _check_truncate_dim(truncate_dim, self.encoder.hidden_size)
        ids = [list(map(int, row)) for row in token_ids]
        for i, row in enumerate(ids):
            if not row:
                raise ValueError(f"token_ids[{i}] is empty; every text needs at least one token")
        if not ids:
            return np.zeros((0, min(truncate_dim or self.dim, self.dim)), dtype=np.float32)
        if len(self.devices) > 1 and len(ids) > 1:
            if self._pool is None:
                self._pool = WorkerPool(self._pool_factory, [str(d) for d in self.devices])
                weakref.finalize(self, self._pool.close)
            kwargs = dict(batch_size=batch_size, normalize=normalize, truncate_dim=truncate_dim, show_progress=False)
            return concat_results(self._pool.map("encode_ids", ids, **kwargs))
        with torch.inference_mode():
            return self._run_ids(ids, batch_size, normalize, truncate_dim, show_progress)

    def _step(self, normalize: bool | None, truncate_dim: int | None) -> Any:
        def step(batch: Any) -> torch.Tensor:
            if self.onnx is not None:
                hidden = torch.from_numpy(self.onnx.hidden_states(batch.input_ids, batch.attention_mask))
                return self.encoder.embed(hidden, batch.attention_mask, normalize=normalize, truncate_dim=truncate_dim)
            return self.encoder(batch.input_ids, batch.attention_mask, normalize=normalize, truncate_dim=truncate_dim)

        return step

    def _run_ids(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int | None,
        normalize: bool | None,
        truncate_dim: int | None,
        show_progress: bool | None,
    ) -> np.ndarray:
        config = self.engine_config
        if batch_size is not None:
            config.batch_size = batch_size
        show = self.show_progress if show_progress is None else show_progress
        step = self._step(normalize, truncate_dim)
        return run_batches(ids, step, config, show_progress=show, desc="Embedding")

    def _encode_texts(
        self,
        texts: list[str],
        *,
        max_length: int,
        batch_size: int | None,
        normalize: bool | None,
        truncate_dim: int | None,
        show_progress: bool | None,
    ) -> np.ndarray:
        _check_truncate_dim(truncate_dim, self.encoder.hidden_size)
        dim = min(truncate_dim or self.dim, self.dim)
        if not texts:
            self.last_truncated = 0
            return np.zeros((0, dim), dtype=np.float32)
        if len(self.devices) > 1 and len(texts) > 1:
            return self._encode_parallel(
                texts,
                max_length=max_length,
                batch_size=batch_size,
                normalize=normalize,
                truncate_dim=truncate_dim,
                show_progress=False,
            )
        chunk = self.pipeline_chunk_size
        with torch.inference_mode():
            if chunk is not None and len(texts) > chunk:
                config = self.engine_config
                if batch_size is not None:
                    config.batch_size = batch_size
                out, self.last_truncated = run_pipelined(
                    texts,
                    lambda part: tokenize(self.tokenizer, part, max_length),
                    self._step(normalize, truncate_dim),
                    config,
                    chunk_size=chunk,
                    show_progress=self.show_progress if show_progress is None else show_progress,
                    desc="Embedding",
                )
                return out
            tok = self.tokenize(texts, max_length)
            return self._run_ids(tok.ids, batch_size, normalize, truncate_dim, show_progress)

    def _convert(
        self,
        emb: np.ndarray,
        single: bool,
        convert_to: ConvertTo,
        precision: Precision,
        ranges: np.ndarray | None,
    ) -> np.ndarray | torch.Tensor:
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"unknown convert_to {convert_to!r}; valid: numpy, torch")
        out: np.ndarray | torch.Tensor = emb
        if precision != "float32":
            if convert_to == "torch":
                raise ValueError("quantized precisions are returned as numpy arrays; use convert_to='numpy'")
            out = quantize(emb, precision, ranges=ranges) if len(emb) else emb
        elif convert_to == "torch":
            out = torch.from_numpy(emb)
        return out[0] if single else out


def _check_truncate_dim(truncate_dim: int | None, hidden: int) -> None:
    if truncate_dim is not None and not 1 <= truncate_dim <= hidden:
        raise ValueError(f"truncate_dim must be between 1 and the model's dimension {hidden}, got {truncate_dim}")


def _check_backend(backend: str, quantize: str | None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantize {quantize!r}; valid: None, {', '.join(QUANTIZE_CHOICES)}")
    if quantize is not None and backend == "torch":
        raise ValueError(f"quantize={quantize!r} needs backend='openvino' (NNCF static int8) or 'onnx'")
