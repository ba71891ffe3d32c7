from flagembed.models.registry import BGE_EN_INSTRUCTION, BGE_ZH_INSTRUCTION, MODELS, list_models, lookup


def test_all_bge_sizes_and_languages():
    for size in ("small", "base", "large"):
        for lang, instr in (("en", BGE_EN_INSTRUCTION), ("zh", BGE_ZH_INSTRUCTION)):
            for suffix in ("", "-v1.5"):
                spec = lookup(f"BAAI/bge-{size}-{lang}{suffix}")
                assert spec is not None and spec.pooling == "cls" and spec.query_instruction == instr


def test_lookup_by_basename_alias_and_checkpoint_folder(tmp_path):
    assert lookup("bge-m3").kind == "m3"
    assert lookup("all-MiniLM-L6-v2").pooling == "mean"
    assert lookup("sentence-transformers/all-MiniLM-L6-v2").max_length == 256
    assert lookup(tmp_path / "bge-base-en-v1.5").name == "BAAI/bge-base-en-v1.5"
    assert lookup(tmp_path / "bge-small-zh" / "checkpoint-100").name == "BAAI/bge-small-zh"
    assert lookup("no-such-model") is None


def test_required_families_present():
    names = {m.name for m in MODELS}
    for needed in ("BAAI/bge-m3", "BAAI/llm-embedder", "intfloat/e5-base-v2", "thenlper/gte-base"):
        assert needed in names
    assert lookup("e5-large-v2").query_instruction == "query: "
    assert len(names) == len(MODELS), "duplicate registry rows"


def test_list_by_kind():
    assert all(m.kind == "reranker" for m in list_models("reranker"))
    assert list_models("reranker")
