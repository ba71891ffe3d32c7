"""VisualEmbedder on tiny random towers + tiny BGE (BERT and XLM-R), checked against a by-hand §1.5 forward."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import tiny_visual
import torch

from flagembed import Embedder
from flagembed.inference.visual import ImageBatchError, VisualEmbedder
from flagembed.models.vision import EvaConfig, preprocess

TEXTS = ["the red cell", "what is a protein and how does it fold in the cell", "blue"]


@pytest.fixture(scope="module")
def vis_bert(tiny_bert, tmp_path_factory):
    return tiny_visual.build_visual(tiny_bert, tmp_path_factory.mktemp("vis") / "bert", seed=1)


@pytest.fixture(scope="module")
def vis_xlmr(tiny_xlmr, tmp_path_factory):
    return tiny_visual.build_visual(tiny_xlmr, tmp_path_factory.mktemp("vis") / "xlmr", seed=2)


@pytest.fixture(scope="module")
def model(vis_bert):
    return VisualEmbedder(vis_bert)


def by_hand(m: VisualEmbedder, image, text: str) -> np.ndarray:
    """Visualized-BGE's encode_mm written out: concat of text CLS, image tokens, text rest; explicit positions."""
    bb = m.model.text.backbone
    ids = torch.tensor([m.tokenizer(text)["input_ids"]])
    n = m.num_image_tokens
    with torch.no_grad():
        patches = m.model.visual(preprocess(image, m.image_size)[None])[:, 1:]
        rows = bb.embeddings.position_embeddings.weight[1 : n + 1]
        img = bb.embeddings.LayerNorm(m.model.visual_proj(patches) + rows)
        t = ids.shape[1]
        pos = torch.tensor([[0, *range(n + 1, n + t)]])
        txt = bb.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids), position_ids=pos)
        seq = torch.cat([txt[:, :1], img, txt[:, 1:]], 1)
        mask = torch.zeros(1, 1, 1, seq.shape[1])
        h = bb.encoder(seq, attention_mask=mask)[0]
    return torch.nn.functional.normalize(h[:, 0], dim=-1)[0].numpy()


@pytest.mark.parametrize("which", ["vis_bert", "vis_xlmr"])
def test_text_only_equals_plain_embedder(which, request, tiny_bert, tiny_xlmr):
    folder = request.getfixturevalue(which)
    plain = Embedder(tiny_bert if which == "vis_bert" else tiny_xlmr)
    got = VisualEmbedder(folder).encode(TEXTS)
    assert np.abs(got - plain.encode(TEXTS)).max() <= 1e-6


@pytest.mark.parametrize("which", ["vis_bert", "vis_xlmr"])
def test_image_text_equals_by_hand_forward(which, request):
    m = VisualEmbedder(request.getfixturevalue(which))
    imgs = [tiny_visual.draw(i) for i in range(3)]
    batched = m.encode_images(imgs, texts=[TEXTS[0], None, TEXTS[1]])
    for i, text in enumerate([TEXTS[0], "", TEXTS[1]]):
        np.testing.assert_allclose(batched[i], by_hand(m, imgs[i], text), atol=2e-6)


def test_image_only_sequence_length_is_patches_plus_two(tmp_path):
    """224 px / patch 16 → 196 image tokens + CLS + SEP = 198 tokens reach the encoder; patch 14 → 258."""
    tok = tiny_models.bert_tokenizer(tmp_path / "tok")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=300)  # fmt: skip
    tiny_models._save(BertModel(cfg).eval(), tok, tmp_path / "bert")
    for patch, expected in ((16, 198), (14, 258)):
        tower = EvaConfig(image_size=224, patch_size=patch, width=32, depth=1, heads=2, mlp_hidden=85, embed_dim=8)
        m = VisualEmbedder(tmp_path / "bert", vision=tower)
        seen: list[torch.Size] = []
        hook = m.model.text.backbone.encoder.register_forward_pre_hook(
            lambda mod, args, seen=seen: seen.append(args[0].shape)
        )
        m.encode_images([tiny_visual.draw(0)])
        hook.remove()
        assert seen == [torch.Size([1, expected, 32])]
        assert m.text_budget() == 300 - (224 // patch) ** 2


def test_m3_position_id_quirk(vis_xlmr):
    """XLM-R image+text sequences use explicit rows 0, 1..N, N+1.. (not padding-aware ids from 2)."""
    m = VisualEmbedder(vis_xlmr)
    seen = []
    hook = m.model.text.backbone.embeddings.position_embeddings.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].flatten().tolist())
    )
    m.encode_images([tiny_visual.draw(0)], texts=["red blue"])
    n, t = m.num_image_tokens, len(m.tokenizer("red blue")["input_ids"])
    assert seen[0] == list(range(1, n + 1))  # image tokens: rows 1..N (row 1 is XLM-R's padding row)
    assert seen[1] == [0, *range(n + 1, n + t)]  # text CLS row 0, text token j row N + j
    seen.clear()
    m.encode(["red blue"])  # text only: XLM-R's own padding-aware ids
    hook.remove()
    assert seen[0] == list(range(2, 2 + t))


