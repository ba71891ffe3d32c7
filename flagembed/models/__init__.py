"""Model loading, the registry of known checkpoints, pooling and the shared TextEncoder."""

from flagembed.models.encoder import (
    EncoderSettings,
    MultiOutput,
    TextEncoder,
    load_backbone,
    load_tokenizer,
    resolve_settings,
)
from flagembed.models.fingerprint import weights_fingerprint
from flagembed.models.heads import M3Heads, load_m3_heads, maxsim, pad_vectors, special_token_ids
from flagembed.models.loading import (
    Checkpoint,
    FolderConfig,
    HubOptions,
    check_model_folder,
    latest_checkpoint,
    open_checkpoint,
    packaged_model_path,
    read_folder_config,
    remote_code_allowed,
    resolve_model_path,
)
from flagembed.models.pooling import POOLING_METHODS, finalize, last_token, pool
from flagembed.models.registry import (
    MODELS,
    TASKS,
    ModelSpec,
    list_models,
    lookup,
    lookup_folder_name,
    task_instructions,
)

__all__ = [
    "TASKS",
    "task_instructions",
    "weights_fingerprint",
    "MODELS",
    "POOLING_METHODS",
    "Checkpoint",
    "EncoderSettings",
    "FolderConfig",
    "HubOptions",
    "M3Heads",
    "ModelSpec",
    "MultiOutput",
    "TextEncoder",
    "check_model_folder",
    "finalize",
    "last_token",
    "latest_checkpoint",
    "list_models",
    "load_backbone",
    "load_m3_heads",
    "load_tokenizer",
    "open_checkpoint",
    "lookup",
    "lookup_folder_name",
    "maxsim",
    "pad_vectors",
    "packaged_model_path",
    "pool",
    "read_folder_config",
    "remote_code_allowed",
    "resolve_model_path",
    "resolve_settings",
    "special_token_ids",
]
