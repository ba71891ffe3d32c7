import json

import pytest

from flagembed.models import loading
from flagembed.models.loading import HubOptions, read_folder_config, resolve_model_path


def test_local_folder_never_touches_network(tiny_bert, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network used for a local folder")

    monkeypatch.setattr("huggingface_hub.snapshot_download", boom)
    monkeypatch.setattr("huggingface_hub.list_repo_files", boom)
    assert resolve_model_path(str(tiny_bert)) == tiny_bert.resolve()


def test_packaged_minilm(minilm_path):
    assert resolve_model_path("all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path


def test_offline_missing_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        resolve_model_path("BAAI/bge-small-en-v1.5", HubOptions(cache_dir=str(tmp_path)))


def test_hub_options_passed_through(monkeypatch, tmp_path):
    seen = {}

    def fake_snapshot(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    hub = HubOptions(revision="abc", cache_dir="/c", token="t", local_files_only=True)
    assert resolve_model_path("org/model", hub) == tmp_path
    assert seen["revision"] == "abc" and seen["cache_dir"] == "/c" and seen["token"] == "t"
    assert seen["local_files_only"] is True
    assert "*.safetensors" in seen["allow_patterns"]


def test_prefers_safetensors_when_repo_has_them(monkeypatch):
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda *a, **k: ["model.safetensors", "pytorch_model.bin"])
    assert loading._weight_patterns("org/m", HubOptions(local_files_only=False)) == ["*.safetensors"]
    monkeypatch.setattr("huggingface_hub.list_repo_files", lambda *a, **k: ["pytorch_model.bin"])
    assert loading._weight_patterns("org/m", HubOptions(local_files_only=False)) == ["*.bin"]


def test_missing_local_path():
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model_path("./no/such/dir")


def test_reads_sentence_transformers_folder(minilm_path):
    cfg = read_folder_config(minilm_path)
    assert cfg.pooling == "mean" and cfg.normalize is True and cfg.max_length == 256


def test_folder_without_normalize(tmp_path):
    import tiny_models

    tiny_models.add_st_config(tmp_path, "cls", normalize=False, max_seq_length=64)
    cfg = read_folder_config(tmp_path)
    assert (cfg.pooling, cfg.normalize, cfg.max_length) == ("cls", False, 64)


def test_new_style_pooling_mode(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "lasttoken"}))
    assert read_folder_config(tmp_path).pooling == "last_token"


def test_open_checkpoint_never_turns_remote_code_on_by_itself(tiny_bert, tmp_path):
    import shutil

    from flagembed.models import open_checkpoint

    ckpt = open_checkpoint(str(tiny_bert))
    assert ckpt.path == tiny_bert.resolve() and ckpt.spec is None and ckpt.trust_remote_code is False
    named = tmp_path / "gte-base-en-v1.5"  # named like a registry row that needs remote code
    shutil.copytree(tiny_bert, named)
    ckpt = open_checkpoint(str(named))
    assert ckpt.trust_remote_code is False and ckpt.spec is None  # a local folder's name grants nothing
    assert open_checkpoint(str(named), trust_remote_code=True).trust_remote_code is True


def _no_network(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the hub was contacted")

    monkeypatch.setattr("huggingface_hub.snapshot_download", boom)
    monkeypatch.setattr("huggingface_hub.list_repo_files", boom)


@pytest.mark.parametrize(
    "name",
    ["Alibaba-NLP/gte-base-en-v1.5", "alibaba-nlp/GTE-multilingual-base", "BAAI/bge-reranker-v2-minicpm-layerwise"],
)
def test_registered_model_needing_code_fails_without_consent_before_downloading(monkeypatch, name):
    from flagembed.models import open_checkpoint

    _no_network(monkeypatch)
    with pytest.raises(ValueError, match="needs to run its own Python code.*--trust-remote-code"):
        open_checkpoint(name)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        open_checkpoint(name, trust_remote_code=False)


def test_hub_python_files_only_with_consent(monkeypatch, tmp_path):
    from flagembed.models import open_checkpoint

    seen = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo, **kw: seen.append(kw) or str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    resolve_model_path("org/model", HubOptions(local_files_only=True))
    assert not any(p.endswith(".py") for p in seen[-1]["allow_patterns"])
    resolve_model_path("org/model", HubOptions(local_files_only=True, trust_remote_code=True))
    assert "*.py" in seen[-1]["allow_patterns"]
    open_checkpoint("org/model", local_files_only=True)  # an unknown repo without consent: no code fetched
    assert "*.py" not in seen[-1]["allow_patterns"]
    assert open_checkpoint("Alibaba-NLP/gte-base-en-v1.5", local_files_only=True, trust_remote_code=True).spec
    assert "*.py" in seen[-1]["allow_patterns"]


def test_interrupted_finetune_folder_names_latest_checkpoint(tiny_bert, tmp_path):
    import shutil

    from flagembed.models import open_checkpoint

    run = tmp_path / "run"
    for step in (9, 10):
        shutil.copytree(tiny_bert, run / f"checkpoint-{step}")
    (run / "trainer_state.json").write_text("{}")
    (run / "checkpoint-notes").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no model in folder .*run.*the latest checkpoint is checkpoint-10"):
        open_checkpoint(str(run))
    with pytest.raises(FileNotFoundError, match="checkpoint-10"):
        resolve_model_path(run)
    assert open_checkpoint(str(run / "checkpoint-10")).path == (run / "checkpoint-10").resolve()


def test_plain_folder_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"is not a model folder \(no config.json\)"):
        resolve_model_path(tmp_path)


def test_tokenizer_only_folder(tiny_bert, tmp_path):
    import shutil

    tok = tmp_path / "tok"
    tok.mkdir()
    for f in tiny_bert.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, tok / f.name)
    assert resolve_model_path(tok, kind="tokenizer") == tok.resolve()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_model_path(tok)


def test_folder_whose_type_only_its_code_defines(tiny_bert, tmp_path):
    import shutil

    from flagembed.models import open_checkpoint

    folder = tmp_path / "custom"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "m.M"}}))
    assert open_checkpoint(str(folder)).trust_remote_code is False  # bert is built in: the code is ignored
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "new", "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(ValueError, match="model type 'new'.*own Python code.*--trust-remote-code"):
        open_checkpoint(str(folder))
    assert open_checkpoint(str(folder), trust_remote_code=True).trust_remote_code is True


def test_a_folder_named_like_a_registered_model_says_it_gets_no_registry_settings(tiny_bert, tmp_path, caplog):
    import logging
    import shutil

    from flagembed import Embedder

    folder = tmp_path / "bge-small-en-v1.5"
    shutil.copytree(tiny_bert, folder)
    with caplog.at_level(logging.WARNING, logger="flagembed"):
        emb = Embedder(folder)
    assert emb.settings.query_instruction is None
    assert any("named like the registered model 'BAAI/bge-small-en-v1.5'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flagembed"):
        Embedder(folder, query_instruction="Represent this sentence for searching relevant passages: ")
    assert not [r for r in caplog.records if "named like" in r.getMessage()]
