"""mix_models / mix_models_by_layers: weighted sums checked against an independent float64 computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_merge
import tiny_models
import torch
from safetensors.torch import load_file

from flagembed.merge import check_weights, mix_models, mix_models_by_layers

WEIGHTS = [0.5, 0.3, 0.2]
TYPES = ["encoder", "reranker", "decoder"]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("families")
    return {t: tiny_merge.build_family(root, t) for t in TYPES}


def _expected(paths: list[Path], weights: list[float], name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """Independent reference: float64 weighted sum of every floating tensor, others from model 0."""
    if name.endswith(".pt"):
        states = [torch.load(p / name, weights_only=True) for p in paths]
    else:
        states = [load_file(str(p / name)) for p in paths]
    out = {}
    for k, t0 in states[0].items():
        if t0.is_floating_point():
            out[k] = sum(w * s[k].double() for w, s in zip(weights, states))
        else:
            out[k] = t0
    return out


def _assert_close_to_expected(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for k, e in expected.items():
        if e.is_floating_point():
            assert got[k].dtype == torch.float32
            torch.testing.assert_close(got[k].double(), e, rtol=0, atol=1e-6, msg=k)
        else:
            assert torch.equal(got[k], e), k


@pytest.mark.parametrize("model_type", TYPES)
def test_mix_models_is_the_weighted_sum(families, tmp_path, model_type):
    paths = families[model_type]
    out = tmp_path / "merged"
    model = mix_models(paths, model_type, WEIGHTS, out)
    _assert_close_to_expected(load_file(str(out / "model.safetensors")), _expected(paths, WEIGHTS))
    # the returned model holds the merged weights, and has the right class
    cls = {"encoder": "BertModel", "reranker": "XLMRobertaForSequenceClassification", "decoder": "Qwen2ForCausalLM"}
    assert type(model).__name__ == cls[model_type]
    merged = load_file(str(out / "model.safetensors"))
    state = model.state_dict()
    for k, v in merged.items():
        assert torch.equal(state[k], v), k
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(tmp_path.glob(".merged*")), "staging folder left behind"


def test_m3_head_files_are_merged(families, tmp_path):
    paths = families["encoder"]
    mix_models(paths, "encoder", WEIGHTS, tmp_path / "m", return_model=False)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        got = torch.load(tmp_path / "m" / name, weights_only=True)
        _assert_close_to_expected(got, _expected(paths, WEIGHTS, name))


@pytest.mark.parametrize("model_type", TYPES)
def test_by_layers_is_bit_identical(families, tmp_path, model_type):
    paths = families[model_type]
    mix_models(paths, model_type, WEIGHTS, tmp_path / "a", return_model=False)
    model = mix_models_by_layers(paths, model_type, WEIGHTS, tmp_path / "b")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in b.items())
    for name in ("sparse_linear.pt", "colbert_linear.pt") if model_type == "encoder" else ():
        ha, hb = (torch.load(tmp_path / d / name, weights_only=True) for d in "ab")
        assert all(torch.equal(ha[k], hb[k]) for k in ha)
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == sorted(p.name for p in (tmp_path / "b").rglob("*"))


def test_half_precision_and_mixed_dtypes(tmp_path):
    """fp16 models are summed in float32 and cast back once; the output keeps model 0's dtype."""
    from transformers import AutoModel

    paths = []
    for seed, dtype in ((0, torch.float16), (1, torch.float32)):
        p = tiny_models.build_bert(tmp_path / f"h{seed}", seed=seed)
        AutoModel.from_pretrained(str(p)).to(dtype).save_pretrained(p)
        paths.append(p)
    mix_models(paths, "encoder", [0.25, 0.75], tmp_path / "a", return_model=False)
    mix_models_by_layers(paths, "encoder", [0.25, 0.75], tmp_path / "b", return_model=False)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    ins = [load_file(str(p / "model.safetensors")) for p in paths]
    for k, v in a.items():
        assert v.dtype == torch.float16 and torch.equal(v, b[k])
        want = (0.25 * ins[0][k].double() + 0.75 * ins[1][k].double()).half()
        torch.testing.assert_close(v, want, rtol=1e-3, atol=1e-3)


