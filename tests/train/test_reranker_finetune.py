"""Reranker fine-tuning on tiny random models: pair building, by-hand losses through the real scorer, training,
save → load in Reranker / CrossEncoder / LLMReranker / LayerwiseReranker, LoRA merge, layerwise gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_rerankers import build_decoder_lm

from flagembed.train import (
    RerankerDataArguments,
    RerankerModelArguments,
    RerankerTrainingArguments,
    finetune_reranker,
    parse_reranker_args,
)
from flagembed.train.reranker_data import RerankerCollator, decoder_pair_ids, encoder_pair_ids
from flagembed.train.reranker_losses import group_ce_loss
from flagembed.train.reranker_trainer import RerankerTrainer, load_scorer

TOPICS = ["water fire", "brain blood", "virus hiv", "cancer patients", "mouse gene", "city country", "red blue"]
FILLER = ["big small long", "dark light old", "fast slow new", "green time level", "high low data"]


def _records(n: int = 7, kd: bool = False) -> list[dict]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rec = {"query": f"what {topic}", "pos": [f"{topic} study results"], "neg": [f"{f} study" for f in FILLER]}
        if kd:
            rec["pos_scores"] = [2.0]
            rec["neg_scores"] = [0.5 * j - 1 for j in range(len(FILLER))]
        out.append(rec)
    return out


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def _targs(out: Path, **kw: object) -> RerankerTrainingArguments:
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        loss_plot=False,
    )
    base.update(kw)
    return RerankerTrainingArguments(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_decoder_lm(tmp_path_factory.mktemp("models") / "tiny-llama4", "llama", layers=4)


# ---------------------------------------------------------------------------------------------- pair building
def test_encoder_pairs_fit_budget_cut_passage_first_and_cap_query(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    q_len, p_len = 4, 8
    query = " ".join(["water"] * 20)
    passage = " ".join(["fire"] * 30)
    built = encoder_pair_ids(tok, [query, "blood"], [passage, "brain cell"], q_len, p_len)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    water, fire = tok.convert_tokens_to_ids(["water", "fire"])
    q_cap = q_len + p_len // 4  # 6 query tokens
    room = q_len + p_len - 3 - q_cap  # the passage gets what is left of the 12-token budget
    assert built.ids[0] == [cls, *[water] * q_cap, sep, *[fire] * room, sep]
    assert len(built.ids[0]) == q_len + p_len
    assert built.types is not None and built.types[0] == [0] * (q_cap + 2) + [1] * (room + 1)
    short = tok("blood", "brain cell")["input_ids"]  # nothing cut: the tokenizer's own pair encoding
    assert built.ids[1] == short


def test_decoder_pairs_exact_id_layout(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = "Yes or No"
    sep = "city"  # the tiny word-level tokenizer drops "\n"; any one-token separator shows the layout
    built = decoder_pair_ids(tok, ["A: water fire"], ["B: brain blood cell"], 32, 128, [prompt], sep)
    assert len(ids(sep)) == 1
    assert built.ids[0] == [tok.bos_token_id, *ids("A: water fire"), *ids(sep), *ids("B: brain blood cell"),
                            *ids(sep), *ids(prompt)]  # fmt: skip
    # the passage is cut so that the whole input, prompt included, fits q_len + p_len
    long = decoder_pair_ids(tok, ["A: water"], ["B: " + " ".join(["fire"] * 50)], 4, 12, [prompt], sep)
    tail = ids(sep) + ids(prompt)
    assert len(long.ids[0]) == 16 and long.ids[0][-len(tail) :] == tail
    assert long.ids[0][: 1 + len(ids("A: water")) + 1] == [tok.bos_token_id, *ids("A: water"), *ids(sep)]


def test_decoder_layout_equals_llm_reranker_inputs(tiny_llama: Path) -> None:
    from flagembed.inference import LLMReranker

    rr = LLMReranker(str(tiny_llama), device="cpu", dtype="fp32")
    args = RerankerDataArguments(train_data=["x"], query_instruction_for_rerank="A: ",
                                 passage_instruction_for_rerank="B: ")  # fmt: skip
    coll = RerankerCollator(rr.tokenizer, args, "decoder")
    item = {"query": "A: water fire", "passages": ["B: brain blood"], "teacher_scores": None, "prompt": None}
    assert coll.pair_ids([item]).ids == rr.tokenize_pairs([("water fire", "brain blood")]).ids


# ---------------------------------------------------------------------------------------------- encoder kind
def test_encoder_loss_through_model_equals_by_hand_and_kd(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    scorer, tok, _ = load_scorer(RerankerModelArguments(model_name_or_path=str(tiny_bert)))
    args = RerankerDataArguments(train_data=["x"], train_group_size=3)
    coll = RerankerCollator(tok, args, "encoder")
    items = [
        {"query": "water", "passages": ["water fire", "city", "blue"], "teacher_scores": [1.0, 0.0, -1.0]},
        {"query": "brain", "passages": ["brain blood", "red", "old"], "teacher_scores": [0.5, 0.2, 0.1]},
    ]
    batch = coll(items)
    trainer = RerankerTrainer(model=scorer, args=_targs(tmp_path), processing_class=tok)
    scorer.eval()
    loss = trainer.compute_loss(scorer, batch).item()
    # by hand: each pair alone through the plain HF model (unpadded), then group CE + soft CE
    scorer.backbone.save_pretrained(tmp_path / "m")
    plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "m")).eval()
    z = []
    for it in items:
        row = []
        for p in it["passages"]:
            enc = tok(it["query"], p, return_tensors="pt")
            with torch.no_grad():
                row.append(plain(**enc).logits.item())
        z.append(row)
    ce = -sum(r[0] - math.log(sum(math.exp(v) for v in r)) for r in z) / 2
    kd = 0.0
    for r, it in zip(z, items):
        t = [math.exp(v) / sum(math.exp(u) for u in it["teacher_scores"]) for v in it["teacher_scores"]]
        lse = math.log(sum(math.exp(v) for v in r))
        kd -= sum(ti * (v - lse) for ti, v in zip(t, r)) / 2
    assert loss == pytest.approx(ce + kd, abs=1e-5)
    batch["teacher_scores"] = None
    assert trainer.compute_loss(scorer, batch).item() == pytest.approx(ce, abs=1e-5)


@pytest.mark.slow
def test_encoder_trains_with_partial_batches_and_loads_in_reranker_and_crossencoder(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from sentence_transformers import CrossEncoder
    from typer.testing import CliRunner

    from flagembed.cli import app
    from flagembed.inference import Reranker

    # 7 queries, 2 held out for calibration: 5 train in batches of 2, 2 and a partial 1 (not dropped, no failure)
    data = _write(tmp_path / "train.jsonl", _records(7))
    out = tmp_path / "ce"
    argv = ["finetune", "reranker", "--model", str(tiny_bert), "--model-type", "encoder", "--train-data", str(data),
            "--output", str(out), "--calibration-ratio", "0.3", "--train_group_size", "3",
            "--per_device_train_batch_size", "2", "--learning_rate", "5e-3", "--max_steps", "20", "--logging_steps",
            "1", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True",
            "--loss_plot", "False"]  # fmt: skip
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert "calibration on" in res.output
    history = json.loads((out / "loss_history.json").read_text())
    assert len(history) == 20 and history[-1]["loss"] < history[0]["loss"] * 0.75
    pairs = [("what water fire", "water fire study results"), ("what water fire", "big small long study"),
             ("brain", "dark light old")]  # fmt: skip
    rr = Reranker(str(out), device="cpu", dtype="fp32")
    ours = rr.compute_score(pairs)
    ce = CrossEncoder(str(out), device="cpu")
    theirs = ce.predict(pairs, convert_to_numpy=True).tolist()
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert ours[0] > ours[1]  # learned: the positive above a negative of the same query
    cal = json.loads((out / "reranker_calibration.json").read_text())
    expected = [1 / (1 + math.exp(-(cal["scale"] * s + cal["bias"]))) for s in ours]
    assert rr.compute_score(pairs, normalize=True) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------------- decoder kind
@pytest.mark.slow
def test_decoder_lora_trains_only_adapters_and_merged_equals_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    from flagembed.inference import LLMReranker

    model_args = RerankerModelArguments(
        model_name_or_path=str(tiny_llama), model_type="decoder", lora_rank=4, lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )  # fmt: skip
    scorer, tok, _ = load_scorer(model_args)
    trainable = [n for n, p in scorer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # score = logit of "Yes" at the last real token (right padding), by hand from the full LM logits
    args = RerankerDataArguments(train_data=["x"], train_group_size=2, query_instruction_for_rerank="A: ",
                                 passage_instruction_for_rerank="B: ")  # fmt: skip
    coll = RerankerCollator(tok, args, "decoder")
    batch = coll([{"query": "A: water", "passages": ["B: water fire cell", "B: red"], "teacher_scores": None}])
    scorer.eval()
    with torch.no_grad():
        got = scorer(**batch["pair"])
        logits = scorer.backbone(**batch["pair"]).logits
    last = batch["pair"]["attention_mask"].sum(1) - 1
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    assert torch.allclose(got, logits[torch.arange(2), last, yes], atol=1e-5)

    data = _write(tmp_path / "train.jsonl", _records(6))
    out = tmp_path / "llm"
    result = finetune_reranker(
        model_args,
        RerankerDataArguments(train_data=[str(data)], train_group_size=3, prompt="Yes or No"),
        _targs(out, learning_rate=2e-2, max_steps=3),
    )
    assert result.merged_dir == str(out / "merged_model")
    pairs = [("water fire", "water fire study results"), ("water fire", "big small long study")]
    merged = LLMReranker(result.merged_dir, device="cpu", dtype="fp32", prompt="Yes or No").compute_score(pairs)
    adapter = LLMReranker(str(tiny_llama), peft_path=str(out), device="cpu", dtype="fp32", prompt="Yes or No")
    assert merged == pytest.approx(adapter.compute_score(pairs), abs=1e-5)
    base = LLMReranker(str(tiny_llama), device="cpu", dtype="fp32", prompt="Yes or No").compute_score(pairs)
    assert max(abs(a - b) for a, b in zip(merged, base)) > 1e-4  # the adapter changed the scores


# ---------------------------------------------------------------------------------------------- layerwise kind
def test_layerwise_scores_every_head_by_hand_and_all_heads_get_gradient(tiny_llama: Path, tmp_path: Path) -> None:
    model_args = RerankerModelArguments(
        model_name_or_path=str(tiny_llama), model_type="layerwise", start_layer=2, use_lora=False
    )
    scorer, tok, _ = load_scorer(model_args)
    assert scorer.layers == [2, 3, 4] and len(list(scorer.heads.parameters())) == 3
    args = RerankerDataArguments(train_data=["x"], train_group_size=3, query_instruction_for_rerank="A: ",
                                 passage_instruction_for_rerank="B: ")  # fmt: skip
    coll = RerankerCollator(tok, args, "layerwise")
    batch = coll([
        {"query": "A: water", "passages": ["B: water fire", "B: red", "B: old city"], "teacher_scores": None},
        {"query": "A: brain", "passages": ["B: brain", "B: blue sky", "B: mouse"], "teacher_scores": None},
    ])  # fmt: skip
    scores = scorer(**batch["pair"])
    assert scores.shape == (6, 3)
    # by hand for the shallower layers: HF hidden_states[k] is the raw state after k layers
    with torch.no_grad():
        hs = scorer.backbone(**batch["pair"], output_hidden_states=True).hidden_states
    last = batch["pair"]["attention_mask"].sum(1) - 1
    norm = scorer.backbone.model.norm
    for j, k in enumerate([2, 3]):
        head = scorer.heads.heads[str(k)].weight[0]
        want = norm(hs[k])[torch.arange(6), last] @ head
        assert torch.allclose(scores[:, j].detach(), want, atol=1e-5)
    # loss = sum of the three CEs + self-distillation of layers 2, 3 from layer 4, by hand
    z = [scores[:, j].detach().view(2, 3) for j in range(3)]
    ce = sum(group_ce_loss(zj, 3).item() for zj in z)
    t = torch.softmax(z[2], -1)
    distill = sum(-(t * torch.log_softmax(zj, -1)).sum(-1).mean().item() for zj in z[:2])
    trainer = RerankerTrainer(model=scorer, args=_targs(tmp_path), processing_class=tok)
    loss = trainer.compute_loss(scorer, batch)
    assert loss.item() == pytest.approx(ce + distill, abs=1e-5)
    scorer.zero_grad()
    loss.backward()
    for k in [2, 3, 4]:  # the packaged reference trains only the last layer's head
        grad = scorer.heads.heads[str(k)].weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"head {k} got no gradient"


@pytest.mark.slow
def test_layerwise_saved_heads_load_in_layerwise_reranker(tiny_llama: Path, tmp_path: Path) -> None:
    from flagembed.inference import LayerwiseReranker
    from flagembed.train.reranker_trainer import score_items

    data = _write(tmp_path / "train.jsonl", _records(6))
    out = tmp_path / "lw"
    margs = RerankerModelArguments(model_name_or_path=str(tiny_llama), model_type="layerwise", start_layer=2,
                                   lora_rank=4, target_modules=["q_proj", "v_proj"])  # fmt: skip
    dargs = RerankerDataArguments(train_data=[str(data)], train_group_size=3)
    result = finetune_reranker(margs, dargs, _targs(out, learning_rate=2e-2, max_steps=3))
    rr = LayerwiseReranker(result.model_dir, device="cpu", dtype="fp32")
    assert rr.available_layers == [2, 3, 4]
    pairs = [("water fire", "water fire study results"), ("brain", "dark light old")]
    got = rr.compute_score(pairs, cutoff_layers=[2, 3, 4])
    scorer, tok, _ = load_scorer(RerankerModelArguments(model_name_or_path=result.model_dir, model_type="layerwise",
                                                        start_layer=2, use_lora=False))  # fmt: skip
    coll = RerankerCollator(tok, dargs, "layerwise")
    items = [{"query": "A: " + q, "passages": ["B: " + p], "teacher_scores": None} for q, p in pairs]
    want = score_items(scorer, coll, items)  # (2, 3): the trainer's own scorer on the reloaded folder
    assert torch.allclose(torch.tensor(got).T, torch.from_numpy(want), atol=1e-5)


def test_reference_argument_names_parse() -> None:
    m, d, t = parse_reranker_args([
        "--model_name_or_path", "x", "--model_type", "decoder", "--train_data", "a.jsonl", "--output_dir", "o",
        "--train_group_size", "4", "--query_max_len", "16", "--passage_max_len", "64", "--sep_token", "\n",
        "--knowledge_distillation", "True", "--query_instruction_for_rerank", "A: ", "--report_to", "none",
    ])  # fmt: skip
    assert (m.model_type, m.use_lora, d.train_group_size, d.knowledge_distillation) == ("decoder", True, 4, True)
    with pytest.raises(ValueError, match="model_type"):
        parse_reranker_args(["--model_name_or_path", "x", "--model_type", "bert", "--train_data", "a",
                             "--output_dir", "o"])  # fmt: skip
    with pytest.raises(ValueError, match="use_lora"):
        RerankerModelArguments(model_name_or_path="x", model_type="encoder", use_lora=True)
