"""LM-Cocktail: merge models by a weighted sum of their parameters (REFERENCE.md §5).

``mix_models`` loads every model's tensors and merges them; ``mix_models_by_layers`` gives the same
bits while reading one tensor at a time and writing each merged tensor straight to disk, so memory
stays at a few tensors whatever the number or size of the models. ``mix_models_with_data`` picks the
weights from a few examples: ``softmax(-loss_i / temperature)``.

Differences from the ``LM_Cocktail`` package (on purpose): the weights must sum to 1 within 1e-3 in
both directions (the reference only checks ``sum - 1 <= 1e-3``); half-precision parameters are summed
in float32 and cast back once (the reference sums in the parameter dtype); integer buffers come from
the first model (the reference takes the last one); an encoder keeps the first model's
sentence-transformers layout, or gets one with its registry pooling (the reference always writes CLS);
BGE-M3 head files are merged too; the output folder appears only when complete.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn

from flagembed._compat import from_pretrained
from flagembed.merge.checkpoint import HEAD_FILES, Checkpoint, find_checkpoint, write_st_streaming
from flagembed.merge.folder import check_output, copy_support_files, staging_folder, write_st_config
from flagembed.models import HubOptions, resolve_model_path, resolve_settings

logger = logging.getLogger(__name__)

ModelType = Literal["encoder", "reranker", "decoder"]
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)
_AUTO_CLASSES = {
    "encoder": "AutoModel",
    "reranker": "AutoModelForSequenceClassification",
    "decoder": "AutoModelForCausalLM",
}
WEIGHT_TOLERANCE = 1e-3


def check_model_type(model_type: str) -> ModelType:
    """Validate ``model_type``; the error lists the valid ones."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; valid: {', '.join(MODEL_TYPES)}")
    return model_type  # type: ignore[return-value]


def check_weights(weights: Sequence[float], num_models: int, allow_negative: bool = False) -> list[float]:
    """One finite weight per model, summing to 1 (within 1e-3), non-negative unless ``allow_negative``.

    Raises:
        TypeError: a weight is not a real number.
        ValueError: wrong count, NaN/inf, a negative weight, or a sum away from 1.
    """
    out: list[float] = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) and not hasattr(w, "__float__"):
            raise TypeError(f"weight {i} is {w!r} ({type(w).__name__}); weights must be numbers")
        value = float(w)
        if not math.isfinite(value):
            raise ValueError(f"weight {i} is {value}; weights must be finite")
        if value < 0 and not allow_negative:
            raise ValueError(f"weight {i} is {value}; weights must be >= 0 (pass allow_negative=True to subtract)")
        out.append(value)
    if len(out) != num_models:
        raise ValueError(f"got {len(out)} weights for {num_models} models; give exactly one weight per model")
    total = math.fsum(out)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"weights {out} sum to {total:.6g}; they must sum to 1 (within {WEIGHT_TOLERANCE})")
    return out


