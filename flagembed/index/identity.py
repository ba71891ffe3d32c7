"""What identifies the model behind an index, and how a saved index reopens that model.

The identity (recorded in every manifest and compared on load) is what decides the vectors: a
fingerprint of the resolved weight files plus the settings (class, pooling, normalization,
instructions, dims). How the model was spelled (a registry name, a hub id, a relative folder) is not
part of it; that goes into the *source* (name, absolute folder, revision, whether remote code ran),
which is only used to find the weights again, from any working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flagembed.index.storage import IndexMismatchError
from flagembed.inference import Embedder, M3Embedder, VisualEmbedder
from flagembed.models import HubOptions, resolve_model_path, weights_fingerprint

_HUB_KEYS = ("cache_dir", "token", "local_files_only")


def model_info(embedder: Embedder) -> dict[str, Any]:
    """The identity of an embedder's vectors: recorded in index manifests, hashed and compared on load."""
    s = embedder.settings
    info: dict[str, Any] = {
        "weights": weights_fingerprint(s.path),
        "class": _class_name(embedder),
        "pooling": s.pooling,
        "normalize": s.normalize,
        "truncate_dim": s.truncate_dim,
        "query_instruction": s.query_instruction,
        "query_instruction_format": s.query_instruction_format,
        "passage_instruction": s.passage_instruction,
        "passage_instruction_format": s.passage_instruction_format,
        "dim": embedder.dim,
    }
    if isinstance(embedder, M3Embedder):
        info.update(colbert_dim=embedder.colbert_dim, vocab_size=embedder.vocab_size)
    return info


def _class_name(embedder: Embedder) -> str:
    if isinstance(embedder, VisualEmbedder):
        return "visual"
    return "m3" if isinstance(embedder, M3Embedder) else "dense"


def used_remote_code(embedder: Embedder) -> bool:
    """Whether the embedder was loaded with ``trust_remote_code`` on."""
    return bool(getattr(embedder, "trust_remote_code", False))


def model_source(embedder: Embedder) -> dict[str, Any]:
    """Where the weights came from (not compared; used to reopen the model): name, absolute folder, revision."""
    s = embedder.settings
    return {
        "name": s.name,
        "path": str(Path(s.path).absolute()),
        "revision": s.revision,
        "max_length": getattr(embedder, "max_length", s.max_length),
        "trust_remote_code": used_remote_code(embedder),
    }


def open_recorded_model(
    info: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    where: Path,
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Embedder:
    """Rebuild the embedder an index was built with, from its manifest, without enabling remote code.

    The recorded absolute folder is tried first, then the recorded name (registry name or hub id at
    the recorded revision); the first one whose weights fingerprint matches is loaded with the
    recorded settings. ``trust_remote_code`` is passed explicitly: on only when the build used
    remote code *and* the caller consents.

    Raises:
        ValueError: the build used remote code and ``trust_remote_code`` is not True.
        IndexMismatchError: the recorded model's weights changed since the index was built.
        FileNotFoundError: neither the folder nor the name can be found.
    """
    source = source or {}
    name = source.get("name")
    if source.get("trust_remote_code") and trust_remote_code is not True:
        raise ValueError(
            f"index at {where} was built with trust_remote_code=True (model {name!r}); loading it runs code "
            "from that model's folder: pass trust_remote_code=True (flagembed search --trust-remote-code) "
            "if you trust it, or pass the embedder yourself"
        )
    revision = kwargs.pop("revision", source.get("revision"))
    folder = _find_weights(info, source, where, HubOptions(revision=revision, **_hub_kwargs(kwargs)))
    args = {
        "pooling": info.get("pooling"),
        "normalize": info.get("normalize"),
        "truncate_dim": info.get("truncate_dim"),
        "query_instruction": info.get("query_instruction"),
        "query_instruction_format": info.get("query_instruction_format"),
        "passage_instruction": info.get("passage_instruction"),
        "passage_instruction_format": info.get("passage_instruction_format"),
        "max_length": source.get("max_length"),
        "revision": revision,
        **kwargs,
        "trust_remote_code": bool(source.get("trust_remote_code")) and trust_remote_code is True,
    }
    embedder_cls = {"m3": M3Embedder, "visual": VisualEmbedder}.get(info.get("class", ""), Embedder)
    return embedder_cls(str(folder), **args)


def _hub_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}


def _find_weights(info: Mapping[str, Any], source: Mapping[str, Any], where: Path, hub: HubOptions) -> Path:
    want = info.get("weights")
    path, name = source.get("path"), source.get("name")
    tried: list[str] = []
    changed = False
    if isinstance(path, str) and Path(path).is_dir():
        if weights_fingerprint(path) == want:
            return Path(path)
        tried.append(f"{path} has other weights")
        changed = True
    elif path is not None:
        tried.append(f"{path} is not a folder")
    if isinstance(name, str) and name and name != path:
        try:
            folder = resolve_model_path(name, hub)
        except FileNotFoundError as exc:
            tried.append(str(exc))
        else:
            if weights_fingerprint(folder) == want:
                return folder
            tried.append(f"{name!r} resolves to {folder}, which has other weights")
            changed = True
    detail = "; ".join(tried) or "the manifest records no model source"
    msg = (
        f"index at {where} was built with model weights {str(want)[:12]}… that are not available now ({detail}); "
        "pass the embedder it was built with, or rebuild the index"
    )
    raise IndexMismatchError(msg) if changed else FileNotFoundError(msg)
