"""LLM-Embedder task switch: the exact instruction strings and their use by Embedder and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from flagembed import Embedder, lookup
from flagembed.models import TASKS, task_instructions

# research/llm_embedder/src/retrieval/data.py, TASK_CONFIG["llm-embedder"]["instruction"] (WAVE2_REFERENCE §2.2)
EXPECTED = {
    "qa": ("Represent this query for retrieving relevant documents: ", "Represent this document for retrieval: "),
    "convsearch": (
        "Encode this query and context for searching relevant passages: ",
        "Encode this passage for retrieval: ",
    ),
    "chat": (
        "Embed this dialogue to find useful historical dialogues: ",
        "Embed this historical dialogue for retrieval: ",
    ),
    "lrlm": (
        "Embed this text chunk for finding useful historical chunks: ",
        "Embed this historical text chunk for retrieval: ",
    ),
    "icl": (
        "Convert this example into vector to look for useful examples: ",
        "Convert this example into vector for retrieval: ",
    ),
    "tool": (
        "Transform this user request for fetching helpful tool descriptions: ",
        "Transform this tool description for retrieval: ",
    ),
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_instruction_strings_verbatim(task):
    assert task_instructions("BAAI/llm-embedder", task) == EXPECTED[task]
    assert lookup("BAAI/llm-embedder").task_instruction(task) == EXPECTED[task]
    assert all(s.endswith(": ") for s in EXPECTED[task])


def test_task_names_and_errors():
    assert set(TASKS) == set(EXPECTED)
    with pytest.raises(ValueError, match="no task 'poetry'; valid: qa, convsearch, chat, lrlm, icl, tool"):
        task_instructions("BAAI/llm-embedder", "poetry")
    with pytest.raises(ValueError, match="has no task instructions"):
        task_instructions("BAAI/bge-base-en-v1.5", "qa")


def test_embedder_task_prepends_query_and_key_instructions(tiny_bert):
    emb = Embedder(tiny_bert, task="tool", device="cpu")
    q_instr, k_instr = EXPECTED["tool"]
    assert (emb.settings.query_instruction, emb.settings.passage_instruction) == (q_instr, k_instr)
    plain = Embedder(tiny_bert, device="cpu")
    np.testing.assert_allclose(emb.encode_queries(["find a tool"]), plain.encode([q_instr + "find a tool"]), atol=1e-6)
    np.testing.assert_allclose(emb.encode_corpus(["a search api"]), plain.encode([k_instr + "a search api"]), atol=1e-6)
    explicit = Embedder(tiny_bert, task="tool", query_instruction="Q: ", device="cpu")
    assert explicit.settings.query_instruction == "Q: " and explicit.settings.passage_instruction == k_instr


def test_embed_cli_task(tiny_bert, tmp_path):
    from typer.testing import CliRunner

    from flagembed.cli import app

    src = tmp_path / "q.txt"
    src.write_text("find a tool\n")
    out = tmp_path / "q.npy"
    res = CliRunner().invoke(
        app, ["embed", "-m", str(tiny_bert), "-i", str(src), "-o", str(out), "--queries", "--task", "tool"]
    )
    assert res.exit_code == 0, res.output
    expected = Embedder(tiny_bert, device="cpu").encode([EXPECTED["tool"][0] + "find a tool"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    bad = CliRunner().invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(src), "-o", str(out), "--task", "x"])
    assert bad.exit_code == 2 and "no task 'x'" in bad.output


def test_serve_host_task(tiny_bert):
    from flagembed.serve.backends import load_host

    host = load_host(str(tiny_bert), task="chat", device="cpu")
    assert host.format_inputs(["hi"], "query") == [EXPECTED["chat"][0] + "hi"]
    assert host.format_inputs(["old talk"], "passage") == [EXPECTED["chat"][1] + "old talk"]