def test_reference_layout_loads_strictly_and_matches_own_folder(model, vis_bert, tmp_path):
    path = tmp_path / "Visualized_tiny.pth"
    torch.save(model.reference_state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert "bge_embeddings.word_embeddings.weight" in sd and "model_visual.visual.rope.freqs_cos" in sd
    assert "model_visual.visual.blocks.1.attn.rope.freqs_sin" in sd and "model_visual.logit_scale" in sd
    ref = VisualEmbedder(vis_bert, model_weight=path)
    imgs = [tiny_visual.draw(5), tiny_visual.draw(6)]
    for a, b in ((ref, model),):
        np.testing.assert_array_equal(a.encode_images(imgs, texts=["red", None]), b.encode_images(imgs, ["red", None]))
        np.testing.assert_array_equal(a.encode(TEXTS), b.encode(TEXTS))
    sd.pop("visual_proj.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    pattern = r"1 missing keys \['visual_proj.bias'\].*1 unexpected keys \['extra.weight'\]"
    with pytest.raises(ValueError, match=pattern):
        VisualEmbedder(vis_bert, model_weight=path)


def test_own_folder_round_trip(model, vis_bert, tmp_path):
    out = model.save_pretrained(tmp_path / "saved")
    again = VisualEmbedder(out)
    mean = VisualEmbedder(vis_bert, pooling="mean").save_pretrained(tmp_path / "mean")
    assert VisualEmbedder(mean, pooling=None).settings.pooling == "mean"  # the folder keeps its pooling
    img = [tiny_visual.draw(3)]
    np.testing.assert_array_equal(again.encode_images(img, ["red"]), model.encode_images(img, ["red"]))
    with pytest.raises(ValueError, match="not empty"):
        model.save_pretrained(out)


def test_corrupt_image_names_index_and_keeps_the_rest(model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    imgs = [tiny_visual.draw(1), str(bad), tiny_visual.draw(2)]
    with pytest.raises(ImageBatchError, match=r"image input 1: .*broken.png") as info:
        model.encode_images(imgs)
    assert info.value.index == 1 and list(info.value.errors) == [1]
    good = model.encode_images([imgs[0], imgs[2]])
    np.testing.assert_allclose(info.value.embeddings[[0, 2]], good, atol=1e-6)
    assert np.isnan(info.value.embeddings[1]).all()
    out = model.encode_images(imgs, on_error="nan")
    assert list(model.last_failed) == [1] and np.isnan(out[1]).all()


def test_text_budget_truncation_is_reported(model, caplog):
    budget = model.text_budget()
    assert budget == 128 - 16
    long = " ".join(["red"] * 300)
    with caplog.at_level("WARNING"):
        got = model.encode_images([tiny_visual.draw(4)], texts=[long])
    assert model.last_truncated == 1 and "truncated to 112 tokens" in caplog.text
    cut = model.tokenizer.decode(model.tokenizer(long, truncation=True, max_length=budget)["input_ids"][1:-1])
    np.testing.assert_allclose(got[0], by_hand(model, tiny_visual.draw(4), cut), atol=2e-6)


def test_prenorm_tap_and_projection(model, vis_bert):
    m = VisualEmbedder(vis_bert)
    img = [tiny_visual.draw(7)]
    before = m.encode_images(img)
    with torch.no_grad():
        m.model.visual.norm.weight.mul_(5.0)
        m.model.visual.head.weight.add_(1.0)
    np.testing.assert_array_equal(m.encode_images(img), before)
    with torch.no_grad():
        m.model.visual_proj.weight.add_(torch.randn_like(m.model.visual_proj.weight))
    assert np.abs(m.encode_images(img) - before).max() > 1e-3


def test_mixed_items_keep_order(model):
    imgs = [tiny_visual.draw(8), tiny_visual.draw(9)]
    got = model.encode_items(["red", {"image": imgs[0], "text": "blue"}, {"text": "cell"}, {"image": imgs[1]}])
    np.testing.assert_array_equal(got[[0, 2]], model.encode(["red", "cell"]))
    np.testing.assert_allclose(got[[1, 3]], model.encode_images(imgs, ["blue", None]), atol=1e-6)
    with pytest.raises(ValueError, match=r"items\[0\] has unknown keys \['img'\]"):
        model.encode_items([{"img": imgs[0]}])


def test_visualized_bge_alias(model, vis_bert, tmp_path):
    from flagembed import Visualized_BGE

    path = tmp_path / "w.pth"
    torch.save(model.reference_state_dict(), path)
    ref = Visualized_BGE(model_name_bge=str(vis_bert), model_weight=str(path), normlized=True)
    img = tmp_path / "q.png"
    tiny_visual.draw(11).save(img)
    both = ref.encode(image=str(img), text="red")
    assert tuple(both.shape) == (1, 32) and isinstance(both, torch.Tensor)
    np.testing.assert_allclose(both.numpy(), model.encode_images([str(img)], ["red"]), atol=1e-6)
    np.testing.assert_array_equal(ref.encode(text="red").numpy(), model.encode(["red"]))
    np.testing.assert_allclose(ref.encode(image=str(img)).numpy(), model.encode_images([str(img)]), atol=1e-6)
    assert ref.encode(image=str(img), text=["red", "blue"]).shape == (2, 32)  # one image, several texts
    assert ref.encode() is None
    assert Visualized_BGE(str(vis_bert), str(path), normlized=False).temperature == 1.0
    with pytest.raises(ValueError, match="model_weight is required"):
        Visualized_BGE(str(vis_bert))


def test_batched_equals_one_per_call(model):
    imgs = [tiny_visual.draw(20 + i) for i in range(3)]
    texts = ["red", None, "the long blue cell with a protein"]
    batched = model.encode_images(imgs, texts, batch_size=2)
    single = np.stack([model.encode_images([im], [t])[0] for im, t in zip(imgs, texts)])
    np.testing.assert_allclose(batched, single, atol=1e-6)
