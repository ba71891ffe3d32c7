"""Losses equal straightforward per-query computations (numpy loops), incl. cross-device under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flagembed.train.losses import contrastive_loss, embedder_loss, kl_div_loss, m3_kd_loss


def _data(b: int = 4, g: int = 3, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=gen), dim=-1)
    p = F.normalize(torch.randn(b * g, d, generator=gen), dim=-1)
    teacher = torch.randn(b, g, generator=gen)
    return q.double(), p.double(), teacher.double()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def ref_info_nce(q, p, temp, own_only=None):
    """-log softmax of the positive, one query at a time."""
    q, p = q.numpy(), p.numpy()
    b, g = len(q), len(p) // len(q)
    losses = []
    for i in range(b):
        cols = range(i * g, (i + 1) * g) if own_only is not None and own_only[i] else range(len(p))
        s = np.array([q[i] @ p[j] / temp for j in cols])
        target = list(cols).index(i * g)
        losses.append(-_log_softmax(s)[target])
    return float(np.mean(losses))


def ref_kl(q, p, teacher, temp):
    q, p, t = q.numpy(), p.numpy(), teacher.numpy()
    b, g = len(q), len(p) // len(q)
    total = 0.0
    for i in range(b):
        s = np.array([q[i] @ p[i * g + k] / temp for k in range(g)])
        w = np.exp(t[i]) / np.exp(t[i]).sum()
        total += -(w * _log_softmax(s)).sum()
    return total / b


def ref_m3_kd(q, p, teacher, temp):
    q, p, t = q.numpy(), p.numpy(), teacher.numpy()
    b, g = len(q), len(p) // len(q)
    w = np.exp(t) / np.exp(t).sum(axis=1, keepdims=True)
    total = 0.0
    for k in range(g):  # k-th passage of each group is the target; the query's earlier targets are removed
        per_query = []
        for i in range(b):
            cols = [j for j in range(len(p)) if j not in {i * g + m for m in range(k)}]
            s = np.array([q[i] @ p[j] / temp for j in cols])
            per_query.append(w[i, k] * -_log_softmax(s)[cols.index(i * g + k)])
        total += np.mean(per_query)
    return total


def test_info_nce_matches_loop():
    q, p, _ = _data()
    got = contrastive_loss(q, p, temperature=0.02).item()
    assert got == pytest.approx(ref_info_nce(q, p, 0.02), rel=1e-9)


def test_no_in_batch_neg_rows_only_see_their_group():
    q, p, _ = _data()
    flags = torch.tensor([True, False, True, False])
    got = contrastive_loss(q, p, temperature=0.05, no_in_batch_neg=flags).item()
    assert got == pytest.approx(ref_info_nce(q, p, 0.05, own_only=flags.tolist()), rel=1e-9)
    all_flag = contrastive_loss(q, p, temperature=0.05, no_in_batch_neg=torch.ones(4, dtype=torch.bool)).item()
    assert all_flag == pytest.approx(ref_info_nce(q, p, 0.05, own_only=[True] * 4), rel=1e-9)


def test_kl_div_is_soft_ce_plus_hard_ce():
    q, p, t = _data()
    got = contrastive_loss(q, p, temperature=0.02, teacher_scores=t, kd_loss_type="kl_div").item()
    want = ref_kl(q, p, t, 0.02) + ref_info_nce(q, p, 0.02)
    assert got == pytest.approx(want, rel=1e-9)
    # the helper on its own
    s = torch.randn(3, 4, dtype=torch.float64)
    w = torch.softmax(torch.randn(3, 4, dtype=torch.float64), -1)
    assert kl_div_loss(s, w).item() == pytest.approx(-(w * torch.log_softmax(s, -1)).sum(-1).mean().item())


def test_m3_kd_loss_masks_previous_positives():
    q, p, t = _data(b=3, g=4)
    got = contrastive_loss(q, p, temperature=0.05, teacher_scores=t, kd_loss_type="m3_kd_loss").item()
    assert got == pytest.approx(ref_m3_kd(q, p, t, 0.05), rel=1e-9)
    scores = (q @ p.T) / 0.05
    assert m3_kd_loss(scores, torch.softmax(t, -1), 4).item() == pytest.approx(got, rel=1e-12)


def test_matryoshka_averages_renormalized_prefixes():
    q, p, _ = _data(d=16)
    got = embedder_loss(q, p, temperature=0.02, mrl_dims=[4, 16]).item()
    parts = [ref_info_nce(F.normalize(q[:, :d], dim=-1), F.normalize(p[:, :d], dim=-1), 0.02) for d in (4, 16)]
    assert got == pytest.approx(np.mean(parts), rel=1e-9)
    with pytest.raises(ValueError, match="mrl_dims"):
        embedder_loss(q, p, mrl_dims=[32])


def test_shape_and_option_errors():
    q, p, t = _data()
    with pytest.raises(ValueError, match="multiple"):
        contrastive_loss(q, p[:-1])
    with pytest.raises(ValueError, match="kd_loss_type"):
        contrastive_loss(q, p, teacher_scores=t, kd_loss_type="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group size"):
        contrastive_loss(q, p, teacher_scores=torch.randn(4, 2, dtype=torch.float64))


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    import torch.nn.functional as F
    from flagembed.train.losses import embedder_loss
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    b, g, d = 3, 4, 8
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(world * b, d, generator=gen), dim=-1).double()
    p = F.normalize(torch.randn(world * b * g, d, generator=gen), dim=-1).double()
    teacher = torch.randn(world * b, g, generator=gen).double()
    flags = torch.tensor([i % 5 == 0 for i in range(world * b)])
    out = {}
    for name, kw in {"plain": {}, "kl_div": {"kd_loss_type": "kl_div"}, "m3": {"kd_loss_type": "m3_kd_loss"},
                     "flags": {"no_in_batch_neg": True}}.items():
        ql = q[rank * b:(rank + 1) * b].clone().requires_grad_()
        pl = p[rank * b * g:(rank + 1) * b * g].clone().requires_grad_()
        extra = dict(kw)
        if "kd_loss_type" in kw:
            extra["teacher_scores"] = teacher[rank * b:(rank + 1) * b]
        if kw.get("no_in_batch_neg"):
            extra["no_in_batch_neg"] = flags[rank * b:(rank + 1) * b]
        loss = embedder_loss(ql, pl, temperature=0.05, cross_device=True, **extra)
        loss.backward()
        out[name] = {"loss": loss.item(), "gq": ql.grad.tolist(), "gp": pl.grad.tolist()}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_cross_device_loss_equals_single_process_on_concatenated_batch(tmp_path: Path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    world, b, g, d = 2, 3, 4, 8
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(world * b, d, generator=gen), dim=-1).double()
    p = F.normalize(torch.randn(world * b * g, d, generator=gen), dim=-1).double()
    teacher = torch.randn(world * b, g, generator=gen).double()
    flags = torch.tensor([i % 5 == 0 for i in range(world * b)])
    wants = {
        "plain": ref_info_nce(q, p, 0.05),
        "kl_div": ref_kl(q, p, teacher, 0.05) + ref_info_nce(q, p, 0.05),
        "m3": ref_m3_kd(q, p, teacher, 0.05),
        "flags": ref_info_nce(q, p, 0.05, own_only=flags.tolist()),
    }
    for name, want in wants.items():
        for r in range(world):
            assert ranks[r][name]["loss"] == pytest.approx(want, rel=1e-9), (name, r)
    # gradients: each rank's slice gets world_size x the full-batch gradient (DDP then averages)
    extra = {"plain": {}, "kl_div": {"teacher_scores": teacher, "kd_loss_type": "kl_div"}}
    for name, kw in extra.items():
        qf, pf = q.clone().requires_grad_(), p.clone().requires_grad_()
        embedder_loss(qf, pf, temperature=0.05, **kw).backward()
        gq = torch.cat([torch.tensor(ranks[r][name]["gq"], dtype=torch.float64) for r in range(world)]) / world
        gp = torch.cat([torch.tensor(ranks[r][name]["gp"], dtype=torch.float64) for r in range(world)]) / world
        torch.testing.assert_close(gq, qf.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gp, pf.grad, rtol=1e-9, atol=1e-12)
