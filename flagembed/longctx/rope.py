"""Set a model config's RoPE (base and scaling) so that transformers 4.x and 5.x both read the same thing.

Why a helper (LONG_CONTEXT.md §9.7, verified on 5.24): ``from_pretrained(p, rope_theta=2e8)`` raises TypeError,
``AutoConfig.from_pretrained(p, rope_theta=...)`` ignores it, ``rope_scaling=`` resets the base to None, and a
config saved by 5.x (``rope_parameters`` only) loads on 4.57 with the base silently back at 10,000.
:func:`set_rope` writes 5.x ``rope_parameters`` and the 4.x ``rope_theta`` / ``rope_scaling`` fields together,
so ``config.json`` carries all three and each version reads the same RoPE.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from flagembed._compat import IS_TRANSFORMERS_5

RopeType = Literal["default", "linear", "dynamic", "yarn", "llama3"]
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
_NEEDS_FACTOR = ("linear", "dynamic", "yarn", "llama3")
_NEEDS_ORIGINAL = ("yarn", "llama3")


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def get_rope(config: Any) -> dict[str, Any]:
    """The config's RoPE as a 5.x-style dict (``rope_type``, ``rope_theta``, scaling keys), on any version."""
    cfg = _text_config(config)
    params = getattr(cfg, "rope_parameters", None) if IS_TRANSFORMERS_5 else None
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        out = dict(params)
    else:
        scaling = vars(cfg).get("rope_scaling") or {}
        out = {k: v for k, v in scaling.items() if k != "type"}
        out["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
        out["rope_theta"] = vars(cfg).get("rope_theta", 10000.0)
    out.pop("type", None)
    return out


def set_rope(
    config: Any,
    theta: float | None = None,
    rope_type: RopeType = "default",
    factor: float | None = None,
    original_max: int | None = None,
    max_position_embeddings: int | None = None,
    **extra: float,
) -> Any:
    """Set RoPE base ``theta`` and scaling on ``config`` (in place; also returned), for 4.x and 5.x readers.

    Args:
        theta: the RoPE base; None keeps the current one.
        rope_type: ``default`` (base only), ``linear``, ``dynamic`` (NTK), ``yarn`` or ``llama3``.
        factor: the scaling factor (required and >= 1 for every type but ``default``).
        original_max: the pre-extension context (``original_max_position_embeddings``) for yarn/llama3;
            defaults to the config's current ``max_position_embeddings``.
        max_position_embeddings: the new nominal context; informative for most models (RoPE has no table).
        **extra: further HF keys of the type, e.g. ``low_freq_factor``/``high_freq_factor`` (llama3, defaults 1
            and 4), ``beta_fast``/``beta_slow``/``attention_factor`` (yarn).

    Raises:
        ValueError: an unknown type, a non-positive base, a missing or < 1 factor, a factor given for
            ``default``, a non-positive original context, or a value transformers' own validation rejects.
    """
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not one of {', '.join(ROPE_TYPES)}")
    cfg = _text_config(config)
    current = get_rope(cfg)
    theta = float(current["rope_theta"] if theta is None else theta)
    if not math.isfinite(theta) or theta <= 0:
        raise ValueError(f"theta must be a positive number, got {theta}")
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": theta}
    if rope_type == "default":
        if factor is not None or extra:
            raise ValueError(f"rope_type 'default' takes only theta; got factor={factor} and {sorted(extra)}")
    else:
        if factor is None or not math.isfinite(factor) or factor < 1:
            raise ValueError(f"rope_type {rope_type!r} needs factor >= 1, got {factor}")
        params["factor"] = float(factor)
    if rope_type in _NEEDS_ORIGINAL:
        original = int(original_max if original_max is not None else cfg.max_position_embeddings)
        if original < 1:
            raise ValueError(f"original_max must be >= 1, got {original}")
        params["original_max_position_embeddings"] = original
        if rope_type == "llama3":
            params.setdefault("low_freq_factor", 1.0)
            params.setdefault("high_freq_factor", 4.0)
    elif original_max is not None:
        raise ValueError(f"original_max applies to yarn and llama3 only, not {rope_type!r}")
    params.update({k: float(v) for k, v in extra.items()})
    if max_position_embeddings is not None:
        if max_position_embeddings < 1:
            raise ValueError(f"max_position_embeddings must be >= 1, got {max_position_embeddings}")
        cfg.max_position_embeddings = int(max_position_embeddings)
    legacy = None if rope_type == "default" else {**{k: v for k, v in params.items() if k != "rope_theta"},
                                                   "type": rope_type}
    if IS_TRANSFORMERS_5:
        cfg.rope_parameters = dict(params)
        # 4.x fields, kept in the instance dict so config.json carries them (``rope_scaling`` is a property on 5.x
        # aliasing rope_parameters; 5.x reads rope_parameters + rope_theta back, and 4.x reads these)
        vars(cfg)["rope_theta"] = theta
        vars(cfg)["rope_scaling"] = legacy
    else:
        cfg.rope_theta = theta
        cfg.rope_scaling = legacy
        cfg.rope_parameters = dict(params)  # unknown to 4.x, read by 5.x when it loads this config.json
    _validate(cfg)
    return config


def _validate(cfg: Any) -> None:
    try:
        if hasattr(cfg, "validate_rope"):
            cfg.validate_rope()
        else:
            from transformers.modeling_rope_utils import rope_config_validation

            rope_config_validation(cfg)
    except KeyError as exc:  # 5.x reports missing keys as KeyError
        raise ValueError(f"invalid RoPE parameters {get_rope(cfg)}: {exc}") from None


def rope_inv_freq_1(theta: float, head_dim: int) -> float:
    """``1 / theta^(2/head_dim)``: the second inverse frequency of default RoPE (a checkable value)."""
    return 1.0 / theta ** (2 / head_dim)


__all__ = ["ROPE_TYPES", "get_rope", "rope_inv_freq_1", "set_rope"]
