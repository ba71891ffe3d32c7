"""Search options shared by the hybrid searcher: modes, per-mode weights and the fusion rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

Mode = Literal["dense", "sparse", "colbert", "bm25"]
MODES: tuple[str, ...] = get_args(Mode)
Fusion = Literal["weighted", "rrf"]
# BGE-M3 README's suggestion; bm25 weighs as sparse does
DEFAULT_WEIGHTS = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4, "bm25": 0.2}


def check_modes(modes: str | Sequence[str] | None, available: Sequence[str] = MODES) -> list[str]:
    """Validate mode names (a list or a comma-separated string).

    Raises:
        ValueError: an unknown mode, a mode this searcher lacks, a repeat, or none at all.
    """
    if modes is None:
        return list(available)
    items = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else list(modes)
    if not items or any(not m for m in items):
        raise ValueError(f"modes must name at least one of {', '.join(MODES)}, got {modes!r}")
    for i, m in enumerate(items):
        if m not in MODES:
            raise ValueError(f"modes[{i}] = {m!r} is not a mode; valid: {', '.join(MODES)}")
        if m not in available:
            raise ValueError(f"modes[{i}] = {m!r}: this index was built with modes {', '.join(available)} only")
    if len(set(items)) != len(items):
        raise ValueError(f"modes repeat a name: {items!r}")
    return items


def check_weights(
    weights: Mapping[str, float] | Sequence[float] | str | None, modes: Sequence[str]
) -> dict[str, float]:
    """Per-mode weights: a mapping, a list aligned with ``modes`` (or a comma-separated string).

    Raises:
        ValueError: wrong length, unknown keys, negative or non-finite values, or a zero sum.
    """
    if weights is None:
        out = {m: DEFAULT_WEIGHTS[m] for m in modes}
    elif isinstance(weights, Mapping):
        extra = set(weights) - set(modes)
        if extra:
            raise ValueError(f"weights name modes not searched: {sorted(extra)}; searching {', '.join(modes)}")
        out = {m: float(weights.get(m, 0.0)) for m in modes}
    else:
        values = [v.strip() for v in weights.split(",")] if isinstance(weights, str) else list(weights)
        if len(values) != len(modes):
            raise ValueError(f"got {len(values)} weights for {len(modes)} modes ({', '.join(modes)})")
        try:
            out = {m: float(v) for m, v in zip(modes, values)}
        except (TypeError, ValueError):
            raise ValueError(f"weights must be numbers, got {values!r}") from None
    bad = [m for m, w in out.items() if not np.isfinite(w) or w < 0]
    if bad or sum(out.values()) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and sum to > 0, got {out}")
    return out


def check_fusion(fusion: Any) -> Fusion:
    if fusion not in get_args(Fusion):
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(get_args(Fusion))}")
    return fusion  # type: ignore[return-value]
