"""Tiny byte-level BPE tokenizers (digits split, exact decode) and tiny Llama checkpoints for longctx tests."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = (
    "There is an important infomation hidden in the following context. Find the information and memorize it. "
    "I will quiz you about the important information there. The grass is green. The sky is blue. The sun is "
    "yellow. Here we go. There and back again. The pass key is 12345. Remember it. 67890 is the pass key. "
    "What is the pass key? The best thing to do in San Francisco is sitting in Dolores Park and eating a hamburg "
    "on a sunny day. What is the best thing to do in San Francisco? Answer: user assistant system hello world "
    "How are you? I am fine, thanks. Tell me a story about a cat. Once upon a time."
)
SPECIALS = ["<pad>", "<s>", "</s>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"]


def bpe_tokenizer(corpus: str = CORPUS, vocab_size: int = 400, bos: str | None = "<s>",
                  chat_template: str | None = None):
    """A byte-level BPE with single-digit tokens, ``<s>``/``</s>`` and the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus], trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos or "<s>", eos_token="</s>", pad_token="<pad>",
                                  model_max_length=100000)
    if chat_template:
        out.chat_template = chat_template
    return out


def build_llama(path: Path, tokenizer, seed: int = 0, max_positions: int = 2048, rope_theta: float = 10000.0) -> Path:
    """A 2-layer Llama (H 64, 4 heads, 2 KV heads: LONG_CONTEXT.md §12's tiny config) saved with ``tokenizer``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, max_position_embeddings=max_positions,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    try:
        cfg = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, **kwargs)
    except TypeError:  # transformers 4.x
        cfg = LlamaConfig(rope_theta=rope_theta, **kwargs)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
