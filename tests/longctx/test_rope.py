"""set_rope: 5.x rope_parameters and 4.x fields written together, validated, and kept through save → load."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from tiny_longctx import bpe_tokenizer, build_llama

from flagembed._compat import IS_TRANSFORMERS_5
from flagembed.longctx.rope import get_rope, rope_inv_freq_1, set_rope

HEAD_DIM = 16  # tiny Llama: 64 / 4 heads


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("rope") / "llama", bpe_tokenizer())


def _inv_freq(model):
    return model.model.rotary_emb.inv_freq


def test_theta_reaches_the_rotary_embedding_and_survives_save_load(llama_path, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = set_rope(AutoConfig.from_pretrained(llama_path), theta=2e8)
    assert get_rope(config) == {"rope_type": "default", "rope_theta": 2e8}
    if IS_TRANSFORMERS_5:
        assert config.rope_parameters["rope_theta"] == 2e8
    else:
        assert config.rope_theta == 2e8
    base = AutoModelForCausalLM.from_pretrained(llama_path).eval()
    model = AutoModelForCausalLM.from_pretrained(llama_path, config=config).eval()
    assert _inv_freq(model)[1].item() == pytest.approx(rope_inv_freq_1(2e8, HEAD_DIM), rel=1e-5)
    one, two = torch.tensor([[5]]), torch.tensor([[5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(model(one).logits, base(one).logits, atol=1e-6)  # RoPE at position 0 is identity
        assert not torch.allclose(model(two).logits, base(two).logits, atol=1e-4)
    model.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["rope_theta"] == 2e8 and saved["rope_parameters"]["rope_theta"] == 2e8  # both, for 4.x and 5.x
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert get_rope(again.config)["rope_theta"] == 2e8
    assert _inv_freq(again)[1].item() == pytest.approx(rope_inv_freq_1(2e8, HEAD_DIM), rel=1e-5)


@pytest.mark.skipif(not IS_TRANSFORMERS_5, reason="documents a transformers 5.x break")
def test_from_pretrained_rope_theta_kwarg_raises_on_5x(llama_path):
    """Why the helper exists: the reference's documented loading call fails on 5.x."""
    from transformers import AutoModelForCausalLM

    with pytest.raises(TypeError, match="rope_theta"):
        AutoModelForCausalLM.from_pretrained(llama_path, rope_theta=2e8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "dynamic", "factor": 2.0, "theta": 5e5},
        {"rope_type": "yarn", "factor": 4.0, "original_max": 512},
        {"rope_type": "llama3", "factor": 8.0, "original_max": 256, "theta": 5e5},
    ],
)
def test_scaling_types_round_trip(llama_path, tmp_path, kwargs):
    from transformers import AutoConfig

    config = set_rope(AutoConfig.from_pretrained(llama_path), max_position_embeddings=2048, **kwargs)
    want = get_rope(config)
    assert want["rope_type"] == kwargs["rope_type"] and want["factor"] == kwargs["factor"]
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["rope_scaling"]["type"] == kwargs["rope_type"]  # what 4.x reads
    got = get_rope(AutoConfig.from_pretrained(tmp_path))
    for key, value in want.items():
        assert got[key] == value, key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rope_type": "ntk"}, "rope_type"),
        ({"theta": -1.0}, "theta"),
        ({"rope_type": "linear"}, "factor"),
        ({"rope_type": "linear", "factor": 0.5}, "factor"),
        ({"rope_type": "default", "factor": 2.0}, "takes only theta"),
        ({"rope_type": "linear", "factor": 2.0, "original_max": 128}, "original_max"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max": 0}, "original_max"),
    ],
)
def test_invalid_settings_are_refused(llama_path, kwargs, match):
    from transformers import AutoConfig

    with pytest.raises(ValueError, match=match):
        set_rope(AutoConfig.from_pretrained(llama_path), **kwargs)


REF_SCRIPT = r"""
import json, sys
from transformers import AutoConfig, AutoModelForCausalLM
path, out = sys.argv[1], sys.argv[2]
cfg = AutoConfig.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
res = {"rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling,
       "inv_freq_1": model.model.rotary_emb.inv_freq[1].item()}
from flagembed.longctx.rope import set_rope, get_rope
cfg2 = set_rope(AutoConfig.from_pretrained(path), theta=3e7, rope_type="linear", factor=2.0)
cfg2.save_pretrained(out)
res["own"] = get_rope(cfg2)
print(json.dumps(res))
"""


def _ref_python() -> str:
    ref = os.environ.get("FLAGEMBED_REF_PYTHON")
    if not ref or not Path(ref).is_file():
        pytest.skip("FLAGEMBED_REF_PYTHON is unset or missing (transformers 4.57 reference venv)")
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{"theta": 2e8}, {"theta": 1e6, "rope_type": "yarn", "factor": 4.0}])
def test_round_trip_through_transformers_457(llama_path, tmp_path, kwargs):
    """A config written here (5.x) keeps its RoPE on 4.57, and one written by set_rope on 4.57 loads here."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ref = _ref_python()
    model = AutoModelForCausalLM.from_pretrained(llama_path, config=set_rope(AutoConfig.from_pretrained(llama_path),
                                                                              **kwargs))
    model.save_pretrained(tmp_path / "m")
    bpe_tokenizer().save_pretrained(tmp_path / "m")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([ref, "-c", REF_SCRIPT, str(tmp_path / "m"), str(tmp_path / "v4")], capture_output=True,
                          text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["rope_theta"] == kwargs["theta"]
    if "rope_type" in kwargs:
        assert res["rope_scaling"]["factor"] == 4.0 and res["rope_scaling"]["rope_type"] == "yarn"
    else:
        assert res["rope_scaling"] is None
        assert res["inv_freq_1"] == pytest.approx(rope_inv_freq_1(2e8, HEAD_DIM), rel=1e-5)
    assert res["own"] == {"rope_type": "linear", "rope_theta": 3e7, "factor": 2.0}
    back = get_rope(AutoConfig.from_pretrained(tmp_path / "v4"))
    assert back["rope_theta"] == 3e7 and back["rope_type"] == "linear" and back["factor"] == 2.0