def merge_tensor(read: Callable[[int], torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_i weights[i] * read(i)`` for a floating tensor; other tensors (integer buffers, masks) are model 0's.

    The sum runs in float32 (or wider) and is cast back to model 0's dtype once. ``read(i)`` is called
    once per model, in order, so callers may stream tensors from disk; every path uses this function,
    which is why ``mix_models`` and ``mix_models_by_layers`` give identical bits. The tensors ``read``
    returns for models 1.. may be scaled in place: hand over copies you own.
    """
    first = read(0)
    if not first.is_floating_point():
        return first.clone()
    out_dtype = first.dtype
    acc_dtype = torch.promote_types(out_dtype, torch.float32)
    acc = first.to(acc_dtype) * weights[0]
    del first
    for i in range(1, len(weights)):
        # in place on the freshly read tensor: same arithmetic as ``w * t``, one temporary fewer
        acc += read(i).to(acc_dtype).mul_(weights[i])
    return acc.to(out_dtype)


@dataclass
class _Plan:
    """Everything validated before anything is read in full or written."""

    names: list[str]
    paths: list[Path]
    model_type: ModelType
    weights: list[float]
    checkpoints: list[Checkpoint]
    heads: list[str]
    output: Path | None


def _plan(
    models: Sequence[str | os.PathLike[str]],
    model_type: str,
    weights: Sequence[float] | None,
    output_path: str | os.PathLike[str] | None,
    *,
    allow_negative: bool,
    overwrite: bool,
    return_model: bool,
    hub: HubOptions | None,
) -> _Plan:
    if isinstance(models, (str, os.PathLike)) or len(models) == 0:
        raise ValueError(f"give a non-empty list of models to merge, got {models!r}")
    kind = check_model_type(model_type)
    checked = check_weights(weights, len(models), allow_negative) if weights is not None else []
    if output_path is None and not return_model:
        raise ValueError("nothing to do: output_path is None and return_model is False")
    output = check_output(output_path, overwrite) if output_path is not None else None
    paths = [resolve_model_path(m, hub) for m in models]
    checkpoints = [find_checkpoint(p) for p in paths]
    check_compatible(checkpoints, [os.fspath(m) for m in models])
    heads = _heads(paths)
    return _Plan([os.fspath(m) for m in models], paths, kind, checked, checkpoints, heads, output)


def check_compatible(checkpoints: Sequence[Checkpoint], names: Sequence[str]) -> None:
    """Same parameter names, shapes and kinds (floating or not) in every model.

    Raises:
        ValueError: names the model, the first differing parameters and the shapes.
    """
    ref = checkpoints[0].tensors
    for i, ck in enumerate(checkpoints[1:], 1):
        # integer buffers (e.g. ``position_ids``, saved by older transformers only) may differ: model 0's are kept
        missing = sorted(k for k in set(ref) - set(ck.tensors) if ref[k].dtype.is_floating_point)
        extra = sorted(k for k in set(ck.tensors) - set(ref) if ck.tensors[k].dtype.is_floating_point)
        if missing or extra:
            raise ValueError(
                f"model {i} ({names[i]!r}) has different parameters from model 0 ({names[0]!r}): "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
                f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)}); "
                "only models of one architecture can be merged"
            )
        for key, info in ref.items():
            other = ck.tensors.get(key)
            if other is None:
                continue
            if other.shape != info.shape:
                raise ValueError(
                    f"model {i} ({names[i]!r}): parameter {key!r} has shape {list(other.shape)}, model 0 has "
                    f"{list(info.shape)}; only models of one architecture can be merged"
                )
            if other.dtype.is_floating_point != info.dtype.is_floating_point:
                raise ValueError(
                    f"model {i} ({names[i]!r}): parameter {key!r} is {other.dtype}, model 0 has {info.dtype}"
                )


def _heads(paths: Sequence[Path]) -> list[str]:
    """BGE-M3 head files present in every model (merged); a head only some models have is model 0's."""
    heads = []
    for name in HEAD_FILES:
        have = [(p / name).is_file() for p in paths]
        if all(have):
            heads.append(name)
        elif have[0]:
            logger.warning("%s is missing from some models; copying model 0's unmerged", name)
            heads.append(name)
        elif any(have):
            logger.warning("%s is missing from model 0; it is left out of the merged model", name)
    return heads


def _merge_heads(plan: _Plan, dest: Path) -> None:
    for name in plan.heads:
        present = [i for i, p in enumerate(plan.paths) if (p / name).is_file()]
        states = [torch.load(plan.paths[i] / name, map_location="cpu", weights_only=True) for i in present]
        weights = plan.weights if len(present) == len(plan.paths) else [1.0]
        if len(present) == len(plan.paths):
            for i, s in enumerate(states[1:], 1):
                if set(s) != set(states[0]) or any(s[k].shape != states[0][k].shape for k in s):
                    raise ValueError(f"{name} of model {i} ({plan.names[i]!r}) does not match model 0's")
        merged = {k: merge_tensor(lambda i, k=k, s=states: s[i][k], weights) for k in states[0]}
        torch.save(merged, dest / name)


def _finish(
    plan: _Plan,
    write_weights: Callable[[Path], None],
    overwrite: bool,
    return_model: bool,
    trust_remote_code: bool,
) -> nn.Module | None:
    """Write the folder (support files, merged weights, heads, sentence-transformers config), then load it."""
    logger.info("merging %s with weights %s", plan.names, plan.weights)

    def build(dest: Path) -> None:
        copy_support_files(plan.paths[0], dest)
        write_weights(dest / "model.safetensors")
        _merge_heads(plan, dest)
        if plan.model_type == "encoder" and not (dest / "modules.json").is_file():
            s = resolve_settings(plan.names[0], plan.paths[0])
            write_st_config(dest, _hidden_size(plan.paths[0]), s.pooling, s.normalize, s.max_length)

    if plan.output is not None:
        with staging_folder(plan.output, overwrite) as dest:
            build(dest)
        return load_merged(plan.output, plan.model_type, trust_remote_code) if return_model else None
    with tempfile.TemporaryDirectory(prefix="flagembed-merge-") as tmp:
        build(Path(tmp))
        return load_merged(Path(tmp), plan.model_type, trust_remote_code)


def _hidden_size(path: Path) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    return int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0))


