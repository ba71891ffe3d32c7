"""README's other commands: ``flagembed --help``, ``flagembed models``, ``flagembed demo``."""

from __future__ import annotations

import re

import pytest

DOCUMENTED = ["demo", "models", "embed", "index", "search", "rerank", "eval", "mine", "score", "finetune", "merge",
              "export", "serve"]  # fmt: skip


def test_help_lists_every_documented_command(ws_name):
    res = ws_name.run("--help")
    listed = set(re.findall(r"^\W*([a-z]+)\s{2,}", res.stdout, re.M))
    assert set(DOCUMENTED) <= listed, sorted(set(DOCUMENTED) - listed)


def test_models_lists_the_bundled_model(ws_name):
    res = ws_name.run("models", "--kind", "embedder")
    assert "all-MiniLM-L6-v2" in res.stdout and "BAAI/bge-small-en-v1.5" in res.stdout


@pytest.mark.slow
def test_demo_recall_as_readme_says(ws_name):
    res = ws_name.run("demo")
    m = re.search(r"40 claims over 300 abstracts with all-MiniLM-L6-v2: recall@3 = ([0-9.]+)", res.stdout)
    assert m, res.stdout[-1500:]
    assert float(m.group(1)) == pytest.approx(0.925, abs=0.026)  # README: 0.925 (one claim is 0.025)
