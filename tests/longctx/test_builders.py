"""Synthetic rows, the QA builder against a local fake OpenAI-compatible endpoint, MMLU retention scoring."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from tiny_longctx import bpe_tokenizer

from flagembed.longctx.data import build_rows
from flagembed.longctx.qa_builder import ChatClient, build_qa_rows, chunk_text, mix_rows, parse_qa
from flagembed.longctx.retention import eval_mmlu, read_mmlu
from flagembed.longctx.synthetic import synthetic_rows

SIMPLE_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% else %}"
               "{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def test_synthetic_rows_have_the_answer_in_the_context():
    tok = bpe_tokenizer(chat_template=SIMPLE_CHAT)
    rows = synthetic_rows(tok, 6, [120, 200], kinds=["passkey", "needle", "kv"], seed=1)
    assert [r["kind"] for r in rows] == ["passkey", "needle", "kv"] * 2
    for r in rows:
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        core = answer.removeprefix("The pass key is ").rstrip(".")
        assert core.split(" is ")[-1] in user
    passkey = rows[0]
    assert len(tok(passkey["messages"][0]["content"], add_special_tokens=False)["input_ids"]) == pytest.approx(
        passkey["length"], abs=3)
    assert synthetic_rows(tok, 3, [150], seed=5) == synthetic_rows(tok, 3, [150], seed=5)
    examples, stats = build_rows(tok, rows, max_length=400)
    assert stats["chat"] == 6
    labelled = [t for t, lab in zip(examples[0]["input_ids"], examples[0]["labels"]) if lab != -100]
    assert tok.decode(labelled).strip() == passkey["messages"][1]["content"] + "</s>"
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synthetic_rows(tok, 1, [100], kinds=["math"])


class FakeEndpoint(BaseHTTPRequestHandler):
    script: list = []  # status codes to answer before succeeding
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeEndpoint.seen.append((body, self.headers.get("Authorization")))
        if FakeEndpoint.script:
            self.send_response(FakeEndpoint.script.pop(0))
            self.end_headers()
            return
        chunk = body["messages"][0]["content"].split("\n\n", 1)[1]
        reply = "Here you go:\n```json\n" + json.dumps([{"question": f"What does '{chunk[:12]}' start?",
                                                          "answer": chunk[:12]}]) + "\n```"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeEndpoint.script, FakeEndpoint.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_qa_builder_caches_and_retries(endpoint, tmp_path):
    docs = ["First part of the book. " * 20 + "\n\n" + "Second part of the book. " * 20]
    cache = tmp_path / "cache.jsonl"
    FakeEndpoint.script = [503, 429]  # two transient failures, then success
    client = ChatClient(endpoint, "fake-model", api_key="k", cache=cache, max_retries=2, backoff=0.01)
    rows, stats = build_qa_rows(docs, client, questions=1, chunk_chars=600)
    assert stats == {"documents": 1, "chunks": 2, "pairs": 2, "unparsed": 0}
    assert client.calls == 4 and FakeEndpoint.seen[0][1] == "Bearer k"
    assert rows[0]["messages"][0]["content"].startswith(docs[0]) and rows[0]["messages"][1]["content"]
    # a second run answers from the cache: no call at all
    again = ChatClient(endpoint, "fake-model", cache=cache, backoff=0.01)
    assert build_qa_rows(docs, again, questions=1, chunk_chars=600)[0] == rows and again.calls == 0
    FakeEndpoint.script = [500, 500, 500]
    with pytest.raises(RuntimeError, match="after 3 attempts"):
        ChatClient(endpoint, "m", max_retries=2, backoff=0.0).complete("x")
    FakeEndpoint.script = [401]
    with pytest.raises(RuntimeError, match="HTTP 401"):
        ChatClient(endpoint, "m", max_retries=5, backoff=0.0).complete("y")
    mixed = mix_rows(rows, ["plain long text"])
    assert len(mixed) == 3 and {"text": "plain long text"} in mixed


def test_parse_and_chunk():
    assert parse_qa('junk [{"question": "q", "answer": "a"}, {"question": ""}] junk') == [
        {"question": "q", "answer": "a"}]
    assert parse_qa("no json") == [] and parse_qa("[not json]") == []
    chunks = chunk_text("A b. " * 100, 50)
    assert all(len(c) <= 50 for c in chunks) and "".join(chunks).replace(" ", "") == ("A b." * 100).replace(" ", "")


def test_mmlu_likelihood_scoring(tmp_path):
    tok = bpe_tokenizer()
    (tmp_path / "test").mkdir()
    rows = [["What color is the sky?", "green", "blue", "red", "yellow", "B"],
            ["What color is the grass?", "green", "blue", "red", "yellow", "A"]]
    with open(tmp_path / "test" / "colors_test.csv", "w") as fh:
        fh.write("\n".join(",".join(r) for r in rows) + "\n")
    answers = {"sky": "B", "grass": "A"}

    class KnowsColors:
        """Lower NLL for the right letter: a fake that reads the question from the ids."""

        def __call__(self, input_ids, labels):
            text = tok.decode(input_ids[0].tolist())
            letter = tok.decode([t for t in labels[0].tolist() if t != -100]).strip()
            right = answers["sky" if "sky" in text.rsplit("Answer:", 1)[0].rsplit("?", 1)[0][-10:] else "grass"]
            return type("Out", (), {"loss": torch.tensor(0.1 if letter == right else 2.0)})()

    res = eval_mmlu(KnowsColors(), tok, tmp_path)
    assert res["accuracy"] == 1.0 and res["subjects"]["colors"]["n"] == 2
    assert set(read_mmlu(tmp_path)) == {"colors"}
    (tmp_path / "bad.csv").write_text("q,a,b\n")
    with pytest.raises(ValueError, match="row 0"):
        read_mmlu(tmp_path / "bad.csv")