def load_merged(path: Path, model_type: str, trust_remote_code: bool = False) -> nn.Module:
    """The model in ``path`` with the transformers Auto class of ``model_type``, on CPU, eval mode."""
    import transformers

    cls = getattr(transformers, _AUTO_CLASSES[check_model_type(model_type)])
    model = from_pretrained(cls, str(path), trust_remote_code=trust_remote_code)
    return model.eval()


def mix_models(
    model_names_or_paths: Sequence[str | os.PathLike[str]],
    model_type: ModelType,
    weights: Sequence[float],
    output_path: str | os.PathLike[str] | None = None,
    *,
    allow_negative: bool = False,
    overwrite: bool = False,
    return_model: bool = True,
    hub: HubOptions | None = None,
    trust_remote_code: bool = False,
) -> nn.Module | None:
    """Merge models by ``sum_i weights[i] * params_i`` and save a complete folder to ``output_path``.

    Args:
        model_names_or_paths: local folders, packaged model names or hub ids, all of one architecture;
            the first one gives the config, tokenizer and sentence-transformers files.
        model_type: ``encoder`` (embedders, ``AutoModel``), ``reranker`` (sequence classifiers) or
            ``decoder`` (causal LMs); decides the returned class and, for encoders, the ST config.
        weights: one per model, summing to 1; negative only with ``allow_negative``.
        output_path: folder to create (must be absent or empty unless ``overwrite``).
        return_model: load and return the merged model (else return ``None``).

    Returns:
        The merged model (transformers Auto class of ``model_type``) or ``None``.

    Raises:
        ValueError: bad weights, mismatched architectures or an occupied output folder; nothing is
            written then.
    """
    plan = _plan(
        model_names_or_paths,
        model_type,
        weights,
        output_path,
        allow_negative=allow_negative,
        overwrite=overwrite,
        return_model=return_model,
        hub=hub,
    )

    def write(target: Path) -> None:
        from safetensors.torch import save_file

        states = [ck.load_all() for ck in plan.checkpoints]
        merged = {k: merge_tensor(lambda i, k=k: states[i][k], plan.weights) for k in plan.checkpoints[0].tensors}
        states.clear()
        save_file(merged, str(target), metadata={"format": "pt"})

    return _finish(plan, write, overwrite, return_model, trust_remote_code)