def test_encoder_folder_loads_in_sentence_transformers(families, tmp_path):
    """No ST config in model 0 → CLS + Normalize written (registry/default pooling), and it encodes right."""
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "m"
    mix_models(families["encoder"], "encoder", WEIGHTS, out, return_model=False)
    texts = ["what is the cell", "protein gene cancer risk"]
    got = st.SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True)
    tok, model = AutoTokenizer.from_pretrained(str(out)), AutoModel.from_pretrained(str(out)).eval()
    with torch.no_grad():
        hidden = model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state
    want = torch.nn.functional.normalize(hidden.select(1, 0), dim=-1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_encoder_keeps_model_zero_st_layout(tmp_path):
    paths = [tiny_models.add_st_config(tiny_models.build_bert(tmp_path / f"s{i}", seed=i), "mean", True, 64)
             for i in range(2)]  # fmt: skip
    mix_models(paths, "encoder", [0.5, 0.5], tmp_path / "m", return_model=False)
    pool = json.loads((tmp_path / "m" / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]
    assert json.loads((tmp_path / "m" / "sentence_bert_config.json").read_text())["max_seq_length"] == 64


def test_negative_weights_need_opt_in(families, tmp_path):
    paths = families["encoder"][:2]
    with pytest.raises(ValueError, match="weight 1 is -0.5"):
        mix_models(paths, "encoder", [1.5, -0.5], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    mix_models(paths, "encoder", [1.5, -0.5], tmp_path / "m", allow_negative=True, return_model=False)
    _assert_close_to_expected(load_file(str(tmp_path / "m" / "model.safetensors")), _expected(paths, [1.5, -0.5]))


@pytest.mark.parametrize(
    ("weights", "error", "match"),
    [
        ([0.5, 0.5], ValueError, "got 2 weights for 3 models"),
        ([0.5, 0.3, 0.3], ValueError, "sum to 1.1"),
        ([0.9, 0.1, -0.0001 + 0.0], ValueError, "weight 2 is -0.0001"),
        ([0.5, float("nan"), 0.5], ValueError, "weight 1 is nan"),
        ([0.5, "0.3", 0.2], TypeError, "weight 1 is '0.3'"),
    ],
)
def test_bad_weights_write_nothing(families, tmp_path, weights, error, match):
    with pytest.raises(error, match=match):
        mix_models(families["encoder"], "encoder", weights, tmp_path / "m")
    with pytest.raises(error, match=match):
        mix_models_by_layers(families["encoder"], "encoder", weights, tmp_path / "m")
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_weights_tolerance_is_two_sided():
    assert check_weights([0.5, 0.5005], 2) == [0.5, 0.5005]
    with pytest.raises(ValueError, match="sum to 0.99"):
        check_weights([0.5, 0.49], 2)  # the reference's one-sided check accepts this


def test_mismatched_architectures_write_nothing(families, tmp_path):
    with pytest.raises(ValueError, match=r"model 1 .* different parameters .* one architecture"):
        mix_models([families["encoder"][0], families["decoder"][0]], "encoder", [0.5, 0.5], tmp_path / "out")
    from transformers import BertConfig, BertModel

    wide = tmp_path / "wide"
    cfg = BertConfig(
        vocab_size=len(tiny_models.bert_tokenizer(tmp_path / "t")),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(wide)
    with pytest.raises(ValueError, match=r"model 1 .*intermediate.dense.bias' has shape \[48\], model 0 has \[64\]"):
        mix_models_by_layers([families["encoder"][0], wide], "encoder", [0.5, 0.5], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_arguments(families, tmp_path):
    paths = families["encoder"]
    with pytest.raises(ValueError, match="unknown model_type 'seq2seq'; valid: encoder, reranker, decoder"):
        mix_models(paths, "seq2seq", WEIGHTS, tmp_path / "m")
    with pytest.raises(ValueError, match="non-empty list"):
        mix_models([], "encoder", [], tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        mix_models([paths[0], tmp_path / "missing"], "encoder", [0.5, 0.5], tmp_path / "m")
    with pytest.raises(ValueError, match="nothing to do"):
        mix_models(paths, "encoder", WEIGHTS, None, return_model=False)
    assert not (tmp_path / "m").exists()


def test_occupied_output_needs_overwrite(families, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty; pass overwrite=True"):
        mix_models(families["encoder"], "encoder", WEIGHTS, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    mix_models(families["encoder"], "encoder", WEIGHTS, out, overwrite=True, return_model=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_no_output_path_returns_the_model(families):
    model = mix_models(families["decoder"], "decoder", WEIGHTS)
    want = _expected(families["decoder"], WEIGHTS)
    state = model.state_dict()
    for k, v in want.items():
        torch.testing.assert_close(state[k].double(), v, rtol=0, atol=1e-6)


def test_sharded_and_bin_inputs(families, tmp_path):
    """Sharded safetensors and pytorch_model.bin inputs merge to the same bits as single files."""
    from transformers import AutoModelForCausalLM

    paths = families["decoder"][:2]
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(paths[1])).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((paths[0] / "config.json").read_text())
    torch.save(load_file(str(paths[0] / "model.safetensors")), binary / "pytorch_model.bin")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (binary / name).write_text((paths[0] / name).read_text())
    mix_models(paths, "decoder", [0.5, 0.5], tmp_path / "a", return_model=False)
    mix_models_by_layers([binary, sharded], "decoder", [0.5, 0.5], tmp_path / "b", return_model=False)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_integer_buffers_may_differ(tmp_path):
    """Older checkpoints save ``embeddings.position_ids``; newer ones do not: model 0's buffers are kept."""
    from safetensors.torch import save_file

    paths = []
    for i in range(2):
        dest = tmp_path / f"e{i}"
        tiny_models.build_bert(dest, seed=i)
        if i == 1:
            state = load_file(str(dest / "model.safetensors"))
            state["embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
            save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
        paths.append(dest)
    for order in (paths, paths[::-1]):
        out = tmp_path / f"m-{order[0].name}"
        mix_models_by_layers(order, "encoder", [0.5, 0.5], out, return_model=False)
        got = load_file(str(out / "model.safetensors"))
        assert ("embeddings.position_ids" in got) == (order[0].name == "e1")
        _assert_close_to_expected(
            {k: v for k, v in got.items() if v.is_floating_point()},
            {k: v for k, v in _expected(order, [0.5, 0.5]).items() if v.is_floating_point()},
        )
