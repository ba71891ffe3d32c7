"""Chat-template label masking (Llama-3, Qwen, Mistral styles), plain text rows, packing, length grouping."""

from __future__ import annotations

import pytest
from tiny_longctx import bpe_tokenizer

from flagembed.longctx.data import PadCollator, build_rows, chat_example, length_grouped_order, pack_texts

LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content']"
    " + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
CASES = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "qwen": (QWEN, None, "<|im_end|>"),
    "mistral": (MISTRAL, "<s>", "</s>"),
}
CONVERSATION = [
    {"role": "user", "content": "Tell me a story about a cat."},
    {"role": "assistant", "content": "Once upon a time."},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "I am fine, thanks."},
]


def _runs(ids, labels):
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == -100:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(lab)
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("style", list(CASES))
def test_labels_are_exactly_the_assistant_turns(style):
    template, bos, end = CASES[style]
    tok = bpe_tokenizer(bos=bos, chat_template=template)
    ex = chat_example(tok, CONVERSATION)
    assert ex["input_ids"] == tok(tok.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)[
        "input_ids"]
    runs = [tok.decode(r).strip() for r in _runs(ex["input_ids"], ex["labels"])]
    assert runs == [f"Once upon a time.{end}", f"I am fine, thanks.{end}"]
    # nothing of the prompt (system/user turns, headers, the generation prompt) carries a label
    prompt = tok.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
    n = len(tok(prompt.rstrip(" "), add_special_tokens=False)["input_ids"])
    assert all(lab == -100 for lab in ex["labels"][: n - 1])


def test_over_long_chat_rows_are_dropped_and_text_rows_truncated():
    tok = bpe_tokenizer(chat_template=QWEN)
    full = chat_example(tok, CONVERSATION)["length"]
    assert chat_example(tok, CONVERSATION, max_length=full - 1) is None
    rows = [{"messages": CONVERSATION}, {"text": "The grass is green. " * 50}, {"messages": CONVERSATION}]
    out, stats = build_rows(tok, rows, max_length=full)
    assert stats == {"chat": 2, "text": 1, "dropped": 0}
    assert out[-1]["length"] == full and out[-1]["labels"] == out[-1]["input_ids"]
    out, stats = build_rows(tok, rows, max_length=full - 1)
    assert stats["dropped"] == 2
    with pytest.raises(ValueError, match="row 0"):
        build_rows(tok, [{"messages": [{"role": "user", "content": "hi"}]}], 100)


def test_packing_fills_rows_with_eos_between_texts():
    tok = bpe_tokenizer()
    texts = ["The grass is green.", "The sky is blue.", "The sun is yellow."] * 10
    rows = pack_texts(tok, texts, 16)
    stream = []
    for t in texts:
        stream += tok(t)["input_ids"] + [tok.eos_token_id]
    assert [r["input_ids"] for r in rows] == [stream[i : i + 16] for i in range(0, len(stream) - 15, 16)]
    assert all(r["length"] == 16 for r in rows)


def test_length_grouped_order_and_collator():
    lengths = [5, 50, 7, 48, 6, 49]
    order = length_grouped_order(lengths, batch_size=1, seed=0, mega=3)
    assert sorted(order) == list(range(6))
    for g in (order[:3], order[3:]):
        assert [lengths[i] for i in g] == sorted((lengths[i] for i in g), reverse=True)
    batch = PadCollator(0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
