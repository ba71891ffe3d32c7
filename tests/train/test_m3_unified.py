"""BGE-M3 unified fine-tuning (WAVE2_REFERENCE.md §3.a.8 tests 1-9), each against a by-hand computation."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from tiny_m3 import build_m3

from flagembed.train import DataArguments, EmbedderTrainingArguments, ModelArguments, finetune_embedder
from flagembed.train.m3 import M3Loss
from flagembed.train.m3_losses import ensemble_scores, lexical_vectors

TAU = 0.02


def _targs(out: Path, **kw: object) -> EmbedderTrainingArguments:
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=11,
        save_strategy="no",
        dataloader_drop_last=True,
        disable_tqdm=True,
        loss_plot=False,
        unified_finetuning=True,
        temperature=TAU,
    )
    base.update(kw)
    return EmbedderTrainingArguments(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_m3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_m3(tmp_path_factory.mktemp("models") / "tiny-m3")
    sparse = torch.load(path / "sparse_linear.pt", weights_only=True)
    sparse["bias"] = torch.tensor([0.3])  # most token weights > 0, so the sparse head gets a gradient at once
    torch.save(sparse, path / "sparse_linear.pt")
    return path


def _fixed_reps(seed: int = 0, b: int = 2, g: int = 2) -> tuple[dict, dict]:
    """Hand-made representations: normalized dense, non-negative lexical, ColBERT vectors with lengths."""
    gen = torch.Generator().manual_seed(seed)

    def side(n: int, length: int) -> dict:
        dense = torch.nn.functional.normalize(torch.randn(n, 6, generator=gen), dim=-1)
        lexical = torch.relu(torch.randn(n, 9, generator=gen)) * 0.3
        colbert = torch.nn.functional.normalize(torch.randn(n, length, 5, generator=gen), dim=-1)
        lengths = torch.randint(1, length + 1, (n,), generator=gen)
        colbert = colbert * (torch.arange(length)[None, :, None] < lengths[:, None, None])
        return {"dense": dense, "lexical": lexical, "colbert": colbert, "colbert_lengths": lengths}

    return side(b, 3), side(b * g, 4)


# ---------------------------------------------------------------- by-hand reference (plain Python loops)
def _hand_scores(q: dict, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nq, npas = len(q["dense"]), len(p["dense"])
    d = np.zeros((nq, npas))
    s = np.zeros((nq, npas))
    c = np.zeros((nq, npas))
    for i in range(nq):
        for j in range(npas):
            d[i, j] = float(q["dense"][i] @ p["dense"][j]) / TAU
            s[i, j] = float(q["lexical"][i] @ p["lexical"][j]) / TAU
            lq, lp = int(q["colbert_lengths"][i]), int(p["colbert_lengths"][j])
            total = sum(max(float(q["colbert"][i, a] @ p["colbert"][j, k]) for k in range(lp)) for a in range(lq))
            c[i, j] = total / lq / TAU
    return d, s, c


def _log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - math.log(np.exp(row - m).sum())


def _ce(scores: np.ndarray, targets: list[int]) -> float:
    return float(np.mean([-_log_softmax(scores[i])[t] for i, t in enumerate(targets)]))


def _kd(teacher: np.ndarray, student: np.ndarray) -> float:
    out = []
    for i in range(len(teacher)):
        p = np.exp(_log_softmax(teacher[i]))
        out.append(-(p * _log_softmax(student[i])).sum())
    return float(np.mean(out))


def test_unified_loss_with_self_distill_equals_hand_computation(tmp_path: Path):  # 1 and 4
    q, p = _fixed_reps()
    d, s, c = _hand_scores(q, p)
    e = d + 0.3 * s + c
    targets = [0, 2]
    l_d, l_s, l_c, l_e = (_ce(x, targets) for x in (d, s, c, e))
    base = (l_d + l_e + 0.1 * l_s + l_c) / 4
    sd = (_kd(e, d) + 0.1 * _kd(e, s) + _kd(e, c)) / 3
    hook = M3Loss(_targs(tmp_path, use_self_distill=True, self_distill_start_step=0))
    hook.step = 1  # the reference distils once step > start_step
    parts = hook.loss(q, p)
    assert parts.loss.item() == pytest.approx((base + sd) / 2, abs=1e-6)
    assert parts.ensemble.item() == pytest.approx(l_e, abs=1e-6)
    torch.testing.assert_close(
        ensemble_scores(torch.tensor(d), torch.tensor(s), torch.tensor(c)), torch.tensor(e), atol=1e-9, rtol=0
    )
    hook.step = 0  # not past the start step yet: no distillation
    assert hook.loss(q, p).loss.item() == pytest.approx(base, abs=1e-6)
    off = M3Loss(_targs(tmp_path, use_self_distill=False))
    off.step = 10
    assert off.loss(q, p).loss.item() == pytest.approx(base, abs=1e-6)


def test_m3_kd_loss_with_teacher_scores_by_hand_and_order_dependent(tmp_path: Path):  # 5
    q, p = _fixed_reps(seed=3, b=2, g=3)
    teacher = torch.tensor([[2.0, 0.5, -1.0], [1.0, 1.5, 0.0]])
    hook = M3Loss(_targs(tmp_path, kd_loss_type="m3_kd_loss"))
    got = hook.loss(q, p, teacher_scores=teacher)
    d, _, _ = _hand_scores(q, p)
    t = torch.softmax(teacher, dim=-1).numpy()
    expected = 0.0
    for i in range(3):  # masked sequential CE: passages before the i-th of the row's group are hidden
        ces = []
        for b in range(2):
            row = d[b].copy()
            row[[b * 3 + k for k in range(i)]] = -np.inf
            ces.append(t[b, i] * -_log_softmax(row)[b * 3 + i])
        expected += float(np.mean(ces))
    assert got.dense.item() == pytest.approx(expected, abs=1e-5)
    # reversing a group's order (teacher too) changes the loss: the sequence follows data order
    perm = [2, 1, 0, 5, 4, 3]
    p_rev = {k: v[perm] for k, v in p.items()}
    rev = hook.loss(q, p_rev, teacher_scores=teacher.flip(1))
    assert abs(rev.dense.item() - got.dense.item()) > 1e-4


def test_no_in_batch_mode_uses_only_own_group_and_ensemble_is_not_degenerate(tmp_path: Path):  # 8 (#1410)
    q, p = _fixed_reps(seed=5, b=2, g=3)
    flags = torch.tensor([True, True])
    hook = M3Loss(_targs(tmp_path, use_self_distill=True, self_distill_start_step=-1))
    parts = hook.loss(q, p, no_in_batch_neg=flags)
    d, s, c = _hand_scores(q, p)
    e = d + 0.3 * s + c
    local = [slice(0, 3), slice(3, 6)]

    def own(x: np.ndarray) -> np.ndarray:
        return np.stack([x[b, local[b]] for b in range(2)])

    l_d, l_s, l_c, l_e = (_ce(own(x), [0, 0]) for x in (d, s, c, e))
    sd = (_kd(own(e), own(d)) + 0.1 * _kd(own(e), own(s)) + _kd(own(e), own(c))) / 3
    expected = ((l_d + l_e + 0.1 * l_s + l_c) / 4 + sd) / 2
    assert parts.loss.item() == pytest.approx(expected, abs=1e-5)
    assert parts.ensemble.item() > 0.01 and parts.self_distill.item() > 0.01  # the reference's version is ~0
    # row 0's terms do not depend on row 1's passages
    p2 = {k: v.clone() for k, v in p.items()}
    for k in ("dense", "lexical", "colbert"):
        p2[k][3:] = torch.flip(p2[k][3:], dims=[0]) * 0.5
    changed = hook.loss(q, p2, no_in_batch_neg=flags)
    q0 = {k: v[:1] for k, v in q.items()}
    p0 = {k: v[:3] for k, v in p.items()}
    p20 = {k: v[:3] for k, v in p2.items()}
    one = torch.tensor([True])
    assert hook.loss(q0, p0, no_in_batch_neg=one).loss.item() == pytest.approx(
        hook.loss(q0, p20, no_in_batch_neg=one).loss.item(), abs=1e-7
    )
    assert changed.loss.item() != pytest.approx(parts.loss.item(), abs=1e-6)  # row 1 did change


def test_lexical_vectors_take_max_and_drop_specials_same_as_inference(tiny_m3: Path):  # 2
    from flagembed.inference import M3Embedder
    from flagembed.train.m3 import build_m3_model

    weights = torch.tensor([[0.9, 0.2, 0.7, 0.4, 0.0], [0.5, 0.1, 0.3, 0.0, 0.0]], requires_grad=True)
    ids = torch.tensor([[0, 5, 5, 6, 1], [0, 7, 2, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    v = lexical_vectors(weights, ids, mask, 9, unused_ids=[0, 1, 2])
    expected = torch.zeros(2, 9)
    expected[0, 5], expected[0, 6], expected[1, 7] = 0.7, 0.4, 0.1
    torch.testing.assert_close(v, expected)
    v.sum().backward()  # differentiable: the gradient goes to the max position only
    assert weights.grad[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]

    m3 = M3Embedder(str(tiny_m3), device="cpu")
    texts = ["the cell and the cell protein", "what is a gene", "blood"]
    ref = m3.encode(texts, return_sparse=True, return_dense=False)["lexical_weights"]
    model = build_m3_model(m3.encoder.__class__(m3.encoder.backbone, "cls", True), tiny_m3, m3.tokenizer, -1, False)
    model.eval()
    batch = m3.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        lex = model(batch["input_ids"], batch["attention_mask"])["lexical"]
    for row, expect in zip(lex, ref):
        nz = torch.nonzero(row).squeeze(1).tolist()
        assert sorted(str(i) for i in nz) == sorted(expect)
        for i in nz:
            assert row[i].item() == pytest.approx(float(expect[str(i)]), abs=1e-5)
    specials = [m3.tokenizer.cls_token_id, m3.tokenizer.eos_token_id, m3.tokenizer.pad_token_id]
    assert float(lex[:, specials].abs().sum()) == 0.0


def test_colbert_excludes_cls_ignores_padding_and_divides_by_query_length(tiny_m3: Path):  # 3
    from flagembed.inference import M3Embedder
    from flagembed.train.m3 import build_m3_model
    from flagembed.train.m3_losses import colbert_scores

    m3 = M3Embedder(str(tiny_m3), device="cpu")
    model = build_m3_model(m3.encoder.__class__(m3.encoder.backbone, "cls", True), tiny_m3, m3.tokenizer, -1, False)
    model.eval()
    tok = m3.tokenizer
    q = tok(["what is a gene"], return_tensors="pt")
    q_pad = tok(["what is a gene"], padding="max_length", max_length=12, return_tensors="pt")
    docs = tok(["the gene and the protein", "blood"], padding=True, return_tensors="pt")
    with torch.no_grad():
        rq, rqp, rd = (model(x["input_ids"], x["attention_mask"]) for x in (q, q_pad, docs))
        hidden_q = model.encoder.hidden_states(q["input_ids"], q["attention_mask"])[0]
        hidden_d = model.encoder.hidden_states(docs["input_ids"], docs["attention_mask"])
    s = colbert_scores(rq["colbert"], rq["colbert_lengths"], rd["colbert"], rd["colbert_lengths"], TAU)
    s_pad = colbert_scores(rqp["colbert"], rqp["colbert_lengths"], rd["colbert"], rd["colbert_lengths"], TAU)
    torch.testing.assert_close(s, s_pad, atol=1e-5, rtol=1e-5)
    lin = model.heads.colbert_linear
    with torch.no_grad():
        cq = torch.nn.functional.normalize(lin(hidden_q[1:]), dim=-1)  # CLS (position 0) excluded
        for j in range(2):
            n = int(docs["attention_mask"][j].sum())
            cd = torch.nn.functional.normalize(lin(hidden_d[j, 1:n]), dim=-1)
            by_hand = (cq @ cd.T).max(dim=1).values.sum() / len(cq) / TAU
            assert s[0, j].item() == pytest.approx(by_hand.item(), rel=1e-5)


def _toy_file(path: Path, n: int = 16, n_neg: int = 3) -> Path:
    """Queries whose positive shares their words; negatives drawn from other words."""
    rng = random.Random(0)
    words = tiny_models.WORDS
    rows = []
    for _ in range(n):
        key = rng.sample(words, 3)
        rows.append(
            {
                "query": " ".join(key),
                "pos": [" ".join(key + rng.sample(words, 3))],
                "neg": [" ".join(rng.sample(words, 6)) for _ in range(n_neg)],
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _head_states(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        for k, v in torch.load(folder / name, weights_only=True).items():
            out[f"{name}:{k}"] = v
    return out


def test_fix_encoder_changes_only_the_heads(tiny_m3: Path, tmp_path: Path):  # 6, through the CLI
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from flagembed.cli import app

    data = _toy_file(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    args = ["finetune", "embedder", "--model", str(tiny_m3), "--train-data", str(data), "--output", str(out)]
    args += ["--unified_finetuning", "--use_self_distill", "--self_distill_start_step", "0", "--fix_encoder"]
    args += ["--train_group_size", "2", "--passage_max_len", "16", "--max_steps", "1", "--learning_rate", "1e-3"]
    args += ["--per_device_train_batch_size", "8", "--use_cpu", "--report_to", "none", "--save_strategy", "no"]
    res = CliRunner().invoke(app, [*args, "--loss_plot", "False", "--disable_tqdm", "True"])
    assert res.exit_code == 0, res.output
    before, after = load_file(tiny_m3 / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    h0, h1 = _head_states(tiny_m3), _head_states(out)
    assert [k for k in h0 if torch.equal(h0[k], h1[k])] == []


@pytest.mark.slow
def test_unified_training_saves_heads_that_inference_loads_and_loss_decreases(tmp_path: Path):  # 7 and 9
    from flagembed.inference import M3Embedder
    from flagembed.inference.compat import BGEM3FlagModel

    base = tiny_models.build_xlmr(tmp_path / "plain", seed=2)  # no head files: created with a warning
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # a deterministic loss curve
    (base / "config.json").write_text(json.dumps(cfg))
    data = _toy_file(tmp_path / "train.jsonl", n=4, n_neg=1)  # one fixed batch, seen 20 times
    out = tmp_path / "out"
    result = finetune_embedder(
        ModelArguments(model_name_or_path=str(base), colbert_dim=8),
        DataArguments(train_data=[str(data)], train_group_size=2, passage_max_len=16),
        _targs(out, max_steps=20, learning_rate=5e-3, use_self_distill=True, self_distill_start_step=0, seed=1),
    )
    losses = [h["loss"] for h in result.loss_history]
    assert len(losses) == 20 and np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses
    assert (out / "sparse_linear.pt").is_file() and (out / "colbert_linear.pt").is_file()
    assert torch.load(out / "colbert_linear.pt", weights_only=True)["weight"].shape == (8, 32)
    texts = ["the cell protein", "what is a gene and a cell"]
    m3 = M3Embedder(str(out), device="cpu")
    got = m3.encode(texts, return_sparse=True, return_colbert_vecs=True)
    assert got["colbert_vecs"][0].shape[1] == 8
    # the trained module gives the same outputs as the loaded folder
    from flagembed.train import build_trainer

    trainer = build_trainer(
        ModelArguments(model_name_or_path=str(out)),
        DataArguments(train_data=[str(data)], train_group_size=2),
        _targs(tmp_path / "again"),
    )
    model = trainer.model.eval()
    batch = m3.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        rep = model(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(rep["dense"].numpy(), got["dense_vecs"], atol=1e-5)
    for i, n in enumerate(rep["colbert_lengths"].tolist()):
        np.testing.assert_allclose(rep["colbert"][i, :n].numpy(), got["colbert_vecs"][i], atol=1e-5)
    fe = BGEM3FlagModel(str(out), devices="cpu", use_fp16=False).encode(texts, return_sparse=True)
    np.testing.assert_allclose(fe["dense_vecs"], got["dense_vecs"], atol=1e-5)
    assert fe["lexical_weights"][1].keys() == got["lexical_weights"][1].keys()


def test_m3_options_are_checked(tmp_path: Path):
    with pytest.raises(ValueError, match="fix_encoder"):
        _targs(tmp_path, unified_finetuning=False, fix_encoder=True)
    with pytest.raises(ValueError, match="sub_batch_size"):
        _targs(tmp_path, sub_batch_size=2)
    with pytest.raises(ValueError, match="use_mrl"):
        _targs(tmp_path, use_mrl=True, mrl_dims=[8])


def test_flops_regulariser_is_off_by_default_and_adds_its_weighted_term(tmp_path: Path):
    q, p = _fixed_reps()
    plain = M3Loss(_targs(tmp_path)).loss(q, p)
    assert plain.flops is None
    reg = M3Loss(_targs(tmp_path, sparse_flops_weight=0.5)).loss(q, p)
    by_hand = sum(float((x["lexical"].mean(0) ** 2).sum()) for x in (q, p)) * 0.5
    assert reg.loss.item() == pytest.approx(plain.loss.item() + by_hand, abs=1e-6)
