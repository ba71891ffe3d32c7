"""Saved reranker folders load in FlagEmbedding's own classes (FlagReranker, FlagLLMReranker) with equal scores.

Runs the reference (FlagEmbedding 1.4 on transformers 4.57) as a subprocess of ``FLAGEMBED_REF_PYTHON``;
skips when the variable is unset or the interpreter is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tiny_rerankers import build_decoder_lm

from flagembed.train import RerankerModelArguments
from flagembed.train.reranker_model import save_reranker
from flagembed.train.reranker_trainer import load_scorer

REF = os.environ.get("FLAGEMBED_REF_PYTHON")
PAIRS = [["water fire", "water fire study results"], ["brain", "dark light old"], ["virus hiv", "mouse gene cell"]]

SCRIPT = """
import json, sys
from FlagEmbedding import FlagLLMReranker, FlagReranker
kind, path, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cls = FlagReranker if kind == "encoder" else FlagLLMReranker
model = cls(path, devices="cpu", use_fp16=False)
print(json.dumps([float(s) for s in model.compute_score(pairs)]))
"""


def _reference_scores(kind: str, path: Path) -> list[float]:
    if not REF or not Path(REF).is_file():
        pytest.skip("FLAGEMBED_REF_PYTHON is not set (reference FlagEmbedding venv)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([REF, "-c", SCRIPT, kind, str(path), json.dumps(PAIRS)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_encoder_folder_scores_equal_in_flag_reranker(tiny_bert: Path, tmp_path: Path) -> None:
    from flagembed.inference import Reranker

    scorer, tok, _ = load_scorer(RerankerModelArguments(model_name_or_path=str(tiny_bert)))
    save_reranker(scorer, tok, tmp_path / "ce")
    ref = _reference_scores("encoder", tmp_path / "ce")
    ours = Reranker(str(tmp_path / "ce"), device="cpu", dtype="fp32").compute_score([tuple(p) for p in PAIRS])
    assert ours == pytest.approx(ref, abs=1e-5)


@pytest.mark.slow
def test_decoder_folder_scores_equal_in_flag_llm_reranker(tmp_path: Path) -> None:
    from flagembed.inference import LLMReranker

    base = build_decoder_lm(tmp_path / "llama", "llama", layers=2)
    scorer, tok, _ = load_scorer(RerankerModelArguments(model_name_or_path=str(base), model_type="decoder",
                                                        use_lora=False))  # fmt: skip
    save_reranker(scorer, tok, tmp_path / "llm")
    ref = _reference_scores("decoder", tmp_path / "llm")
    ours = LLMReranker(str(tmp_path / "llm"), device="cpu", dtype="fp32").compute_score([tuple(p) for p in PAIRS])
    assert ours == pytest.approx(ref, abs=1e-4)
