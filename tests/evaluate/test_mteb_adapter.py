"""MTEB adapter: runs mteb's own offline mock tasks; instruction policy; mteb's score equals a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from flagembed.evaluate.mteb_adapter import FlagembedMTEBModel, to_mteb

mteb = pytest.importorskip("mteb")
mock_tasks = pytest.importorskip("mteb.mocks.mock_tasks")


class Recorder:
    """Delegates to a real embedder and records the instruction each call used."""

    def __init__(self, inner):
        self.inner, self.settings, self.calls = inner, inner.settings, []

    def encode(self, texts, instruction=None, instruction_format="{}{}", normalize=None):
        self.calls.append((instruction, normalize, list(texts)))
        return self.inner.encode(
            texts, instruction=instruction, instruction_format=instruction_format, normalize=normalize
        )


@pytest.fixture()
def instructed(tiny_bert):
    from flagembed.inference import Embedder

    return Embedder(str(tiny_bert), device="cpu", query_instruction="Q: ", show_progress=False)


def test_mock_sts_score_equals_direct_spearman(instructed):
    task = mock_tasks.MockSTSTask()
    result = mteb.evaluate(to_mteb(instructed), task, cache=None, show_progress_bar=False)
    task.load_data()
    split = task.dataset["test"]
    a, b = instructed.encode(list(split["sentence1"])), instructed.encode(list(split["sentence2"]))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    expected = spearmanr(split["score"], cos)[0]
    assert result.task_results[0].get_score() == pytest.approx(expected, abs=1e-6)


def test_instruction_policy_on_mock_tasks(instructed):
    rec = Recorder(instructed)
    tasks = [mock_tasks.MockRetrievalTask(), mock_tasks.MockSTSTask(), mock_tasks.MockClassificationTask()]
    result = mteb.evaluate(FlagembedMTEBModel(rec), tasks, cache=None, show_progress_bar=False)
    assert len(result.task_results) == 3
    instructions = {inst for inst, _, _ in rec.calls}
    assert instructions == {"Q: ", None}  # queries of the retrieval task only
    retrieval_queries = [texts for inst, _, texts in rec.calls if inst == "Q: "]
    assert retrieval_queries  # and classification calls are not normalized
    assert any(norm is False for _, norm, _ in rec.calls)


def test_task_override_and_v1_hooks(instructed):
    model = FlagembedMTEBModel(instructed, task_instructions={"T2Retrieval": "为这个句子生成表示以用于检索相关文章："})
    inst, _ = model.instruction_for("T2Retrieval", "Retrieval", "query")
    assert inst.startswith("为这个句子")
    assert model.instruction_for("STS12", "STS", "query")[0] is None
    q = model.encode_queries(["hello"], task_name=None)
    want = instructed.encode(["hello"])  # no task type known -> no instruction, as in mteb 1.x STS
    assert q.shape == want.shape
    docs = model.encode_corpus([{"title": "T", "text": "body"}])
    assert np.allclose(docs, instructed.encode(["T body"]), atol=1e-6)
    assert model.mteb_model_meta.name.startswith("flagembed/") or "/" in model.mteb_model_meta.name


def test_select_tasks_names_unknown_tasks_and_knows_c_mteb():
    from flagembed.evaluate.mteb_adapter import select_tasks

    with pytest.raises(ValueError, match="unknown mteb task: 'STSBenchmrk' not found. Did you mean"):
        select_tasks(["STSBenchmrk"])
    with pytest.raises(ValueError, match="unknown mteb benchmark"):
        select_tasks(benchmark="No-Such-Bench")
    assert {t.metadata.name for t in select_tasks(benchmark="C-MTEB")} >= {"T2Retrieval", "LCQMC"}
    task = mock_tasks.MockSTSTask()
    assert select_tasks([task]) == [task]


def test_run_mteb_offline_is_a_connection_error_with_context(monkeypatch, instructed):
    from flagembed.evaluate.mteb_adapter import run_mteb

    def offline(*args, **kwargs):  # what datasets raises when HF_HUB_OFFLINE is set and nothing is cached
        raise ConnectionError("Couldn't reach 'mteb/stsbenchmark-sts' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(mteb, "evaluate", offline)
    with pytest.raises(ConnectionError, match="need network access or the datasets in the Hugging Face cache"):
        run_mteb(instructed, tasks=[mock_tasks.MockSTSTask()])
