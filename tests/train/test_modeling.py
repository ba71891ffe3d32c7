"""Gradient cache: same gradient as one full-batch backward; RNG replay gives the same dropout masks."""

from __future__ import annotations

import torch
from torch import nn

from flagembed.train.losses import embedder_loss
from flagembed.train.modeling import RandState, grad_cache_step, split_batch


class BagEncoder(nn.Module):
    """Embedding bag + MLP over (input_ids, attention_mask): a stand-in for a backbone."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 12)
        self.mlp = nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Dropout(dropout), nn.Linear(12, 8))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m = batch["attention_mask"].unsqueeze(-1).float()
        h = (self.emb(batch["input_ids"]) * m).sum(1) / m.sum(1)
        return nn.functional.normalize(self.mlp(h), dim=-1)


def _batch(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, length), generator=g)
    lens = torch.randint(2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lens[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def test_gradient_cache_equals_full_batch_gradient():
    torch.manual_seed(0)
    model = BagEncoder()
    queries, passages = _batch(6, 5, 1), _batch(18, 9, 2)

    def loss_fn(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return embedder_loss(q, p, temperature=0.05)

    model.zero_grad()
    full = loss_fn(model(queries), model(passages))
    full.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    cached = grad_cache_step(model, split_batch(queries, 4), split_batch(passages, 4), loss_fn, lambda x: x.backward())
    assert torch.allclose(cached, full.detach(), atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, want[name], rtol=1e-5, atol=1e-6)


def test_split_batch_trims_padding_columns():
    batch = {
        "input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
    }
    chunks = split_batch(batch, 2)
    assert [c["input_ids"].shape for c in chunks] == [(2, 2), (1, 4)]
    assert split_batch(batch, None) == [batch]


def test_rand_state_replays_dropout_masks():
    drop = nn.Dropout(0.5)
    x = torch.ones(4, 16)
    state = RandState(torch.device("cpu"))
    first = drop(x)
    after = torch.get_rng_state()
    with state.replay():
        again = drop(x)
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), after)  # the replay does not disturb the ongoing stream
