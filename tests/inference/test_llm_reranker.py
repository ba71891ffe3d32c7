"""LLMReranker: the yes-logit equals a plain full-vocabulary forward pass on the prompt built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_rerankers
import torch

from flagembed.inference.llm_reranker import LLMReranker
from flagembed.inference.pair_inputs import DEFAULT_LLM_PROMPT

PAIRS = [
    ("what is the cell", "the cell is a small protein in the human brain"),
    ("hiv drug", "clinical therapy for hiv patients with drug treatment and risk of cancer in the long study"),
    ("a", "b"),
    ("blood virus", "the virus was found in blood"),
]


@pytest.fixture(scope="module", params=["qwen2", "llama", "gemma2"])
def decoder_lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_rerankers.build_decoder_lm(tmp_path_factory.mktemp("llm") / request.param, request.param, layers=2)


def _manual(path: Path, pairs: list[tuple[str, str]], prompt: str = DEFAULT_LLM_PROMPT) -> list[float]:
    """``<bos>A: q\\nB: p\\n{prompt}`` one pair at a time, full logits, last position, first 'Yes' token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    out = []
    for q, p in pairs:
        seq = [tok.bos_token_id, *ids("A: " + q), *ids("\n"), *ids("B: " + p), *ids("\n"), *ids(prompt)]
        with torch.no_grad():
            out.append(float(model(input_ids=torch.tensor([seq])).logits[0, -1, yes]))
    return out


def test_yes_logit_matches_manual_forward(decoder_lm: Path) -> None:
    rr = LLMReranker(decoder_lm, device="cpu", batch_size=3)
    got = rr.compute_score(PAIRS)
    np.testing.assert_allclose(got, _manual(decoder_lm, PAIRS), rtol=1e-4, atol=1e-5)
    assert len(rr.compute_score(PAIRS[2])) == 1


def test_padding_to_multiple_of_8_and_order(decoder_lm: Path) -> None:
    rr = LLMReranker(decoder_lm, device="cpu", batch_size=2)
    widths: list[int] = []
    handle = rr.model.get_decoder().register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        base = rr.compute_score(PAIRS)
    finally:
        handle.remove()
    assert widths and all(w % 8 == 0 for w in widths) and widths == sorted(widths, reverse=True)
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(rr.compute_score([PAIRS[i] for i in perm]), [base[i] for i in perm], rtol=1e-5)


def test_custom_prompt_and_normalize(decoder_lm: Path) -> None:
    rr = LLMReranker(decoder_lm, device="cpu", prompt="is it relevant ?")
    got = rr.compute_score(PAIRS[:2], normalize=True)
    want = 1 / (1 + np.exp(-np.array(_manual(decoder_lm, PAIRS[:2], "is it relevant ?"))))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_truncation_keeps_prompt(decoder_lm: Path) -> None:
    rr = LLMReranker(decoder_lm, device="cpu", max_length=16)
    long_p = " ".join(["the virus was found in blood"] * 10)
    tokens = rr.tokenize_pairs([("what is the cell", long_p)])
    tail = rr.tokenizer("\n" + DEFAULT_LLM_PROMPT, add_special_tokens=False)["input_ids"]
    assert tokens.ids[0][-len(tail) :] == tail and rr.last_truncated == 1
    tok = rr.tokenizer

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    # query cut to max_length*3//4, passage to max_length; the pair budget (max_length + sep + prompt) has room
    want = [tok.bos_token_id, *ids("A: what is the cell")[:12], *ids("\n"), *ids("B: " + long_p)[:16], *tail]
    assert tokens.ids[0] == want


def test_fp16_nan_is_recomputed_in_fp32(tmp_path: Path) -> None:
    path = tiny_rerankers.build_decoder_lm(tmp_path / "gemma", "gemma2", layers=2)
    ref = LLMReranker(path, device="cpu")
    ref.model.half().float()  # the same fp16-rounded weights, run in fp32
    want = ref.compute_score(PAIRS)
    rr = LLMReranker(path, device="cpu")
    rr.model.half()  # simulate an fp16 model whose activations overflow
    norm = rr.model.get_decoder().norm
    norm.register_forward_hook(lambda _m, _a, out: out * float("nan") if out.dtype == torch.float16 else out)
    with pytest.warns(UserWarning, match="fp16 produced NaN"):
        got = rr.compute_score(PAIRS)
    assert next(rr.model.parameters()).dtype == torch.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_peft_adapter_is_merged(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    path = tiny_rerankers.build_decoder_lm(tmp_path / "llama", "llama", layers=2)
    base = AutoModelForCausalLM.from_pretrained(path)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    rr = LLMReranker(path, device="cpu", peft_path=str(tmp_path / "adapter"))
    got = rr.compute_score(PAIRS[:2])
    plain = LLMReranker(path, device="cpu").compute_score(PAIRS[:2])
    tok = rr.tokenizer
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    want = []
    for seq in rr.tokenize_pairs(PAIRS[:2]).ids:  # unmerged adapter forward, one pair at a time
        with torch.no_grad():
            want.append(float(lora(input_ids=torch.tensor([seq])).logits[0, -1, yes]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, plain)


def test_checkpoints_without_a_trained_lm_head_are_refused(tmp_path: Path, tiny_qwen2: Path) -> None:
    import tiny_models

    with pytest.raises(ValueError, match="no trained LM head.*lm_head.weight"):
        LLMReranker(tiny_qwen2, device="cpu")  # a decoder embedder (AutoModel weights, no LM head)
    ce = tiny_models.build_bert(tmp_path / "ce", classifier=True)
    with pytest.raises(ValueError, match="no trained LM head.*--kind cross-encoder"):
        LLMReranker(ce, device="cpu")
