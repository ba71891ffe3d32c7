"""Read checkpoint tensors one at a time and write safetensors files tensor by tensor.

``safetensors.safe_open`` memory-maps the file, so every tensor read stays resident in the process
(its pages count in RSS) while the file is open, and ``save_file`` needs every output tensor in
memory at once. Merging models too big to hold N copies needs neither: this module reads one tensor
with a plain ``readinto`` from the offsets in the safetensors header, and writes the output header
first (all shapes and dtypes are known up front) and then each tensor as soon as it is merged.
Format: 8-byte little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}``
padded with spaces to 8 bytes, then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

logger = logging.getLogger(__name__)

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _code, _name in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _name):
        _ST_DTYPES[_code] = getattr(torch, _name)
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}

# Weight files a transformers folder may hold, in the order transformers prefers them.
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")
HEAD_FILES = ("sparse_linear.pt", "colbert_linear.pt")  # BGE-M3 heads beside the backbone


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int = 0  # byte offset of the data in a safetensors file (absolute)
    end: int = 0


@dataclass
class Checkpoint:
    """The weight tensors of one model folder, known by name, shape and dtype before any is read."""

    folder: Path
    tensors: dict[str, TensorInfo]
    files: list[Path] = field(default_factory=list)

    @property
    def is_safetensors(self) -> bool:
        return all(f.suffix == ".safetensors" for f in self.files)

    @property
    def num_bytes(self) -> int:
        return sum(_nbytes(t.dtype, t.shape) for t in self.tensors.values())

    def load_all(self) -> dict[str, torch.Tensor]:
        """Every tensor, in memory (what ``mix_models`` does: simple and fast, N copies for N models)."""
        out: dict[str, torch.Tensor] = {}
        for f in self.files:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                out.update(load_file(str(f)))
            else:
                out.update(torch.load(f, map_location="cpu", weights_only=True))
        return {k: out[k] for k in self.tensors}

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], torch.Tensor]]:
        """A function reading one tensor at a time (safetensors: ``readinto`` a fresh buffer, no mmap)."""
        with ExitStack() as stack:
            handles: dict[Path, Any] = {}

            def read(key: str) -> torch.Tensor:
                info = self.tensors[key]
                if info.file not in handles:
                    if info.file.suffix == ".safetensors":
                        handles[info.file] = stack.enter_context(open(info.file, "rb"))
                    else:  # zip-format torch files load lazily with mmap; tensors are read on first touch
                        handles[info.file] = torch.load(info.file, map_location="cpu", weights_only=True, mmap=True)
                handle = handles[info.file]
                if isinstance(handle, dict):
                    return handle[key]
                return _read_st_tensor(handle, info)

            yield read


def find_checkpoint(folder: Path) -> Checkpoint:
    """Index the weight files of a transformers folder (safetensors or ``.bin``, single or sharded).

    Raises:
        FileNotFoundError: the folder has no weight file transformers would load.
    """
    for index_name in _INDEXES:
        index = folder / index_name
        if index.is_file():
            with open(index, encoding="utf-8") as f:
                weight_map: dict[str, str] = json.load(f)["weight_map"]
            files = sorted({folder / name for name in weight_map.values()})
            return _index_files(folder, files)
    for name in _SINGLE:
        if (folder / name).is_file():
            return _index_files(folder, [folder / name])
    raise FileNotFoundError(
        f"no weights in {folder}: expected one of {', '.join(_SINGLE + _INDEXES)} (convert other formats first)"
    )


def _index_files(folder: Path, files: list[Path]) -> Checkpoint:
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{folder}: the weight index names {f.name}, which is missing")
        tensors.update(read_st_header(f) if f.suffix == ".safetensors" else _bin_header(f))
    return Checkpoint(folder=folder, tensors=tensors, files=files)


def read_st_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes, shapes and absolute byte ranges from a safetensors header."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    base = 8 + size
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        code = meta["dtype"]
        if code not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {code}, which this torch cannot hold")
        start, end = meta["data_offsets"]
        out[name] = TensorInfo(path, _ST_DTYPES[code], tuple(meta["shape"]), base + start, base + end)
    return out


def _bin_header(path: Path) -> dict[str, TensorInfo]:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: TensorInfo(path, v.dtype, tuple(v.shape)) for k, v in state.items()}


def _read_st_tensor(f: IO[bytes], info: TensorInfo) -> torch.Tensor:
    buf = torch.empty(info.end - info.start, dtype=torch.uint8)
    f.seek(info.start)
    if buf.numel():
        got = f.readinto(memoryview(buf.numpy()))
        if got != buf.numel():
            raise ValueError(f"{info.file}: truncated file (wanted {buf.numel()} bytes, got {got})")
    return buf.view(info.dtype).reshape(info.shape)


def _nbytes(dtype: torch.dtype, shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def write_st_streaming(
    path: Path,
    specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], torch.Tensor],
) -> None:
    """Write a safetensors file whose tensors ``produce(name)`` returns one at a time.

    Tensors are laid out as ``safetensors.torch.save_file`` does (larger dtypes first, then by name),
    so each stays aligned; only the tensor being written is held here.

    Raises:
        ValueError: ``produce`` returned a tensor whose dtype or shape differs from ``specs``.
    """
    order = sorted(specs, key=lambda k: (-torch.empty((), dtype=specs[k][0]).element_size(), k))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        dtype, shape = specs[name]
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": _ST_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            tensor = produce(name)
            if tensor.dtype != specs[name][0] or tuple(tensor.shape) != specs[name][1]:
                raise ValueError(
                    f"tensor {name!r}: got {tensor.dtype} {tuple(tensor.shape)}, expected {specs[name][0]} "
                    f"{specs[name][1]}"
                )
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
            if data.numel():
                f.write(memoryview(data.numpy()))
            del tensor, data
