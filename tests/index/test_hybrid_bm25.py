import numpy as np
import pytest

from flagembed import Embedder
from flagembed.index import HybridSearcher
from flagembed.index.bm25_fusion import fuse_with_dense

DOCS = ["BM25 is a ranking function.", "Dense retrieval embeds text.", "Pandas eat bamboo.", "ranking of pandas"]
Q = ["bm25 ranking", "what do pandas eat?"]


def test_dense_bm25_hybrid(tiny_bert, tmp_path):
    emb = Embedder(tiny_bert)
    s = HybridSearcher.build(emb, DOCS, modes="dense,bm25")
    assert s.modes == ["dense", "bm25"]
    assert HybridSearcher.build(emb, DOCS).modes == ["dense"]
    got = s.search(Q, top_k=3)
    want = fuse_with_dense(s.indexes["dense"], emb.encode_queries(Q), s.indexes["bm25"], Q, 3,
                           weights={"dense": 0.4, "bm25": 0.2})
    assert got.ids == want.ids and np.allclose(sum(got.scores, []), sum(want.scores, []), atol=1e-6)
    rrf = s.search(Q, top_k=3, fusion="rrf")
    assert len(rrf.ids[0]) == 3
    only = s.search(Q, top_k=2, modes="bm25")
    assert only.ids == s.indexes["bm25"].search(Q, 2).ids
    s.add(["x"], ["bm25 bm25 bm25"])
    assert s.search("bm25", modes="bm25", top_k=1).ids == [["x"]]
    s.save(tmp_path / "ix")
    back = HybridSearcher.load(tmp_path / "ix", emb)
    assert back.search(Q, top_k=3).ids == s.search(Q, top_k=3).ids
    with pytest.raises(ValueError, match="bm25"):
        HybridSearcher.build(emb, DOCS, modes="sparse,bm25")
