"""LLM-Embedder's method: LM teacher scores, its three losses (by-hand loops, Appendix A), per-task recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_rerankers import build_decoder_lm

from flagembed.train.llm_embedder import LLM_EMBEDDER_TRAIN_CONFIG, TaskTrainConfig, prepare_group
from flagembed.train.llm_embedder_losses import kl_distill_loss, llm_embedder_loss, stable_distill_loss
from flagembed.train.lm_scoring import answer_scores, lm_teacher_scores, prompt_ids


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_decoder_lm(tmp_path_factory.mktemp("lm") / "lm", "llama", layers=2)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), path


def test_teacher_score_is_minus_mean_nll_of_the_answer_tokens_only(tiny_lm):
    model, tok, _ = tiny_lm
    cases = [
        ("what is the gene", "the gene is data about a protein", "a protein"),
        ("why", "the cell", "the human cell is small"),
        ("how does the virus increase risk", "water", "blood"),
    ]
    by_hand = []
    with torch.no_grad():
        for query, key, answer in cases:
            prompt = tok(f"Knowledge: {key}\n\nQuestion: {query}\n\nAnswer: ", add_special_tokens=False)["input_ids"]
            ans = tok(answer, add_special_tokens=False)["input_ids"]
            ids = [tok.bos_token_id, *prompt, *ans]
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            nll = [-logp[t - 1, ids[t]].item() for t in range(len(ids) - len(ans), len(ids))]
            by_hand.append(-float(np.mean(nll)))
    seqs = [prompt_ids(tok, "qa", q, k, a) for q, k, a in cases]
    np.testing.assert_allclose(answer_scores(model, seqs, batch_size=3), by_hand, atol=1e-5)  # padded batch
    # the key is context, never a label: a different key changes the score but not the labelled count
    other = prompt_ids(tok, "qa", cases[0][0], "a virus", cases[0][2])
    assert other[1] == seqs[0][1] and answer_scores(model, [other])[0] != pytest.approx(by_hand[0])
    # the key is cut to key_max_tokens tokens
    cut = prompt_ids(tok, "qa", "why", "the cell is small and red", "blood", key_max_tokens=2)
    assert cut == prompt_ids(tok, "qa", "why", "the cell", "blood")
    record = {"query": "why", "pos": ["the cell"], "neg": ["water"], "answers": ["blood"]}
    records = lm_teacher_scores(model, tok, [record], task="chat")
    assert len(records[0]["teacher_scores"]) == 2 and records[0]["pos_scores"] == records[0]["teacher_scores"][:1]
    with pytest.raises(ValueError, match="no 'answers'"):
        lm_teacher_scores(model, tok, [{"query": "q", "pos": ["p"], "neg": []}], task="qa")


def _fixed(b=2, g=3, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=gen), dim=-1)
    p = F.normalize(torch.randn(b * g, d, generator=gen), dim=-1)
    teacher = torch.randn(b, g, generator=gen) * 2
    return q, p, teacher


def test_kl_distillation_by_hand():
    q, p, teacher = _fixed()
    b, g, tau_c, tau_t, tau_s = 2, 3, 0.01, 0.1, 2.0
    scores = (q @ p.T) / tau_c
    expected = 0.0
    for i in range(b):
        s = torch.stack([scores[i, i * g + j] for j in range(g)])
        t = torch.softmax(teacher[i] / tau_t, dim=0)
        expected += float(torch.sum(t * (torch.log(t) - torch.log_softmax(s / tau_s, dim=0))))
    got = llm_embedder_loss(q, p, temperature=tau_c, teacher_scores=teacher, contrastive_weight=0.0,
                            teacher_temperature=tau_t, student_temperature=tau_s)  # fmt: skip
    assert float(got) == pytest.approx(expected / b, rel=1e-5)
    assert float(kl_distill_loss(scores.reshape(b, b * g)[:, :g], teacher, tau_t, tau_s)) > 0


def test_stable_distillation_sequence_by_hand():
    q, p, teacher = _fixed()
    b, g, tau = 2, 3, 0.01
    scores = (q @ p.T) / tau
    t = torch.softmax(teacher, dim=-1)
    expected = 0.0
    for i in range(g):
        for row in range(b):
            logits = scores[row].clone()
            for k in range(i):  # keys of this group targeted before are masked
                logits[row * g + k] = float("-inf")
            expected += float(t[row, i] * -torch.log_softmax(logits, dim=0)[row * g + i]) / b
    assert float(stable_distill_loss(scores, teacher, g)) == pytest.approx(expected, rel=1e-5)
    got = llm_embedder_loss(q, p, temperature=tau, teacher_scores=teacher, contrastive_weight=0, stable_distill=True)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # G = 1: plain InfoNCE
    q1, p1 = q, p[::g]
    s1 = (q1 @ p1.T) / tau
    nce = float(F.cross_entropy(s1, torch.arange(b)))
    assert float(stable_distill_loss(s1, torch.zeros(b, 1), 1)) == pytest.approx(nce, rel=1e-5)


def test_loss_combination_rules():
    q, p, teacher = _fixed()
    scores = (q @ p.T) / 0.01
    nce = float(F.cross_entropy(scores, torch.arange(2) * 3))
    kl = float(llm_embedder_loss(q, p, teacher_scores=teacher, contrastive_weight=0))
    assert float(llm_embedder_loss(q, p, contrastive_weight=0.2)) == pytest.approx(nce, rel=1e-5)  # contrastive alone
    both = float(llm_embedder_loss(q, p, teacher_scores=teacher, contrastive_weight=0.2, distill_weight=1.0))
    assert both == pytest.approx(0.2 * nce + kl, rel=1e-5)
    with pytest.raises(ValueError, match="no loss"):
        llm_embedder_loss(q, p, contrastive_weight=0)


def test_task_recipe_and_group_preparation():
    cfg = LLM_EMBEDDER_TRAIN_CONFIG
    assert cfg["qa"].stable_distill and cfg["icl"].stable_distill and cfg["qa"].contrastive_weight == 0
    assert cfg["convsearch"].distill_weight == 0 and cfg["tool"].distill_weight == 0
    assert cfg["chat"].teacher_temperature == 0.1 and cfg["lrlm"].teacher_temperature == 0.1
    assert cfg["chat"].select_positive == "teacher" and cfg["icl"].select_positive == "random"
    item = {"query": "q", "passages": ["p", "a", "b", "c"], "teacher_scores": [0.1, 0.5, 0.9, 0.2]}
    rng = np.random.default_rng(0)
    stable = prepare_group(item, TaskTrainConfig("first", stable_distill=True), rng)
    assert stable["passages"] == ["p", "b", "a", "c"] and stable["teacher_scores"] == [0.1, 0.9, 0.5, 0.2]
    teacher = prepare_group(item, TaskTrainConfig("teacher"), rng)
    assert teacher["passages"][0] == "b" and sorted(teacher["passages"]) == sorted(item["passages"])


def test_task_instructions_reach_query_and_every_key():
    from flagembed.train import DataArguments
    from flagembed.train.data import sample_group

    ex = {"query": "hi", "pos": ["old talk"], "neg": ["more talk", "other talk"], "task": "chat"}
    args = DataArguments(train_data=["x"], train_group_size=3, task_instructions=True)
    out = sample_group(ex, 3, args, np.random.default_rng(0))
    assert out["query"] == "Embed this dialogue to find useful historical dialogues: hi"
    assert all(t.startswith("Embed this historical dialogue for retrieval: ") for t in out["passages"])
    assert out["task"] == "chat"
