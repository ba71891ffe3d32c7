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


def test_open_checkpoint_resolves_folder_spec_and_remote_code(tiny_bert, tmp_path):
    import shutil

    from flagembed.models import open_checkpoint

    ckpt = open_checkpoint(str(tiny_bert))
    assert ckpt.path == tiny_bert.resolve() and ckpt.spec is None and ckpt.trust_remote_code is False
    named = tmp_path / "gte-base-en-v1.5"  # a registry row that needs remote code
    shutil.copytree(tiny_bert, named)
    assert open_checkpoint(str(named)).trust_remote_code is True
    assert open_checkpoint(str(named), trust_remote_code=False).trust_remote_code is False
