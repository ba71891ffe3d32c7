"""LangChain and LlamaIndex adapters (optional extras ``flagembed[langchain]`` / ``flagembed[llama-index]``).

Nothing here is imported by ``import flagembed``; the names below load their library on first use and
raise an ``ImportError`` with the ``pip install`` line when it is missing.

Example:
    >>> from flagembed.integrations import FlagembedEmbeddings  # LangChain
    >>> from flagembed.integrations import FlagembedEmbedding  # LlamaIndex
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FlagembedEmbeddings": "langchain",
    "FlagembedReranker": "langchain",
    "FlagembedEmbedding": "llama_index",
    "FlagembedRerank": "llama_index",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'flagembed.integrations' has no attribute {name!r}")
    module = importlib.import_module(f"flagembed.integrations.{_LAZY[name]}")
    return getattr(module, name)
