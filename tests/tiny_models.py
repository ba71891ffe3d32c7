"""Tiny random checkpoints built from transformers configs (no network): BERT, XLM-R, decoder LMs.

Each builder writes a complete folder (config, safetensors weights, fast tokenizer) and returns its
path. Tests get them through the session fixtures in ``conftest.py``.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

WORDS = (
    "the a an of to in and or is are was were be been has have had not no yes what which who how why when where "
    "this that these those it its they them their we our you your he she his her i me my on at by for with from "
    "about into over under between after before during query passage document text model embedding search "
    "retrieval rerank score vector dense sparse token cell cells protein gene cancer patients treatment disease "
    "risk study results effect increase decrease human mouse brain blood virus hiv drug therapy clinical data "
    "analysis method methods time high low level levels associated reduced increased response function role "
    "water fire earth air light dark red blue green big small long short new old good bad fast slow city country"
).split()


def _vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = sorted(set(WORDS)) + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys(pieces))  # unique: "a" and "i" are both words and letters


def _save(model: torch.nn.Module, tokenizer: object, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def bert_tokenizer(tmp: Path) -> object:
    from transformers import BertTokenizerFast

    tmp.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_vocab()]
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(tmp), do_lower_case=True)


def xlmr_tokenizer() -> object:
    """A word-level tokenizer with XLM-R's special tokens and ``<s> A </s></s> B </s>`` template."""
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    plain = [w for w in _vocab() if not w.startswith("##")]
    # transformers 5 rebuilds XLM-R tokenizers with a Metaspace pre-tokenizer: add "▁word" pieces too
    pieces = specials + plain + ["▁"] + [f"▁{w}" for w in plain] + ["<mask>"]
    vocab = {t: i for i, t in enumerate(pieces)}
    # Unigram, as XLM-R's own tokenizer (transformers 5 rebuilds XLM-R tokenizers as Unigram)
    tok = Tokenizer(models.Unigram([(t, 0.0 if t in specials else -float(len(t) < 2)) for t in pieces], unk_id=3))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def decoder_tokenizer(padding_side: str = "left") -> object:
    """A word-level tokenizer like an LLM's: no special tokens added, ``<pad>``/``<eos>``/``<bos>``."""
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    # transformers 5 may rebuild decoder tokenizers as byte-level BPE without merges (one token per
    # character): keep upper-case letters and the byte-level space/newline symbols in the vocab too
    words = _vocab() + list(string.ascii_uppercase) + ["Yes", "No", "A:", "B:", "\n", "Ġ", "Ċ"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side=padding_side,
        model_max_length=512,
    )


def build_bert(path: Path, seed: int = 0, classifier: bool = False, num_labels: int = 1) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tok = bert_tokenizer(path)
    cfg = BertConfig(
        vocab_size=len(tok),  # type: ignore[arg-type]
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    return _save(model.eval(), tok, path)


def build_xlmr(path: Path, seed: int = 0, classifier: bool = False, num_labels: int = 1) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    torch.manual_seed(seed)
    tok = xlmr_tokenizer()
    cfg = XLMRobertaConfig(
        vocab_size=len(tok),  # type: ignore[arg-type]
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=num_labels,
    )
    model = XLMRobertaForSequenceClassification(cfg) if classifier else XLMRobertaModel(cfg)
    return _save(model.eval(), tok, path)


def build_decoder(path: Path, arch: str = "qwen2", seed: int = 0, causal_lm: bool = False) -> Path:
    """A 2-layer Qwen2 / Llama / Gemma2 model (``AutoModel`` or ``AutoModelForCausalLM`` weights)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = decoder_tokenizer()
    common = dict(
        vocab_size=len(tok) + 64,  # type: ignore[arg-type]  # room for tokens a v5 tokenizer rebuild may add
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if arch == "gemma2":
        common.update(head_dim=16, sliding_window=64)
    cfg = AutoConfig.for_model(arch, **common)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_config(cfg)
    return _save(model.eval(), tok, path)


def add_st_config(path: Path, pooling: str, normalize: bool, max_seq_length: int | None = None) -> Path:
    """Write a sentence-transformers module layout (Transformer, Pooling, optional Normalize)."""
    import json

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "last_token": "pooling_mode_lasttoken"}
    pool_cfg = {"word_embedding_dimension": 32, **{k: (k == keys[pooling]) for k in keys.values()}}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg))
    if max_seq_length is not None:
        (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return path
