"""The long-context harness: token-exact prompts, scorers, sliding-window perplexity, grids, loaders, plots."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tiny_longctx import bpe_tokenizer, build_llama

from flagembed.longctx import harness as H
from flagembed.longctx.harness import benchmarks as B
from flagembed.longctx.harness import prompts as P


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


class Oracle:
    """A fake causal LM: ``generate`` answers with what follows ``pattern`` in the prompt (or a fixed reply)."""

    def __init__(self, tokenizer, pattern=r"pass key is (\d+)", reply=None, memory=None):
        self.tok, self.pattern, self.reply, self.calls = tokenizer, pattern, reply, []
        if memory is not None:
            self.memory = memory

    def generate(self, input_ids, max_new_tokens, do_sample):
        assert do_sample is False and input_ids.shape[0] == 1
        text = self.tok.decode(input_ids[0].tolist())
        self.calls.append(text)
        if self.reply is not None:
            answer = self.reply
        else:
            found = re.search(self.pattern, text)
            answer = found.group(1) if found else "nothing"
        new = torch.tensor([self.tok(answer, add_special_tokens=False)["input_ids"][:max_new_tokens]])
        return torch.cat([input_ids, new], dim=1)


@pytest.mark.parametrize("depth", [0, 50, 100])
def test_passkey_prompt_is_token_exact(tok, depth):
    p = P.passkey_prompt(tok, 300, depth, 12345)
    assert len(p.input_ids) == 300
    assert p.input_ids[0] == tok.bos_token_id
    info = tok(P.PASSKEY_INFO.format(key=12345), add_special_tokens=False)["input_ids"]
    assert p.input_ids[p.needle_start : p.needle_start + len(info)] == info
    desc = len(tok(P.DESCRIPTION, add_special_tokens=False)["input_ids"])
    quest = len(tok(P.PASSKEY_QUESTION, add_special_tokens=False)["input_ids"])
    free = 300 - 1 - desc - len(info) - quest
    assert p.needle_start == 1 + desc + round(free * depth / 100)
    assert p.input_ids[-quest:] == tok(P.PASSKEY_QUESTION, add_special_tokens=False)["input_ids"]


def test_prompt_too_short_and_bad_depth(tok):
    with pytest.raises(ValueError, match="too short"):
        P.passkey_prompt(tok, 20, 50, 12345)
    with pytest.raises(ValueError, match="depth"):
        P.passkey_prompt(tok, 300, 101, 12345)


def test_chat_wrapping_records_real_length():
    tok = bpe_tokenizer(chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = P.passkey_prompt(tok, 200, 50, 11111, chat=True)
    text = tok.decode(p.input_ids)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert p.to_dict()["tokens"] == len(p.input_ids) > 200


def test_passkeys_are_seeded():
    assert H.passkeys(5, 123) == H.passkeys(5, 123)
    assert H.passkeys(5, 123) != H.passkeys(5, 124)
    assert all(10000 <= k <= 99999 for k in H.passkeys(50))


def test_passkey_scoring():
    assert H.passkey_score("The pass key is 12345.", "12345") == {"accuracy": 1.0, "fuzz": 1.0}
    wrong = H.passkey_score("12346", "12345")
    assert wrong["accuracy"] == 0.0 and 0 < wrong["fuzz"] < 1
    assert H.passkey_score("no digits", "12345") == {"accuracy": 0.0, "fuzz": 0.0}


def test_eval_passkey_oracle_and_wrong_model(tok):
    lengths, depths = [150, 250], [0, 50, 100]
    res = H.eval_passkey(Oracle(tok), tok, lengths, depths, chat=False)
    assert res["matrix"] == [[1.0] * 3] * 2 and res["mean"] == 1.0
    json.dumps(res)  # JSON-able
    assert [r["length"] for r in res["records"]] == [150] * 3 + [250] * 3
    bad = H.eval_passkey(Oracle(tok, reply="The pass key is 99999"), tok, lengths, depths, chat=False)
    assert bad["mean"] == 0.0


def test_memory_is_reset_before_each_example(tok):
    class Memory:
        resets = 0

        def reset(self):
            Memory.resets += 1

    H.eval_passkey(Oracle(tok, memory=Memory()), tok, [150], [0, 100], chat=False)
    assert Memory.resets == 2


def test_needle_scoring_and_eval(tok, tmp_path):
    assert H.needle_score(P.NEEDLE, P.NEEDLE) == 1.0
    assert H.needle_score("The grass is green and the sky is blue.", P.NEEDLE) < 0.2
    assert H.needle_score("I do not know.\n" + P.NEEDLE, P.NEEDLE) < 0.2  # only the first line counts
    (tmp_path / "essay.txt").write_text("Startups grow fast. Founders should talk to users. " * 20)
    oracle = Oracle(tok, pattern=r"(The best thing to do in San Francisco is [^.]*\.)")
    res = H.eval_needle(oracle, tok, [200], [0, 100], haystack=[tmp_path], chat=False)
    assert res["mean"] == 1.0
    assert "Founders" in oracle.calls[0]


def test_sliding_windows_cover_every_token_once():
    for bos, total in ((True, 1000), (False, 999)):
        chunks = H.sliding_windows(1000, 256, 128, bos)
        covered = []
        for _begin, end, targets in chunks:
            covered.extend(range(end - targets, end))
        assert covered == list(range(1000))
        # position 0 is a target only when a bos predicts it
        assert sum(t for _, _, t in chunks) - (0 if bos else 1) == total
    assert H.sliding_windows(1000, 256, 0, False) == [(0, 256, 256)]


@pytest.mark.slow
def test_eval_perplexity_matches_manual_loss(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_llama(tmp_path / "m", tok)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    text = " ".join([P.NOISE] * 6)
    ids = tok(text)["input_ids"]  # bos + content
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    res = H.eval_perplexity(model, tok, [text], max_length=len(ids), stride=0)
    assert res["tokens"] == len(ids) - 1 and math.isclose(res["nll"], ref, rel_tol=1e-5)
    # overlapping windows score each token once, with more context: finite and on the same scale
    res2 = H.eval_perplexity(model, tok, [text], max_length=32, stride=16)
    assert res2["tokens"] == len(ids) - 1
    by_len = H.perplexity_by_length(model, tok, [text, "too short"], [16, 32])
    assert by_len["lengths"] == [16, 32] and by_len["runs"][0]["documents"] == 1
    # the real HF interface end to end: greedy generate through the harness
    out = H.eval_passkey(model, tok, [120], [50], max_new_tokens=3, chat=False)
    assert out["records"][0]["tokens"] == 120


def test_topic_retrieval(tok):
    rows = [{"context": "USER: I would like to discuss the topic of blue sky. ... green grass.", "topics": ["blue sky",
             "green grass"], "num_topics": 2}]
    res = H.eval_topic(Oracle(tok, pattern=r"topic of ([a-z ]+)\."), tok, rows, chat=False)
    assert res["accuracy"] == 1.0 and res["groups"]["2"]["n"] == 1


def test_longbench_scorers():
    assert H.normalize_answer("The  Cat, a dog!") == "cat dog"
    assert H.qa_f1_score("the cat sat", "A cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert H.classification_score("Type: LOC", "LOC", all_classes=["LOC", "NUM", "HUM"]) == 1.0
    assert H.classification_score("LOC or NUM", "LOC", all_classes=["LOC", "NUM"]) == 0.5
    assert H.classification_score("NUM", "LOC", all_classes=["LOC", "NUM"]) == 0.0
    assert H.retrieval_score("Paragraph 3", "Paragraph 3") == 1.0
    assert H.retrieval_score("Paragraph 3 or 4", "Paragraph 3") == 0.5
    assert H.count_score("There are 7 unique", "7") == 1.0
    assert H.code_sim_score("# comment\nx = foo(1)\n", "x = foo(1)") == 1.0
    assert 0 < H.code_sim_score("y = bar(2)", "x = foo(1)") < 1
    assert H.rouge_l("a b c d", "a c d e")["f"] == pytest.approx(0.75)
    assert H.fuzz_ratio("abcd", "abce") == 75.0


def test_longbench_and_infbench_on_local_files(tok, tmp_path):
    rows = [{"input": "What color is the sky?", "context": P.NOISE * 3, "answers": ["blue"], "all_classes": None},
            {"input": "What color is the grass?", "context": P.NOISE, "answers": ["green"], "all_classes": None}]
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "hotpotqa.jsonl", "w") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    oracle = Oracle(tok, reply="blue\nmore text")
    res = H.eval_longbench(oracle, tok, tmp_path, max_length=60)
    assert res["scores"] == {"hotpotqa": 50.0} and res["categories"] == {"Multi-Doc QA": 50.0}
    assert all(len(tok(c)["input_ids"]) <= 70 for c in oracle.calls)  # middle-truncated
    assert H.score_longbench("trec", ["LOC\nNUM"], [{"answers": ["LOC"], "all_classes": ["LOC", "NUM"]}]) == 100.0
    with pytest.raises(FileNotFoundError, match="musique"):
        H.eval_longbench(oracle, tok, tmp_path, tasks=["musique"])
    with open(tmp_path / "passkey.jsonl", "w") as fh:
        fh.write(json.dumps({"context": P.NOISE, "input": "What is the pass key?", "answer": "4242"}) + "\n")
    res = H.eval_infbench(Oracle(tok, reply="4242."), tok, tmp_path, tasks=["passkey"])
    assert res["scores"] == {"passkey": 1.0}
    assert "The pass key is" in B.infbench_prompt("passkey", {"context": "c", "input": "q"})


def test_plots_write_png(tok, tmp_path):
    res = H.eval_passkey(Oracle(tok), tok, [150, 200], [0, 100], chat=False)
    H.plot_heatmap(res, tmp_path / "heat.png")
    H.plot_ppl({"a": {"lengths": [16, 32], "ppl": [5.0, 6.0]}}, tmp_path / "ppl.png")
    for name in ("heat.png", "ppl.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
