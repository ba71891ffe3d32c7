"""FlagLLMModel / FlagICLModel / FlagPseudoMoEModel: exact prompts and token ids, by hand and against FlagEmbedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_decoders import build_llm_embedder

from flagembed import FlagAutoModel, FlagICLModel, FlagLLMModel, FlagPseudoMoEModel

INSTR = "given a query retrieve relevant passages"
QUERIES = ["what is the gene", "how does the virus increase risk of cancer in patients", "why"]
DOCS = ["the gene is data", "a virus and the human blood cells", "water"]
EXAMPLES = [
    {"instruct": "retrieve passages", "query": "what is a cell", "response": "a cell is small"},
    {"query": "who are they", "response": "they are patients"},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {arch: build_llm_embedder(root / arch, arch) for arch in ("mistral", "qwen2")}


def by_hand(path: Path, texts: list[str] | list[list[int]]) -> np.ndarray:
    """One text at a time through AutoModel (no padding): the last position's state, L2-normalized."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = t if isinstance(t, list) else tok(t)["input_ids"]
            h = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            out.append(torch.nn.functional.normalize(h, dim=-1).numpy())
    return np.stack(out)


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_llm_model_prompt_and_embeddings(models, arch):
    path = models[arch]
    m = FlagLLMModel(path, query_instruction_for_retrieval=INSTR, devices="cpu", batch_size=2)
    prompts = [f"Instruct: {INSTR}\nQuery: {q}" for q in QUERIES]
    np.testing.assert_allclose(m.encode_queries(QUERIES), by_hand(path, prompts), atol=1e-5)
    np.testing.assert_allclose(m.encode_corpus(DOCS), by_hand(path, DOCS), atol=1e-5)
    with pytest.raises(ValueError, match="last_token"):
        FlagLLMModel(path, pooling_method="cls", devices="cpu")


def test_pad_to_multiple_of_pads_batches_and_keeps_embeddings(models):
    path = models["qwen2"]
    plain = FlagLLMModel(path, devices="cpu")
    padded = FlagLLMModel(path, devices="cpu", pad_to_multiple_of=8)
    lengths = []
    forward = padded.encoder.backbone.forward

    def record(*args, **kwargs):
        lengths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    padded.encoder.backbone.forward = record
    np.testing.assert_allclose(padded.encode(DOCS), plain.encode(DOCS), atol=1e-5)
    assert lengths and all(n % 8 == 0 for n in lengths)


def test_icl_prefix_string_and_query_ids(models):
    path = models["mistral"]
    m = FlagICLModel(path, query_instruction_for_retrieval=INSTR, examples_for_task=EXAMPLES, devices="cpu")
    assert m.prefix == (
        "<instruct>retrieve passages\n<query>what is a cell\n<response>a cell is small\n\n"
        f"<instruct>{INSTR}\n<query>who are they\n<response>they are patients\n\n"
    )
    tok = m.tokenizer
    max_length = 16
    # "<s>" is one token; "\n<response></s>" is "<", "response", ">", "</s>": room = 16 - 1 - 4
    room = max_length - 1 - 4
    expected = []
    for q in QUERIES:
        text = f"<instruct>{INSTR}\n<query>{q}"
        body = tok(text, add_special_tokens=False)["input_ids"][:room]
        prompt = m.prefix + tok.decode(body) + "\n<response>"
        n_prefix = len(tok(m.prefix, add_special_tokens=False)["input_ids"])
        limit = (n_prefix + 3 + max_length + 8) // 8 * 8 + 8
        expected.append(tok(prompt)["input_ids"][:limit])
    got = m.query_token_ids(QUERIES, max_length)
    assert got == expected
    assert all(ids[-1] == tok.eos_token_id and ids[0] == tok.bos_token_id for ids in got)  # bge-en-icl layout
    emb = m.encode_queries(QUERIES, max_length=max_length)
    np.testing.assert_allclose(emb, by_hand(path, expected), atol=1e-5)
    # passages: no examples, no instruction, no suffix
    np.testing.assert_allclose(m.encode_corpus(DOCS), by_hand(path, DOCS), atol=1e-5)
    m.set_examples([{"query": "a", "response": "b"}])
    assert m.prefix == f"<instruct>{INSTR}\n<query>a\n<response>b\n\n"
    with pytest.raises(ValueError, match="no room"):
        m.query_token_ids(QUERIES, 4)


def test_icl_without_examples_or_instruction(models):
    path = models["qwen2"]
    m = FlagICLModel(path, devices="cpu")
    assert m.prefix == ""
    ids = m.query_token_ids(["what is the gene"], 512)
    assert ids == [m.tokenizer("what is the gene\n<response>")["input_ids"]]
    assert m.encode_queries("what is the gene").shape == (32,)


