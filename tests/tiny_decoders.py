"""Tiny random decoder embedders for the decoder-only / ICL tests: Qwen2 and Mistral with LLM-like tokenizers.

The Mistral one mimics bge-en-icl's tokenizer: ``<s>``/``</s>`` special strings, BOS prepended and EOS
appended to every text, so the reference's ICL length arithmetic (``len(tok("<s>"))`` etc.) is meaningful.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tiny_models import WORDS, _save, _vocab
from tokenizers import Tokenizer, models, pre_tokenizers, processors

ICL_WORDS = ["instruct", "response", "given", "retrieve", "passages", "relevant", "answer", "Instruct", "Query"]


def llm_tokenizer(style: str = "mistral", padding_side: str = "left") -> object:
    """A word-level tokenizer; ``mistral``: ``<s> $A </s>`` template, ``qwen2``: no special tokens added."""
    from transformers import PreTrainedTokenizerFast

    if style == "qwen2":
        return _qwen2_tokenizer(padding_side)
    specials = ["<unk>", "<s>", "</s>"]
    words = specials + _vocab() + list(string.ascii_uppercase) + ICL_WORDS
    vocab = {t: i for i, t in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ and runs of punctuation: "<query>" -> "<", "query", ">"
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, model_max_length=512, **names)


def _qwen2_tokenizer(padding_side: str) -> object:
    """A small byte-level BPE built exactly as transformers 5's ``Qwen2Tokenizer`` rebuilds one (same in 4.x)."""
    from tokenizers import Regex, decoders, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    regex = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
        r"""|\s+(?!\S)|\s+"""
    )
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS + ICL_WORDS), "<instruct>\n<query>\n<response>", "Instruct: \nQuery: "]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side=padding_side,
        model_max_length=512,
        eos_token=eos,
        pad_token=eos,
        unk_token=eos,
    )


def build_llm_embedder(path: Path, arch: str = "mistral", seed: int = 0, padding_side: str = "left") -> Path:
    """A 2-layer ``AutoModel`` (Qwen2 or Mistral, hidden 32) with :func:`llm_tokenizer` of the matching style."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    tok = llm_tokenizer("mistral" if arch == "mistral" else "qwen2", padding_side)
    cfg = AutoConfig.for_model(
        arch,
        vocab_size=len(tok),  # type: ignore[arg-type]
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
        eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
        tie_word_embeddings=False,
    )
    model = AutoModel.from_config(cfg)
    _save(model.eval(), tok, path)
    # a class name both transformers 4.x and 5.x load as-is (5.x writes "TokenizersBackend", and for a
    # qwen2 config would rebuild the tokenizer as byte-level BPE)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer" if arch == "qwen2" else "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config))
    return path