def mix_models_by_layers(
    model_names_or_paths: Sequence[str | os.PathLike[str]],
    model_type: ModelType,
    weights: Sequence[float],
    output_path: str | os.PathLike[str] | None = None,
    *,
    allow_negative: bool = False,
    overwrite: bool = False,
    return_model: bool = True,
    hub: HubOptions | None = None,
    trust_remote_code: bool = False,
) -> nn.Module | None:
    """``mix_models`` with the same bits, holding only a few tensors in memory at any time.

    Each output tensor is merged from the models' files one tensor at a time and written to the
    output file at once (safetensors inputs are read without memory-mapping). Arguments, return
    value and errors are those of :func:`mix_models`.
    """
    plan = _plan(
        model_names_or_paths,
        model_type,
        weights,
        output_path,
        allow_negative=allow_negative,
        overwrite=overwrite,
        return_model=return_model,
        hub=hub,
    )
    write_fn = _streaming_writer(plan)
    return _finish(plan, write_fn, overwrite, return_model, trust_remote_code)


def _streaming_writer(plan: _Plan) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        from contextlib import ExitStack

        ref = plan.checkpoints[0].tensors
        specs = {k: (info.dtype, info.shape) for k, info in ref.items()}
        with ExitStack() as stack:
            readers = [stack.enter_context(ck.reader()) for ck in plan.checkpoints]
            write_st_streaming(target, specs, lambda k: merge_tensor(lambda i: readers[i](k), plan.weights))

    return write


class DataMix(NamedTuple):
    """What ``mix_models_with_data`` found and built."""

    weights: list[float]
    losses: list[float]
    model: Any  # nn.Module | None


def mix_models_with_data(
    model_names_or_paths: Sequence[str | os.PathLike[str]],
    model_type: ModelType,
    example_data: Sequence[dict[str, Any]],
    temperature: float = 5.0,
    batch_size: int = 2,
    max_input_length: int = 2048,
    neg_number: int = 7,
    output_path: str | os.PathLike[str] | None = None,
    *,
    by_layers: bool = False,
    overwrite: bool = False,
    return_model: bool = True,
    hub: HubOptions | None = None,
    trust_remote_code: bool = False,
    **loss_options: Any,
) -> DataMix:
    """Weights from a few examples, ``softmax(-loss_i / temperature)``, then ``mix_models``.

    Args:
        example_data: decoder: ``{"input", "output"}``; encoder and reranker: ``{"query", "pos": [...],
            "neg": [...]}`` (REFERENCE.md §5).
        temperature: > 0; lower sharpens the weights towards the model with the lowest loss.
        batch_size: queries per contrastive group (encoder) / items per forward pass.
        max_input_length: tokens per text (capped by the model's own maximum for encoders).
        neg_number: negatives sampled per query (encoder, reranker); fewer are repeated.
        by_layers: merge with :func:`mix_models_by_layers`.
        loss_options: ``seed``, ``device``, ``dtype``, ``pooling``, ``show_progress`` for
            :func:`flagembed.merge.example_losses`.

    Returns:
        ``DataMix(weights, losses, model)``; unlike the reference (which returns only the model), the
        weights and per-model losses come back too.

    Raises:
        ValueError: empty or malformed examples, a non-positive temperature, or what ``mix_models`` raises.
    """
    from flagembed.merge.losses import check_examples, example_losses, loss_weights

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    kind = check_model_type(model_type)
    check_examples(example_data, kind, neg_number)
    plan = _plan(
        model_names_or_paths,
        kind,
        None,
        output_path,
        allow_negative=False,
        overwrite=overwrite,
        return_model=return_model,
        hub=hub,
    )
    losses = example_losses(
        plan.paths,
        kind,
        example_data,
        batch_size=batch_size,
        max_input_length=max_input_length,
        neg_number=neg_number,
        trust_remote_code=trust_remote_code,
        **loss_options,
    )
    weights = loss_weights(losses, temperature)
    logger.info("example losses %s -> weights %s", losses, weights)
    merge = mix_models_by_layers if by_layers else mix_models
    model = merge(
        plan.names,
        kind,
        weights,
        output_path,
        overwrite=overwrite,
        return_model=return_model,
        hub=hub,
        trust_remote_code=trust_remote_code,
    )
    return DataMix(weights=weights, losses=losses, model=model)
