"""RetroMAE pre-training (WAVE2_REFERENCE.md §3.d tests 1-7), each against a by-hand computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F

from flagembed.train.retromae import (
    RetroMAECollator,
    RetroMAEModel,
    decoder_labels,
    decoder_matrix_mask,
    whole_word_mask,
)

TEXTS = [
    "the xyzq cell protein and qqzz gene",
    "what is a vwxyz blood virus",
    "cancer patients treatment zzyx study results",
]


def _tiny_bert_mlm(path: Path) -> Path:
    cfg = tiny_models.build_bert(path, seed=3)
    conf = json.loads((cfg / "config.json").read_text())
    conf.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (cfg / "config.json").write_text(json.dumps(conf))
    return cfg


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_bert_mlm(tmp_path_factory.mktemp("models") / "tiny-bert-mlm")


@pytest.fixture(scope="module")
def bert_tok(bert_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bert_dir))


def _byte_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>", "<unk>", "<mask>"])
    tok.train_from_iterator([" ".join(tiny_models.WORDS)] * 4, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>",
    )  # fmt: skip


def _check_whole_words(tok, text: str, word_prefix_check) -> None:
    enc = tok([text])
    word_ids = enc.word_ids(0)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert any(len([w for w in word_ids if w == k]) > 1 for k in set(word_ids) - {None})  # multi-piece words exist
    word_prefix_check(tokens, word_ids)
    rng = np.random.default_rng(0)
    masked = total = 0
    for _ in range(400):
        m = whole_word_mask(word_ids, 0.3, rng)
        for k in set(word_ids) - {None}:
            group = {bool(m[i]) for i, w in enumerate(word_ids) if w == k}
            assert len(group) == 1  # all pieces of a word together
        assert not any(m[i] for i, w in enumerate(word_ids) if w is None)  # specials never masked
        masked += int(m.sum())
        total += sum(w is not None for w in word_ids)
    assert masked / total == pytest.approx(0.3, abs=0.06)


def test_whole_word_mask_wordpiece_sentencepiece_and_byte_bpe(bert_tok):  # 1
    def wordpiece(tokens, word_ids):  # "##" pieces continue the previous token's word
        for i, t in enumerate(tokens):
            if t.startswith("##"):
                assert word_ids[i] == word_ids[i - 1]

    _check_whole_words(bert_tok, TEXTS[0] + " " + TEXTS[1], wordpiece)

    def byte_bpe(tokens, word_ids):  # a "Ġ" piece starts a new word
        for i, t in enumerate(tokens):
            if word_ids[i] is not None and i > 1 and not t.startswith("Ġ"):
                assert word_ids[i] == word_ids[i - 1] or word_ids[i - 1] is None

    _check_whole_words(_byte_bpe_tokenizer(), "the proteins cancerous celll xyzgene datas", byte_bpe)

    from transformers import AutoTokenizer

    from flagembed.models import packaged_model_path

    xlmr = tiny_models.xlmr_tokenizer()  # SentencePiece-style (Metaspace/Unigram) word ids
    enc = xlmr(["the cell protein"])
    assert whole_word_mask(enc.word_ids(0), 0.5, np.random.default_rng(1)).sum() >= 1
    minilm = packaged_model_path("all-MiniLM-L6-v2")
    if minilm is not None:  # the real WordPiece vocabulary
        real = AutoTokenizer.from_pretrained(str(minilm))
        _check_whole_words(real, "unbelievably photosynthesizing mitochondria", wordpiece)


def test_decoder_matrix_mask_rows(bert_tok):  # 2
    enc = bert_tok([TEXTS[0]])
    word_ids = enc.word_ids(0)
    n, length = len(word_ids), len(word_ids) + 3
    allowed = decoder_matrix_mask(word_ids, length, 0.5, np.random.default_rng(7), n_masks=5)
    rng = np.random.default_rng(7)  # replay the sampling: the candidate masks, then the row choice
    masks = [whole_word_mask(word_ids, 0.5, rng) for _ in range(5)]
    choice = rng.integers(5, size=n)
    for i in range(n):
        assert not allowed[i, i]
        if i > 0:
            assert allowed[i, 0]  # CLS always visible
        assert not allowed[i, n:].any()  # padding hidden
        row = allowed[i, :n].copy()
        row[i] = not masks[choice[i]][i]
        assert (row == ~masks[choice[i]]).all()
    assert not allowed[n:].any()


def test_decoder_labels_every_token_but_first_last_and_padding():  # 3
    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 20, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    assert decoder_labels(ids, mask).tolist() == [[-100, 10, 11, 12, -100, -100], [-100, 20, -100, -100, -100, -100]]


def _model(bert_dir: Path) -> RetroMAEModel:
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    return RetroMAEModel(AutoModelForMaskedLM.from_pretrained(str(bert_dir))).eval()


def test_query_stream_is_position_dependent_and_token_independent(bert_dir: Path, bert_tok):  # 4
    model = _model(bert_dir)
    coll = RetroMAECollator(bert_tok, 32, 0.3, 0.5, seed=1)
    batch = coll([{"text": TEXTS[1]}])
    with torch.no_grad():
        cls = torch.randn(1, model.config.hidden_size)
        q = model.query_stream(cls, batch["input_ids"].shape[1])
        assert not torch.allclose(q[0, 1], q[0, 2])  # positions differ
        kv = torch.cat([cls[:, None], model.embeddings(input_ids=batch["input_ids"])[:, 1:]], dim=1)
        out = model.decoder(q, kv, batch["decoder_attention"])
        ids2 = batch["input_ids"].clone()
        ids2[0, 3] = 10  # change token 3: row 3 never sees column 3, so its output is unchanged
        kv2 = torch.cat([cls[:, None], model.embeddings(input_ids=ids2)[:, 1:]], dim=1)
        out2 = model.decoder(q, kv2, batch["decoder_attention"])
    torch.testing.assert_close(out[0, 3], out2[0, 3])


def test_total_loss_is_encoder_plus_decoder_by_hand(bert_dir: Path, bert_tok):  # 5
    model = _model(bert_dir)
    batch = RetroMAECollator(bert_tok, 32, 0.3, 0.5, seed=2)([{"text": t} for t in TEXTS])
    with torch.no_grad():
        got = model(**batch)
        lm = model.lm
        enc_ids, attn = batch["encoder_input_ids"], batch["attention_mask"]
        enc = lm(input_ids=enc_ids, attention_mask=attn, output_hidden_states=True)
        lab = batch["encoder_labels"]
        enc_loss = F.cross_entropy(enc.logits[lab != -100], lab[lab != -100])
        cls = enc.hidden_states[-1][:, 0]
        emb = lm.bert.embeddings
        length = batch["input_ids"].shape[1]
        pos = emb.position_embeddings(torch.arange(length))[None]
        q = emb.LayerNorm(cls[:, None] + pos + emb.token_type_embeddings(torch.zeros(1, length, dtype=torch.long)))
        kv = torch.cat([cls[:, None], emb(input_ids=batch["input_ids"])[:, 1:]], dim=1)
        d = model.decoder
        heads, hd = d.heads, q.shape[-1] // d.heads
        qh = d.query(q).view(3, length, heads, hd).transpose(1, 2)
        kh = d.key(kv).view(3, length, heads, hd).transpose(1, 2)
        vh = d.value(kv).view(3, length, heads, hd).transpose(1, 2)
        bias = torch.zeros(3, 1, length, length).masked_fill(~batch["decoder_attention"][:, None], -1e30)
        ctx = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias).transpose(1, 2).reshape(3, length, -1)
        x = d.attn_norm(q + d.attn_out(ctx))
        x = d.ffn_norm(x + d.ffn_out(F.gelu(d.ffn_in(x))))
        logits = lm.cls(x)
        dl = batch["decoder_labels"]
        dec_loss = F.cross_entropy(logits[dl != -100], dl[dl != -100])
    assert got["encoder_loss"].item() == pytest.approx(enc_loss.item(), abs=1e-5)
    assert got["decoder_loss"].item() == pytest.approx(dec_loss.item(), abs=1e-5)
    assert got["loss"].item() == pytest.approx(enc_loss.item() + dec_loss.item(), abs=1e-5)
    assert dec_loss.item() > 0 and math.isfinite(dec_loss.item())


def test_encoder_model_folder_loads_with_automodel_and_gives_the_trained_cls(bert_dir: Path, bert_tok, tmp_path):  # 7
    from transformers import AutoModel

    model = _model(bert_dir)
    with torch.no_grad():
        for p in model.lm.parameters():
            p.add_(0.01)  # "trained": differs from the start checkpoint
    model.save_folder(tmp_path / "run")
    enc = bert_tok(TEXTS, padding=True, return_tensors="pt")
    loaded = AutoModel.from_pretrained(str(tmp_path / "run" / "encoder_model")).eval()
    start = AutoModel.from_pretrained(str(bert_dir)).eval()
    with torch.no_grad():
        want = model.lm.base_model(**enc).last_hidden_state[:, 0]
        got = loaded(**enc).last_hidden_state[:, 0]
        old = start(**enc).last_hidden_state[:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, old, atol=1e-3)
    assert (tmp_path / "run" / "decoder.pt").is_file()


@pytest.mark.slow
def test_pretraining_loss_decreases_and_fine_tuning_starts_from_the_encoder(bert_dir: Path, tmp_path: Path):  # 6
    from transformers import TrainingArguments

    from flagembed.inference import Embedder
    from flagembed.train.retromae import RetroMAEArguments, pretrain_retromae

    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 2), encoding="utf-8")
    out = tmp_path / "pre"
    result = pretrain_retromae(
        RetroMAEArguments(model_name_or_path=str(bert_dir), train_data=[str(data)], max_seq_length=32),
        TrainingArguments(
            output_dir=str(out), max_steps=12, learning_rate=3e-3, per_device_train_batch_size=6, logging_steps=1,
            use_cpu=True, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
        ),
    )  # fmt: skip
    losses = [h["loss"] for h in result.loss_history]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    vecs = Embedder(result.encoder_dir, device="cpu").encode(TEXTS)
    assert vecs.shape == (3, 32)


def test_cli_pretrain_retromae(bert_dir: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from flagembed.cli import app

    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "pre"
    args = ["pretrain", "retromae", "--model", str(bert_dir), "--train-data", str(data), "--output", str(out)]
    args += ["--max_seq_length", "32", "--max_steps", "1", "--use_cpu", "--report_to", "none", "--save_strategy", "no"]
    res = CliRunner().invoke(app, [*args, "--disable_tqdm", "True", "--encoder_mlm_probability", "0.3"])
    assert res.exit_code == 0, res.output
    assert "trained 1 steps" in res.output and (out / "encoder_model" / "config.json").is_file()
    bad = CliRunner().invoke(app, [*args, "--encoder_mlm_probability", "1.5"])
    assert bad.exit_code != 0 and "encoder_mlm_probability must be in (0, 1)" in bad.output


def test_pretrain_rejects_bad_data(tmp_path: Path):
    from transformers import TrainingArguments

    from flagembed.train.retromae import RetroMAEArguments, pretrain_retromae

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'text' must be a string"):
        pretrain_retromae(RetroMAEArguments(train_data=[str(bad)]), TrainingArguments(output_dir=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="not found"):
        pretrain_retromae(
            RetroMAEArguments(train_data=[str(tmp_path / "missing.jsonl")]), TrainingArguments(output_dir=str(tmp_path))
        )
