import pytest
import torch

from flagembed.models.pooling import check_pooling, finalize, last_token, pool


@pytest.fixture
def batch():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return hidden, mask


def test_cls(batch):
    hidden, mask = batch
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])


def test_mean_ignores_padding(batch):
    hidden, mask = batch
    out = pool(hidden, mask, "mean")
    for i in range(3):
        n = int(mask[i].sum())
        assert torch.allclose(out[i], hidden[i, :n].mean(0), atol=1e-6)


def test_last_token_right_padding(batch):
    hidden, mask = batch
    out = pool(hidden, mask, "last_token")
    for i in range(3):
        assert torch.equal(out[i], hidden[i, int(mask[i].sum()) - 1])


def test_last_token_left_padding(batch):
    hidden, _ = batch
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert torch.equal(last_token(hidden, mask), hidden[:, -1])


def test_truncate_then_normalize():
    x = torch.tensor([[3.0, 4.0, 12.0]])
    out = finalize(x, truncate_dim=2, normalize=True)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8]]))
    # normalizing first and truncating after would not give unit vectors
    assert not torch.allclose(torch.nn.functional.normalize(x, dim=-1)[:, :2], out)


def test_unknown_pooling_lists_choices():
    with pytest.raises(ValueError, match="cls, mean, last_token"):
        check_pooling("max")
