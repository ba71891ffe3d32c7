import numpy as np
import pytest
import torch

from flagembed import Embedder

TEXTS = [
    "the cancer cells of the human brain",
    "what is dense retrieval",
    "a",
    "protein gene expression is increased in mouse models of the disease after treatment",
    "blue water",
]


def manual_embeddings(path, texts, pooling, normalize=True, truncate_dim=None, max_length=128):
    """Independent reference: plain transformers, one text at a time, no batching or sorting."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=max_length)
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        if pooling == "cls":
            v = h[0]
        elif pooling == "mean":
            v = h.mean(0)
        else:
            v = h[-1]
        if truncate_dim:
            v = v[:truncate_dim]
        if normalize:
            v = v / v.norm()
        out.append(v.numpy())
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last_token"])
def test_pooling_matches_manual(tiny_bert, pooling):
    emb = Embedder(tiny_bert, pooling=pooling, batch_size=2)
    got = emb.encode(TEXTS)
    np.testing.assert_allclose(got, manual_embeddings(tiny_bert, TEXTS, pooling), atol=1e-5)
    assert got.dtype == np.float32


def test_xlmr_and_decoder_left_padding(tiny_xlmr, tiny_qwen2):
    got = Embedder(tiny_xlmr, pooling="mean", batch_size=3).encode(TEXTS)
    np.testing.assert_allclose(got, manual_embeddings(tiny_xlmr, TEXTS, "mean"), atol=1e-5)
    dec = Embedder(tiny_qwen2, pooling="last_token", batch_size=3)
    assert dec.engine_config.padding_side == "left"
    np.testing.assert_allclose(dec.encode(TEXTS), manual_embeddings(tiny_qwen2, TEXTS, "last_token"), atol=1e-4)


def test_truncate_dim_then_normalize(tiny_bert):
    emb = Embedder(tiny_bert, pooling="cls", truncate_dim=8)
    got = emb.encode(TEXTS)
    assert got.shape == (5, 8) and emb.dim == 8
    np.testing.assert_allclose(got, manual_embeddings(tiny_bert, TEXTS, "cls", truncate_dim=8), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    per_call = Embedder(tiny_bert, pooling="cls").encode(TEXTS, truncate_dim=4)
    np.testing.assert_allclose(per_call, manual_embeddings(tiny_bert, TEXTS, "cls", truncate_dim=4), atol=1e-5)


def test_no_normalize(tiny_bert):
    got = Embedder(tiny_bert, pooling="cls", normalize=False).encode(TEXTS)
    np.testing.assert_allclose(got, manual_embeddings(tiny_bert, TEXTS, "cls", normalize=False), atol=1e-4)


def test_order_restored_and_batch_independent(tiny_bert):
    rng = np.random.default_rng(0)
    words = "the cancer cells of human brain protein gene a blue water".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(37)]
    emb = Embedder(tiny_bert, pooling="mean")
    one_by_one = np.stack([emb.encode(t) for t in texts])
    np.testing.assert_allclose(emb.encode(texts, batch_size=4), one_by_one, atol=1e-5)
    emb.max_tokens_per_batch = 64
    np.testing.assert_allclose(emb.encode(texts), one_by_one, atol=1e-5)


def test_instructions_and_corpus_dicts(tiny_bert):
    emb = Embedder(
        tiny_bert,
        query_instruction="query: ",
        passage_instruction="passage: ",
    )
    q = emb.encode_queries(["blue water"])
    np.testing.assert_allclose(q, emb.encode(["query: blue water"]), atol=1e-6)
    d = emb.encode_corpus([{"title": "the title", "text": "blue water"}, {"text": "red fire"}])
    np.testing.assert_allclose(d, emb.encode(["passage: the title blue water", "passage: red fire"]), atol=1e-6)
    fmt = Embedder(tiny_bert, query_instruction="find", query_instruction_format="Instruct: {}\\nQuery: {}")
    np.testing.assert_allclose(
        fmt.encode_queries("blue water"), fmt.encode("Instruct: find\nQuery: blue water"), atol=1e-6
    )


def test_single_string_and_empty(tiny_bert):
    emb = Embedder(tiny_bert)
    assert emb.encode("blue water").shape == (32,)
    assert emb.encode([]).shape == (0, 32)
    assert emb.encode([], truncate_dim=8).shape == (0, 8)
    t = emb.encode(["a", "b"], convert_to="torch")
    assert isinstance(t, torch.Tensor) and t.shape == (2, 32)


@pytest.mark.parametrize(
    "bad, index",
    [(["ok", None], 1), (["ok", "fine", 3], 2), ([["nested"]], 0), (["a", b"bytes"], 1)],
)
def test_bad_items_name_the_index(tiny_bert, bad, index):
    emb = Embedder(tiny_bert)
    with pytest.raises(TypeError, match=rf"texts\[{index}\]"):
        emb.encode(bad)


def test_bad_containers(tiny_bert):
    emb = Embedder(tiny_bert)
    with pytest.raises(TypeError):
        emb.encode(None)
    with pytest.raises(TypeError, match=r"corpus\[1\]"):
        emb.encode_corpus(["ok", 5])


def test_truncation_is_counted(tiny_bert):
    emb = Embedder(tiny_bert, max_length=8)
    emb.encode(["the " * 20, "a", "the cells of the human brain are blue"])
    assert emb.last_truncated == 2
    assert emb.encode(["the " * 200]).shape == (1, 32)  # truncated, not an error


def test_max_length_capped_at_model_limit(tiny_bert):
    emb = Embedder(tiny_bert, max_length=10_000)
    assert emb.max_length == 128  # max_position_embeddings of the tiny BERT


def test_quantized_outputs(tiny_bert):
    """Independent formulas always; sentence-transformers >= 6 uses the same floor-and-clip buckets."""
    emb = Embedder(tiny_bert)
    words = "the cancer cells of human brain protein gene a blue water".split()
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(50)]
    ref = emb.encode(texts)
    lo, hi = ref.min(0), ref.max(0)
    buckets = np.clip(np.floor((ref - lo) / ((hi - lo) / 255)), 0, 255)
    expected = {
        "uint8": buckets.astype(np.uint8),
        "int8": (buckets - 128).astype(np.int8),
        "ubinary": np.packbits(ref > 0, axis=-1),
        "binary": (np.packbits(ref > 0, axis=-1).astype(np.int16) - 128).astype(np.int8),
    }
    st = pytest.importorskip("sentence_transformers")
    st_major = int(st.__version__.split(".")[0])
    for precision, want in expected.items():
        got = emb.encode(texts, precision=precision)
        assert got.dtype == want.dtype, precision
        np.testing.assert_array_equal(got, want, err_msg=precision)
        if st_major >= 6:  # older releases truncated toward zero instead of flooring
            from sentence_transformers.quantization import quantize_embeddings

            np.testing.assert_array_equal(got, quantize_embeddings(ref, precision=precision), err_msg=precision)
    with pytest.raises(ValueError, match="precision"):
        emb.encode(texts, precision="int4")


def test_fp16_on_cpu_warns_and_uses_fp32(tiny_bert):
    with pytest.warns(UserWarning, match="fp16 was asked for on CPU"):
        import flagembed.engine.devices as devices

        devices._warned_cpu_half = False
        emb = Embedder(tiny_bert, dtype="fp16", device="cpu")
    assert emb.dtype == torch.float32


@pytest.mark.slow
def test_several_devices_use_worker_processes(tiny_bert):
    texts = [f"the cells {'a ' * i}" for i in range(23)]
    single = Embedder(tiny_bert, device="cpu").encode(texts)
    with Embedder(tiny_bert, device=["cpu", "cpu"], max_length=8) as multi:
        got = multi.encode(texts)
        assert multi._pool is not None and len(multi.devices) == 2
        assert multi.last_truncated == sum(1 for t in texts if len(multi.tokenizer(t)["input_ids"]) > 8)
    ref = Embedder(tiny_bert, device="cpu", max_length=8).encode(texts)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert single.shape == got.shape


def test_pipelined_tokenization_gives_the_same_embeddings(tiny_bert):
    rng = np.random.default_rng(5)
    words = "the cancer cells of human brain protein gene a blue water".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 60))) for _ in range(41)]
    emb = Embedder(tiny_bert, max_length=16)
    ref = emb.encode(texts)
    ref_truncated = emb.last_truncated
    emb.pipeline_chunk_size = 6
    np.testing.assert_allclose(emb.encode(texts), ref, atol=1e-5)
    assert emb.last_truncated == ref_truncated > 0
