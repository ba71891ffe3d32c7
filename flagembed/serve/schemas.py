"""Wire schemas: OpenAI embeddings, Cohere/Jina rerank, and flagembed's sparse and multi-vector extensions.

Requests are validated here (types, empty lists); limits that depend on the server configuration
(payload bytes, inputs per request, tokens per input) are checked in :mod:`flagembed.serve.limits`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flagembed.inference.inputs import corpus_text

InputType = Literal["query", "passage", "document"]

_TOKEN_IDS_HINT = (
    "flagembed takes text, not token ids (tiktoken ids mean nothing to this model); "
    "with LangChain's OpenAIEmbeddings pass check_embedding_ctx_length=False"
)


def check_texts(value: Any, field: str = "input") -> Any:
    """A string or a non-empty list of strings; the error names the first bad index and its type."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a string or a list of strings, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} must not be empty")
    for i, item in enumerate(value):
        if isinstance(item, str):
            continue
        if isinstance(item, (int, list)) and not isinstance(item, bool):
            raise ValueError(f"{field}[{i}] is a token id list; {_TOKEN_IDS_HINT}")
        raise ValueError(f"{field}[{i}] must be a string, got {type(item).__name__}: {item!r:.60}")
    return value


def find_lone_surrogate(value: Any, path: str = "body") -> tuple[str, int] | None:
    """The first string (or key) in decoded JSON that holds a lone UTF-16 surrogate: ``(path, char index)``.

    JSON's ``"\\ud800"`` escapes decode to such strings; they cannot be encoded as UTF-8, so tokenizers and
    the JSON encoder fail on them. Iterative, so deep nesting cannot exhaust the stack.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return where, exc.start
        elif isinstance(item, dict):
            for key, sub in item.items():  # the key is checked first: a bad key never appears in a path
                stack.append((sub, f"{key}" if where == "body" else f"{where}.{key}"))
                stack.append((key, f"a key in {where}"))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
    return None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        found = find_lone_surrogate(data)
        if found is not None:
            where, pos = found
            raise ValueError(
                f"{where} has a lone UTF-16 surrogate at character {pos}; text must be valid Unicode "
                "(pair \\ud800-\\udbff with \\udc00-\\udfff, or drop it)"
            )
        return data


class _TextRequest(_Request):
    input: Union[str, list[Any]] = Field(description="A string or a list of strings.")
    model: Optional[str] = Field(None, description="Served model name (default: the server's embedding model).")
    input_type: Optional[InputType] = Field(
        None,
        description="flagembed extension: 'query' adds the model's query instruction and uses its query length; "
        "'passage'/'document' the passage instruction. Default: the text as given.",
    )
    truncate: Optional[bool] = Field(
        None,
        description="flagembed extension: truncate over-long inputs (default: server setting) or reject them (false).",
    )

    @field_validator("input")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return check_texts(value)

    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingRequest(_TextRequest):
    """``POST /v1/embeddings`` (OpenAI schema); Visualized-BGE models also take image content parts
    (``{"type": "image_url", "image_url": {"url": "data:..."}}``, see :mod:`flagembed.serve.images`)."""

    @field_validator("input")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        if isinstance(value, list) and any(
            isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, dict) for x in v)) for v in value
        ):
            return value  # content parts: checked (and images decoded) by flagembed.serve.images
        return check_texts(value)

    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1, description="Matryoshka truncation: keep the first N dimensions.")
    user: Optional[str] = None


class SparseRequest(_TextRequest):
    """``POST /v1/embeddings/sparse``: lexical weights of an M3-style model."""

    return_tokens: bool = Field(False, description="Also return each weight's token string.")


class MultiVectorRequest(_TextRequest):
    """``POST /v1/embeddings/multivector``: ColBERT vectors (one per token) of an M3-style model."""

    encoding_format: Literal["float", "base64"] = "float"


class RerankDocument(BaseModel):
    """A document given as an object (Cohere v1 style); a ``title`` is joined before the text, as BEIR/MTEB."""

    model_config = ConfigDict(extra="ignore")
    text: str
    title: Optional[str] = None


class RerankRequest(_Request):
    """``POST /v1/rerank`` (Cohere/Jina schema)."""

    query: str
    documents: list[Union[str, RerankDocument]]
    model: Optional[str] = None
    top_n: Optional[int] = Field(None, ge=1, description="Return only the best N (default: all).")
    return_documents: bool = True

    @field_validator("documents")
    @classmethod
    def _non_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("documents must not be empty")
        return value

    def texts(self) -> list[str]:
        """Document texts as the reranker reads them: ``title text`` for titled ones, as ``flagembed rerank``."""
        return [corpus_text(d if isinstance(d, str) else d.model_dump(), i) for i, d in enumerate(self.documents)]

    def returned(self, index: int) -> dict[str, str]:
        """Document ``index`` as the response echoes it: the fields the client sent."""
        d = self.documents[index]
        return {"text": d} if isinstance(d, str) else d.model_dump(exclude_none=True)


class SearchRequest(_Request):
    """``POST /v1/search``: query texts against the served index (``flagembed serve --index/--store``)."""

    query: Union[str, list[str]]
    top_k: int = Field(10, ge=1, le=1000, description="Hits per query.")
    modes: Optional[Union[str, list[str]]] = Field(None, description="Modes to fuse (default: all of the index).")
    weights: Optional[Union[str, list[float], dict[str, float]]] = None
    fusion: Optional[Literal["weighted", "rrf"]] = None
    filter: str = Field("", description='Milvus boolean expression, e.g. metadata["year"] > 2020 (stores only).')
    return_documents: bool = True

    def queries(self) -> list[str]:
        """The query texts, each non-empty."""
        texts = [self.query] if isinstance(self.query, str) else list(self.query)
        if not texts:
            raise ValueError("query must not be empty")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"query[{i}] is empty")
        return texts


# ---------------------------------------------------------------------- responses (for the OpenAPI schema)
class Usage(BaseModel):
    """Token counts (after truncation)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingData(BaseModel):
    """One embedding: a float list or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingResponse(BaseModel):
    """OpenAI embeddings response plus ``truncated``: how many inputs were cut to the token limit."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    truncated: int = 0


class SparseData(BaseModel):
    """Lexical weights of one input as parallel ``indices`` (token ids) and ``values``."""

    object: Literal["sparse_embedding"] = "sparse_embedding"
    index: int
    indices: list[int]
    values: list[float]
    tokens: Optional[list[str]] = None


class SparseResponse(BaseModel):
    """Sparse embeddings response."""

    object: Literal["list"] = "list"
    data: list[SparseData]
    model: str
    usage: Usage
    truncated: int = 0


class MultiVectorData(BaseModel):
    """ColBERT vectors of one input: ``shape`` = (tokens, dim); base64 is row-major little-endian float32."""

    object: Literal["multivector_embedding"] = "multivector_embedding"
    index: int
    shape: list[int]
    embedding: Union[list[list[float]], str]


class MultiVectorResponse(BaseModel):
    """Multi-vector embeddings response."""

    object: Literal["list"] = "list"
    data: list[MultiVectorData]
    model: str
    usage: Usage
    truncated: int = 0


class RerankResult(BaseModel):
    """One ranked document."""

    index: int
    relevance_score: float
    document: Optional[RerankDocument] = None


class RerankUsage(BaseModel):
    """Tokens read (query once per document plus the documents)."""

    total_tokens: int


class RerankResponse(BaseModel):
    """Cohere/Jina rerank response, best first."""

    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "flagembed"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """OpenAI-style error detail."""

    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every error the server returns."""

    error: ErrorBody