def test_auto_model_maps_decoder_names(models, tmp_path):
    for name, cls, fmt in (
        ("bge-en-icl", FlagICLModel, "<instruct>{}\n<query>{}"),
        ("e5-mistral-7b-instruct", FlagLLMModel, "Instruct: {}\nQuery: {}"),
        ("Qwen3-Embedding-0.6B", FlagLLMModel, "Instruct: {}\nQuery:{}"),
        ("bge-multilingual-gemma2", FlagLLMModel, "<instruct>{}\n<query>{}"),
    ):
        folder = tmp_path / name
        if not folder.exists():
            folder.symlink_to(models["qwen2"], target_is_directory=True)
        m = FlagAutoModel.from_finetuned(str(folder), devices="cpu")
        assert type(m) is cls and m.query_instruction_format == fmt and m.settings.pooling == "last_token"
    m = FlagAutoModel.from_finetuned(str(models["qwen2"]), model_class="decoder-only-base", devices="cpu")
    assert type(m) is FlagLLMModel and m.query_instruction_format == "{}{}"  # the reference's class-given default


def test_pseudo_moe_domain_and_non_finite(models):
    path = models["qwen2"]
    m = FlagPseudoMoEModel(path, devices="cpu", trust_remote_code=False, domain_for_pseudo_moe="coding")
    backbone = m.encoder.backbone
    seen: dict[str, list] = {"set": [], "forward": []}
    backbone.set_domain = lambda d: seen["set"].append(d)
    forward = backbone.forward

    def fwd(input_ids=None, attention_mask=None, domain=None):
        seen["forward"].append(domain)
        out = forward(input_ids=input_ids, attention_mask=attention_mask)
        out.last_hidden_state[:, -1, 0] = float("nan")  # a non-finite value must not reach the output
        return out

    backbone.forward = fwd
    m._forward_takes_domain = True
    emb = m.encode(DOCS, domain="reasoning")
    assert np.isfinite(emb).all() and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert seen["set"] == ["reasoning"] and set(seen["forward"]) == {"reasoning"}
    m.encode_queries(QUERIES)
    assert seen["set"][-1] == "coding"


# use_fp16=False: on CPU the reference loads fp16 weights and then casts them to fp32 (weights rounded to
# fp16, ~1e-4 off the checkpoint); flagembed loads fp32 weights on CPU.
REF_SCRIPT = r"""
import json, sys
import numpy as np
from FlagEmbedding import FlagICLModel, FlagLLMModel
spec = json.loads(sys.argv[1])
out = {}
for arch, path in spec["models"].items():
    llm = FlagLLMModel(path, query_instruction_for_retrieval=spec["instr"], devices="cpu", use_fp16=False, batch_size=2)
    out[arch + "/llm_q"] = llm.encode_queries(spec["queries"])
    out[arch + "/llm_p"] = llm.encode_corpus(spec["docs"])
    pad8 = FlagLLMModel(path, devices="cpu", use_fp16=False, pad_to_multiple_of=8)
    out[arch + "/pad8_q"] = pad8.encode_queries(spec["queries"])
    icl = FlagICLModel(path, query_instruction_for_retrieval=spec["instr"], examples_for_task=spec["examples"],
                       devices="cpu", use_fp16=False, query_max_length=spec["qmax"])
    out[arch + "/icl_q"] = icl.encode_queries(spec["queries"])
    out[arch + "/icl_p"] = icl.encode_corpus(spec["docs"])
    icl.set_examples(None)
    bare = FlagICLModel(path, query_instruction_for_retrieval=spec["instr"], devices="cpu", use_fp16=False)
    out[arch + "/icl0_q"] = bare.encode_queries(spec["queries"])
np.savez(spec["out"], **out)
"""


@pytest.mark.slow
def test_parity_with_flagembedding(models, tmp_path):
    from ref_python import run_ref

    spec = {
        "models": {k: str(v) for k, v in models.items()},
        "instr": INSTR,
        "queries": QUERIES,
        "docs": DOCS,
        "examples": EXAMPLES,
        "qmax": 16,
        "out": str(tmp_path / "ref.npz"),
    }
    run_ref(REF_SCRIPT, json.dumps(spec))
    ref = np.load(spec["out"])
    for arch, path in models.items():
        llm = FlagLLMModel(path, query_instruction_for_retrieval=INSTR, devices="cpu", batch_size=2)
        got = {"llm_q": llm.encode_queries(QUERIES), "llm_p": llm.encode_corpus(DOCS)}
        got["pad8_q"] = FlagLLMModel(path, devices="cpu", pad_to_multiple_of=8).encode_queries(QUERIES)
        icl = FlagICLModel(path, query_instruction_for_retrieval=INSTR, examples_for_task=EXAMPLES, devices="cpu",
                           query_max_length=16)  # fmt: skip
        got["icl_q"], got["icl_p"] = icl.encode_queries(QUERIES), icl.encode_corpus(DOCS)
        got["icl0_q"] = FlagICLModel(path, query_instruction_for_retrieval=INSTR, devices="cpu").encode_queries(QUERIES)
        for key, value in got.items():
            np.testing.assert_allclose(value, ref[f"{arch}/{key}"], atol=1e-5, err_msg=f"{arch}/{key}")
