"""Context-extension recipe: LoRA wiring, chunked-loss Trainer, resume, merge == adapter model, 4-bit."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_longctx import bpe_tokenizer, build_llama

from flagembed.longctx import get_rope, nf4_config
from flagembed.longctx.extend import ExtendConfig, add_lora, count_trainable, extend

QWEN = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("extend") / "llama", bpe_tokenizer(chat_template=QWEN))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "The pass key is 12345. What is the pass key?"},
                          {"role": "assistant", "content": "The pass key is 12345."}]},
            {"text": "The grass is green. The sky is blue. The sun is yellow. " * 8}] * 4
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_lora_wiring_and_trainable_count(llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama)
    cfg = ExtendConfig(model=str(llama), data=[], output_dir="unused", lora_rank=32)
    peft_model = add_lora(model, cfg)
    vocab, h, kv = model.config.vocab_size, 64, 32
    per_layer = (32 * h + h * 32) + 2 * (32 * h + kv * 32) + (32 * h + h * 32)  # q, k, v, o
    assert count_trainable(peft_model) == 2 * per_layer + vocab * h  # 45,056 for the §12 vocab of 256
    for name, p in peft_model.named_parameters():
        expected = "lora_" in name or "modules_to_save" in name
        assert p.requires_grad == expected, name
    q = peft_model.get_base_model().model.layers[0].self_attn.q_proj
    assert q.lora_A["default"].weight.shape == (32, h)


@pytest.mark.slow
def test_extend_trains_resumes_and_merges(llama, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = ExtendConfig(model=str(llama), data=[str(data)], output_dir=str(out), max_length=128, rope_theta=1e6,
                       lora_rank=4, lora_alpha=8, learning_rate=1e-2, max_steps=3, save_steps=3, chunk_size=16,
                       logging_steps=1, merge=True)
    summary = extend(cfg)
    assert summary["steps"] == 3 and summary["chat"] == 4 and summary["text"] == 4
    assert (out / "checkpoint-3").is_dir() and (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert get_rope(merged.config)["rope_theta"] == 1e6
    cfg_json = json.loads((out / "merged" / "config.json").read_text())
    assert cfg_json["rope_theta"] == 1e6  # what transformers 4.x reads
    from flagembed.longctx import load_causal_lm

    base, _ = load_causal_lm(llama, rope={"theta": 1e6})
    adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    ids = torch.randint(3, 300, (1, 40))
    with torch.no_grad():
        a, m = adapter(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(llama).eval()(input_ids=ids).logits
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(m, plain, atol=1e-3)  # training and the RoPE change did something
    cfg.max_steps, cfg.resume, cfg.merge = 4, True, False
    again = extend(cfg)
    assert again["resumed_from"].endswith("checkpoint-3") and again["steps"] == 4


def test_trainer_loss_equals_hf_loss(llama):
    from transformers import AutoModelForCausalLM

    from flagembed.longctx.extend import _trainer_class, training_arguments

    model = add_lora(AutoModelForCausalLM.from_pretrained(llama), ExtendConfig(str(llama), [], "unused", lora_rank=4))
    trainer = _trainer_class()(model=model, args=training_arguments(ExtendConfig(str(llama), [], "/tmp/unused-x")))
    trainer.chunk_size = 7
    ids = torch.randint(3, 300, (2, 30))
    labels = ids.clone()
    labels[:, :5] = -100
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels).loss
        got = trainer.compute_loss(model, {"input_ids": ids, "labels": labels})
    assert torch.allclose(got, ref, atol=1e-5)


def test_nf4_config():
    q = nf4_config(torch.bfloat16)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.slow
def test_real_4bit_forward_backward_on_cpu(llama):
    pytest.importorskip("bitsandbytes")
    from flagembed.longctx import load_causal_lm

    try:
        model, _ = load_causal_lm(llama, dtype="fp32", load_in_4bit=True)
    except (ImportError, RuntimeError, ValueError) as exc:  # bitsandbytes without a CPU backend
        pytest.skip(f"bitsandbytes 4-bit does not load here: {exc}")
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = add_lora(model, ExtendConfig(str(llama), [], "unused", lora_rank=4, load_in_4bit=True))
    ids = torch.randint(3, 300, (1, 24))
    from flagembed.longctx import causal_lm_loss

    loss = causal_lm_loss(model, ids, ids, chunk_size=8)
    loss.backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads and all("lora_" in n or "modules_to_save" in n for n in grads)
