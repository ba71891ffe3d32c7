from flagembed.models.registry import (
    BGE_EN_INSTRUCTION,
    BGE_ZH_INSTRUCTION,
    MODELS,
    list_models,
    lookup,
    lookup_folder_name,
)


def test_all_bge_sizes_and_languages():
    for size in ("small", "base", "large"):
        for lang, instr in (("en", BGE_EN_INSTRUCTION), ("zh", BGE_ZH_INSTRUCTION)):
            for suffix in ("", "-v1.5"):
                spec = lookup(f"BAAI/bge-{size}-{lang}{suffix}")
                assert spec is not None and spec.pooling == "cls" and spec.query_instruction == instr


def test_lookup_matches_exact_hub_ids_and_aliases_only(tmp_path):
    assert lookup("BAAI/bge-m3").kind == "m3"
    assert lookup("baai/BGE-M3/").kind == "m3"  # hub ids are case-insensitive
    assert lookup("all-MiniLM-L6-v2").pooling == "mean"  # the bundled model's alias
    assert lookup("sentence-transformers/all-MiniLM-L6-v2").max_length == 256
    assert lookup("bge-m3") is None and lookup("someone/bge-m3") is None  # not the BAAI repo
    assert lookup("evil/gte-base-en-v1.5") is None
    folder = tmp_path / "bge-base-en-v1.5"
    folder.mkdir()
    assert lookup(folder) is None  # a local folder is not identified by its name
    assert lookup(tmp_path / "bge-small-zh" / "checkpoint-100") is None
    assert lookup("no-such-model") is None


def test_lookup_identifies_hugging_face_cache_snapshots(tmp_path):
    snap = tmp_path / "hub" / "models--BAAI--bge-small-en-v1.5" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert lookup(snap).name == "BAAI/bge-small-en-v1.5"
    other = tmp_path / "hub" / "models--someone--bge-small-en-v1.5" / "snapshots" / "abc123"
    other.mkdir(parents=True)
    assert lookup(other) is None


def test_folder_name_rule_of_the_auto_classes(tmp_path):
    assert lookup_folder_name(tmp_path / "bge-base-en-v1.5").name == "BAAI/bge-base-en-v1.5"
    assert lookup_folder_name(tmp_path / "bge-small-zh" / "checkpoint-100").name == "BAAI/bge-small-zh"
    assert lookup_folder_name("BAAI/bge-m3").kind == "m3"
    assert lookup_folder_name(tmp_path / "my-model") is None


def test_rows_needing_remote_code():
    needing = {m.name for m in MODELS if m.needs_remote_code}
    assert needing == {
        "Alibaba-NLP/gte-base-en-v1.5",
        "Alibaba-NLP/gte-large-en-v1.5",
        "Alibaba-NLP/gte-multilingual-base",
        "Alibaba-NLP/gte-Qwen2-7B-instruct",
        "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
        "Alibaba-NLP/gte-Qwen1.5-7B-instruct",
        "BAAI/bge-code-v1",
        "BAAI/bge-reranker-v2-minicpm-layerwise",
        "BAAI/bge-reranker-v2.5-gemma2-lightweight",
    }


def test_required_families_present():
    names = {m.name for m in MODELS}
    for needed in ("BAAI/bge-m3", "BAAI/llm-embedder", "intfloat/e5-base-v2", "thenlper/gte-base"):
        assert needed in names
    assert lookup("intfloat/e5-large-v2").query_instruction == "query: "
    assert len(names) == len(MODELS), "duplicate registry rows"


def test_list_by_kind():
    assert all(m.kind == "reranker" for m in list_models("reranker"))
    assert list_models("reranker")
