"""Scale-out jobs: corpus encoding on Ray Data into resumable Parquet shards, and indexes built from them."""

from flagembed.distributed.ray_encode import (
    EncodeJobError,
    EncodeReport,
    EncodeStalledError,
    actor_cpus,
    encode_corpus,
)
from flagembed.distributed.shards import ShardData, ShardError, load_shards

__all__ = [
    "EncodeJobError",
    "EncodeReport",
    "EncodeStalledError",
    "ShardData",
    "ShardError",
    "actor_cpus",
    "encode_corpus",
    "load_shards",
]
