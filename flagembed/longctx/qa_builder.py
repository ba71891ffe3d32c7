"""Long-document QA conversations written by any OpenAI-compatible chat endpoint (vLLM, a hosted API, ...).

Each document is cut into chunks; for each chunk the endpoint is asked for ``questions`` question/answer pairs
as a JSON list; each pair becomes one training conversation: user = the WHOLE document + "\\n\\n" + question,
assistant = answer (the reference's "one-detail" data, LONG_CONTEXT.md §7.1). Responses are cached in a JSONL
file keyed by a hash of (model, prompt), so a rerun costs no calls; transient failures (connection errors,
429, 5xx) are retried a bounded number of times with exponential back-off; other HTTP errors raise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

QA_PROMPT = (
    "Read the following part of a long document and write {n} questions that can be answered from it, each with "
    "a short, correct answer. Reply with a JSON list only, like "
    '[{{"question": "...", "answer": "..."}}].\n\n{chunk}'
)


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise ImportError('the QA builder needs httpx: pip install httpx') from exc
    return httpx


class ChatClient:
    """A minimal OpenAI-compatible ``/chat/completions`` client with a JSONL response cache and bounded retries."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, cache: str | os.PathLike[str] | None =
                 None, max_retries: int = 3, timeout: float = 120.0, backoff: float = 1.0,
                 temperature: float = 0.0) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_retries, self.backoff, self.temperature = model, max_retries, backoff, temperature
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self.cache_path = Path(cache) if cache is not None else None
        self.cache: dict[str, str] = {}
        self.calls = 0
        if self.cache_path is not None and self.cache_path.is_file():
            with open(self.cache_path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        row = json.loads(line)
                        self.cache[row["key"]] = row["content"]

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps([self.model, prompt, self.temperature]).encode()).hexdigest()

    def complete(self, prompt: str) -> str:
        """The assistant text for one user prompt (from the cache when present)."""
        key = self._key(prompt)
        if key in self.cache:
            return self.cache[key]
        httpx = _httpx()
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature}
        for attempt in range(self.max_retries + 1):
            try:
                self.calls += 1
                resp = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            except httpx.TransportError as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    content = resp.json()["choices"][0]["message"]["content"]
                    self._store(key, content)
                    return content
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RuntimeError(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:200]}")
                error = f"HTTP {resp.status_code}"
            if attempt < self.max_retries:
                logger.warning("chat endpoint: %s; retry %d of %d", error, attempt + 1, self.max_retries)
                time.sleep(self.backoff * 2**attempt)
        raise RuntimeError(f"{self.url} failed after {self.max_retries + 1} attempts: {error}")

    def _store(self, key: str, content: str) -> None:
        self.cache[key] = content
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as fh:  # append-only: a killed run keeps its answers
                fh.write(json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n")


def parse_qa(text: str) -> list[dict[str, str]]:
    """The ``[{question, answer}]`` list in a model reply (code fences and surrounding prose tolerated)."""
    match = re.search(r"\[.*\]", text, flags=re.S)
    if not match:
        return []
    try:
        items = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    return [{"question": str(i["question"]).strip(), "answer": str(i["answer"]).strip()} for i in items
            if isinstance(i, dict) and i.get("question") and i.get("answer")]


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``chunk_chars`` characters at paragraph or sentence ends."""
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars}")
    chunks, start = [], 0
    while start < len(text):
        end = min(start + chunk_chars, len(text))
        if end < len(text):
            cut = max(text.rfind("\n\n", start, end), text.rfind(". ", start, end))
            end = cut + 1 if cut > start else end
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        start = end
    return chunks


def build_qa_rows(documents: Iterable[str], client: ChatClient, questions: int = 4, chunk_chars: int = 16000,
                  max_chunks: int | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """QA conversations over ``documents``; returns the rows and counts (documents, chunks, pairs, unparsed)."""
    rows: list[dict[str, Any]] = []
    stats = {"documents": 0, "chunks": 0, "pairs": 0, "unparsed": 0}
    for d, doc in enumerate(documents):
        stats["documents"] += 1
        for chunk in chunk_text(doc, chunk_chars)[:max_chunks]:
            stats["chunks"] += 1
            pairs = parse_qa(client.complete(QA_PROMPT.format(n=questions, chunk=chunk)))
            if not pairs:
                stats["unparsed"] += 1
            for pair in pairs:
                rows.append({"messages": [{"role": "user", "content": doc + "\n\n" + pair["question"]},
                                          {"role": "assistant", "content": pair["answer"]}], "document": d})
                stats["pairs"] += 1
    return rows, stats


def mix_rows(qa_rows: Sequence[dict[str, Any]], texts: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """QA conversations and plain long texts (``{"text": ...}``) in one shuffled list."""
    import random

    rows = list(qa_rows) + [{"text": t} for t in texts]
    random.Random(seed).shuffle(rows)
    return rows


__all__ = ["QA_PROMPT", "ChatClient", "build_qa_rows", "chunk_text", "mix_rows", "parse_qa"]
