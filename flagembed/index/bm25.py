"""BM25Index: lexical BM25 search for any corpus (no model needed), built on the ``bm25s`` library.

The index keeps every document's tokens; ``bm25s`` turns them into its precomputed per-(token, document)
score matrix, so a query's score is the sum of its tokens' entries (exactly ``bm25s``' own scores).
Adding or removing documents changes the corpus statistics (IDF, average length), so the matrix is
rebuilt lazily before the next search. Tokenisation is :class:`BM25Tokenizer` (stated in the manifest):
English-style words for alphabetic scripts, character unigrams + bigrams for Chinese/Japanese/Korean runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import scipy.sparse as sp

from flagembed.index.ids import IdTable
from flagembed.index.results import SearchResults, check_top_k, sparse_top_k
from flagembed.index.storage import IndexFormatError, read_json, read_manifest, write_index_dir, write_json
from flagembed.inference.inputs import as_corpus_list, as_text_list

Method = Literal["lucene", "robertson", "atire"]
Stemmer = Literal["snowball", "porter"]
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_SPLIT = re.compile(f"([{_CJK}]+)")
_QUERY_CHUNK = 256
_INSTALL = 'BM25 needs bm25s: pip install "flagembed[bm25]"'


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return bm25s


@dataclass(frozen=True)
class BM25Tokenizer:
    """How texts become BM25 tokens (recorded in the index manifest, so queries are cut like documents).

    Text is split into runs of CJK characters and the rest. CJK runs give character n-grams of the
    sizes in ``cjk_ngrams`` (default unigrams + bigrams: no word segmenter needed, robust for Chinese).
    The rest is lowercased (``lowercase``) and cut with ``token_pattern`` (default: words of >= 2 word
    characters, as ``bm25s.tokenize`` does); ``stopwords`` (``"en"`` = bm25s' English list, or a list)
    are dropped; ``stemmer`` (``"snowball"`` / ``"porter"``, needs nltk) stems the words.

    Example:
        >>> BM25Tokenizer()("BM25 在中文里")
        ['bm25', '在', '中', '文', '里', '在中', '中文', '文里']
    """

    lowercase: bool = True
    token_pattern: str = r"(?u)\b\w\w+\b"
    stopwords: str | tuple[str, ...] | None = None
    stemmer: Stemmer | None = None
    cjk_ngrams: tuple[int, ...] = (1, 2)
    _stop: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _stem: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stopwords, list):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))
        object.__setattr__(self, "cjk_ngrams", tuple(int(n) for n in self.cjk_ngrams))
        if any(n < 1 for n in self.cjk_ngrams):
            raise ValueError(f"cjk_ngrams must be positive sizes, got {self.cjk_ngrams}")
        if self.stemmer is not None and self.stemmer not in get_args(Stemmer):
            raise ValueError(f"unknown stemmer {self.stemmer!r}; valid: None, {', '.join(get_args(Stemmer))}")
        object.__setattr__(self, "_stop", frozenset(_stopword_list(self.stopwords)))
        object.__setattr__(self, "_stem", _load_stemmer(self.stemmer) if self.stemmer else None)
        re.compile(self.token_pattern)

    def __call__(self, text: str) -> list[str]:
        """Tokens of one text: words first (in order), then each CJK run's n-grams, per segment."""
        out: list[str] = []
        pattern = re.compile(self.token_pattern)
        for i, part in enumerate(_SPLIT.split(text)):
            if i % 2:  # a CJK run
                for n in self.cjk_ngrams:
                    out.extend(part[j : j + n] for j in range(len(part) - n + 1))
                continue
            words = pattern.findall(part.lower() if self.lowercase else part)
            words = [w for w in words if w not in self._stop]
            if self._stem is not None:
                words = [self._stem(w) for w in words]
            out.extend(words)
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokens of each text."""
        return [self(t) for t in texts]

    def state(self) -> dict[str, Any]:
        """JSON-ready configuration (inverse: ``BM25Tokenizer(**state)``)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["cjk_ngrams"] = list(self.cjk_ngrams)
        if isinstance(self.stopwords, tuple):
            d["stopwords"] = list(self.stopwords)
        return d


def _stopword_list(stopwords: str | Sequence[str] | None) -> Sequence[str]:
    if stopwords is None:
        return ()
    if isinstance(stopwords, str):
        if stopwords not in ("en", "english"):
            raise ValueError(f"stopwords must be None, 'en' or a list of words, got {stopwords!r}")
        return _bm25s().stopwords.STOPWORDS_EN
    return list(stopwords)


def _load_stemmer(name: str) -> Any:
    try:
        from nltk.stem import PorterStemmer, SnowballStemmer
    except ImportError as exc:
        raise ImportError(f"stemmer={name!r} needs nltk: pip install nltk") from exc
    stemmer = SnowballStemmer("english") if name == "snowball" else PorterStemmer()
    return stemmer.stem


class BM25Index:
    """Exact BM25 top-k over a tokenised corpus; the :class:`SparseIndex` interface with texts for vectors.

    Args:
        tokenizer: a :class:`BM25Tokenizer` (default: lowercase words, CJK unigrams + bigrams).
        k1, b: the BM25 parameters (bm25s defaults 1.5 and 0.75).
        method: bm25s' term-frequency/IDF variant: ``lucene`` (default), ``robertson`` or ``atire``.

    Example:
        >>> ix = BM25Index()
        >>> ix.add(["d1", "d2"], ["BM25 is a ranking function", "dense retrieval uses vectors"])
        >>> ix.search("what is bm25?", top_k=1).ids
        [['d1']]
    """

    def __init__(
        self,
        tokenizer: BM25Tokenizer | None = None,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: Method = "lucene",
    ) -> None:
        if method not in get_args(Method):
            raise ValueError(f"unknown BM25 method {method!r}; valid: {', '.join(get_args(Method))}")
        if not (np.isfinite(k1) and k1 >= 0) or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.tokenizer = tokenizer or BM25Tokenizer()
        self.k1, self.b, self.method = float(k1), float(b), method
        self.model_info: dict[str, Any] | None = None
        self._ids = IdTable()
        self._docs: list[list[str]] = []  # tokens per slot (alive slots only after a compaction)
        self._matrix: sp.csr_matrix | None = None  # (vocab, docs) BM25 weights, rebuilt when stale
        self._vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return self._ids.alive_ids()

    @property
    def params(self) -> dict[str, Any]:
        """What decides the scores: tokenizer, k1, b, method."""
        return {"tokenizer": self.tokenizer.state(), "k1": self.k1, "b": self.b, "method": self.method}

    def add(self, ids: Sequence[str], texts: Any) -> None:
        """Add documents: strings or ``{"title", "text"}`` dicts (indexed as ``f"{title} {text}".strip()``)."""
        items, single = as_corpus_list(texts)
        if single:
            raise TypeError("add() takes a list of documents, got a single one")
        new = self._ids.check_new(ids, len(items))
        if not new:
            return
        self._ids.append(new)
        self._docs.extend(self.tokenizer.tokenize(items))
        self._matrix = None

    def add_tokens(self, ids: Sequence[str], tokens: Sequence[Sequence[str]]) -> None:
        """Add already-tokenised documents (lists of strings), e.g. from another tokenizer."""
        new = self._ids.check_new(ids, len(tokens))
        for i, doc in enumerate(tokens):
            if isinstance(doc, str) or not all(isinstance(t, str) for t in doc):
                raise TypeError(f"tokens[{i}] must be a list of strings")
        self._ids.append(new)
        self._docs.extend([list(doc) for doc in tokens])
        self._matrix = None

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (unknown ids ignored); returns how many were removed."""
        slots = self._ids.kill(ids)
        if len(slots):
            keep = self._ids.compact()
            self._docs = [self._docs[i] for i in keep]
            self._matrix = None
        return len(slots)

    # ------------------------------------------------------------------ scoring
    def _weights(self) -> sp.csr_matrix:
        """The ``(vocab, docs)`` matrix of BM25 weights from bm25s (built on first use after a change)."""
        if self._matrix is None and not any(self._docs):  # no tokens at all (bm25s would divide by 0)
            self._matrix, self._vocab = sp.csr_matrix((0, len(self._docs)), dtype=np.float32), {}
        if self._matrix is None:
            bm25s = _bm25s()
            retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            retriever.index(self._docs, create_empty_token=False, show_progress=False)
            s = retriever.scores
            n_vocab = len(s["indptr"]) - 1
            csc = sp.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], n_vocab))
            self._matrix = csc.T.tocsr().astype(np.float32)
            self._vocab = dict(retriever.vocab_dict)
        return self._matrix

    def _query_matrix(self, queries: Any) -> sp.csr_matrix:
        """Token counts ``(num_queries, vocab)``; tokens outside the corpus vocabulary are ignored (as bm25s does)."""
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, (list, tuple)) for q in queries):
            token_lists = [list(q) for q in queries]  # pre-tokenised
        else:
            texts, _ = as_text_list(queries, "queries")
            token_lists = self.tokenizer.tokenize(texts)
        self._weights()
        indptr, cols = [0], []
        for toks in token_lists:
            cols.extend(self._vocab[t] for t in toks if t in self._vocab)
            indptr.append(len(cols))
        data = np.ones(len(cols), dtype=np.float32)
        q = sp.csr_matrix((data, np.asarray(cols, np.int64), np.asarray(indptr)), (len(token_lists), len(self._vocab)))
        q.sum_duplicates()  # a repeated query token counts once per occurrence, as in bm25s
        return q

    def search(self, queries: Any, top_k: int = 10) -> SearchResults:
        """Top-``top_k`` documents per query text (or token list); documents sharing no query token are omitted."""
        top_k = check_top_k(top_k)
        q = self._query_matrix(queries)
        if len(self) == 0:
            return SearchResults.empty(q.shape[0])
        return sparse_top_k(q, self._weights(), self._ids.labels, top_k, _QUERY_CHUNK)

    def scores(self, queries: Any, ids: Sequence[str]) -> np.ndarray:
        """Exact BM25 scores ``(num_queries, len(ids))`` of the given documents (0 where nothing is shared)."""
        q = self._query_matrix(queries)
        slots = self._ids.slots(ids)
        prod = (q @ self._weights()).tocsr()  # touches only the query tokens' rows
        return np.asarray(prod[:, slots].todense(), dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def _write(self, tmp: Path) -> None:
        vocab: dict[str, int] = {}
        flat = [vocab.setdefault(t, len(vocab)) for doc in self._docs for t in doc]
        offsets = np.cumsum([0] + [len(doc) for doc in self._docs], dtype=np.int64)
        np.save(tmp / "tokens.npy", np.asarray(flat, dtype=np.int32))
        np.save(tmp / "offsets.npy", offsets)
        write_json(tmp / "vocab.json", list(vocab))
        write_json(tmp / "ids.json", self._ids.state())

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index (tokens, ids, tokenizer and BM25 parameters) to ``directory`` atomically."""
        write_index_dir(directory, "bm25", {**self.params, "count": len(self)}, self._write, self.model_info)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, model_info: Mapping[str, Any] | None = None) -> BM25Index:
        """Read an index written by :meth:`save` (checksums verified; the bm25s matrix is rebuilt on first search)."""
        path = Path(directory)
        manifest = read_manifest(path, "bm25", model_info)
        p = manifest["params"]
        tok = p["tokenizer"]
        tok = {**tok, "cjk_ngrams": tuple(tok.get("cjk_ngrams", (1, 2)))}
        if isinstance(tok.get("stopwords"), list):
            tok["stopwords"] = tuple(tok["stopwords"])
        obj = cls(BM25Tokenizer(**tok), k1=p["k1"], b=p["b"], method=p["method"])
        obj.model_info = manifest.get("model")
        vocab = read_json(path / "vocab.json")
        flat = np.load(path / "tokens.npy")
        offsets = np.load(path / "offsets.npy")
        obj._ids = IdTable.from_state(read_json(path / "ids.json"))
        if len(offsets) - 1 != obj._ids.num_slots or (len(flat) and int(flat.max()) >= len(vocab)):
            raise IndexFormatError(f"{path} is inconsistent: {len(offsets) - 1} documents for {obj._ids.num_slots} ids")
        obj._docs = [[vocab[t] for t in flat[offsets[i] : offsets[i + 1]]] for i in range(len(offsets) - 1)]
        return obj
