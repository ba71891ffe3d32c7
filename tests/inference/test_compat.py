import shutil

import numpy as np
import pytest

from flagembed import Embedder, FlagAutoModel, FlagModel


@pytest.fixture
def bge_named_copy(tiny_bert, tmp_path):
    """The tiny BERT in a folder named like a registered BGE checkpoint."""
    dst = tmp_path / "bge-small-en-v1.5"
    shutil.copytree(tiny_bert, dst)
    return dst


def test_flagmodel_reference_arguments(tiny_bert):
    m = FlagModel(
        str(tiny_bert),
        query_instruction_for_retrieval="Represent: ",
        use_fp16=True,
        devices="cpu",
        pooling_method="mean",
        query_max_length=16,
        passage_max_length=32,
        batch_size=4,
        some_extra="kept",
    )
    assert m.some_extra == "kept" and m.kwargs == {"some_extra": "kept"}
    q = m.encode_queries(["blue water"])
    ref = Embedder(tiny_bert, pooling="mean").encode(["Represent: blue water"], max_length=16)
    np.testing.assert_allclose(q, ref, atol=1e-6)
    assert q.dtype == np.float32  # fp16 is ignored on CPU
    t = m.encode_corpus(["a", "b"], convert_to_numpy=False)
    assert tuple(t.shape) == (2, 32)
    assert m.encode("one text").shape == (32,)


def test_flagmodel_does_not_add_registry_instruction(tiny_bert, tmp_path):
    # a Hugging Face cache snapshot of the BGE repo: identified as that registry row
    cached = tmp_path / "models--BAAI--bge-small-en-v1.5" / "snapshots" / "abc"
    shutil.copytree(tiny_bert, cached)
    m = FlagModel(str(cached), devices="cpu")
    np.testing.assert_allclose(m.encode_queries(["blue water"]), m.encode(["blue water"]), atol=1e-6)
    # flagembed's own Embedder applies the registered BGE instruction
    e = Embedder(cached)
    assert e.settings.query_instruction.startswith("Represent this sentence")


def test_embedder_ignores_a_local_folder_name(bge_named_copy):
    assert Embedder(bge_named_copy).settings.query_instruction is None


def test_auto_model_uses_registry(bge_named_copy):
    m = FlagAutoModel.from_finetuned(str(bge_named_copy), devices="cpu")
    assert isinstance(m, FlagModel) and m.settings.pooling == "cls"
    with pytest.raises(ValueError, match="model_class"):
        FlagAutoModel.from_finetuned(str(bge_named_copy.parent), devices="cpu")
    with pytest.raises(ValueError, match="unknown model_class"):
        FlagAutoModel.from_finetuned(str(bge_named_copy), model_class="nope")
    with pytest.raises(OSError):
        FlagAutoModel()
