"""Dense indexes of images and image+text documents; text, image and image+text queries (API and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_visual
from typer.testing import CliRunner

from flagembed.cli import app
from flagembed.index import HybridSearcher
from flagembed.index.visual import build_visual_index, read_visual_corpus, search_visual
from flagembed.inference.visual import ImageBatchError, VisualEmbedder


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vidx")
    model = tiny_visual.build_visual(tiny_bert, tmp / "model", seed=3)
    pics = tmp / "pics"
    (pics / "sub").mkdir(parents=True)
    for i in range(4):
        tiny_visual.draw(40 + i).save(pics / ("sub" if i == 3 else ".") / f"p{i}.png")
    (pics / "notes.txt").write_text("not an image")
    corpus = tmp / "docs.jsonl"
    recs = [{"_id": "t1", "text": "red cell"}, {"_id": "m1", "text": "blue", "image": "pics/p1.png"}]
    corpus.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return model, pics, corpus, tmp


def test_read_visual_corpus(setup):
    _, pics, corpus, _ = setup
    ids, docs, items = read_visual_corpus(pics, corpus)
    assert ids == ["p0.png", "p1.png", "p2.png", "sub/p3.png", "t1", "m1"]
    assert items[4] == {"text": "red cell"} and items[5]["text"] == "blue" and items[5]["image"].endswith("p1.png")


def test_build_and_search_with_images(setup):
    model, pics, corpus, tmp = setup
    searcher = build_visual_index(model, tmp / "api-idx", images=pics, corpus=corpus)
    again = HybridSearcher.load(tmp / "api-idx")
    assert isinstance(again.embedder, VisualEmbedder) and len(again) == 6
    res = search_visual(again, image=str(pics / "p2.png"), top_k=2)
    assert res.ids[0][0] == "p2.png" and res.scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert res.docs[0][0]["metadata"]["image"].endswith("p2.png")
    both = search_visual(again, image=str(pics / "p1.png"), text="blue", top_k=1)
    assert both.ids[0] == ["m1"]  # the same image+text document
    text = search_visual(searcher, text="red cell", top_k=1)
    assert text.ids[0] == ["t1"]


def test_cli_images_and_image_query(setup):
    model, pics, _, tmp = setup
    out = tmp / "cli-idx"
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "--model", str(model), "--images", str(pics), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "indexed 4 documents" in res.output
    res = runner.invoke(app, ["search", str(out), "--image", str(pics / "p0.png"), "--top-k", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["id"] == "p0.png"
    res = runner.invoke(app, ["search", str(out), "--image", str(tmp / "missing.png")])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_corrupt_image_in_folder_is_named(setup, tmp_path):
    model, pics, _, _ = setup
    bad = tmp_path / "pics"
    bad.mkdir()
    tiny_visual.draw(1).save(bad / "a.png")
    (bad / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageBatchError, match=r"image input 1: .*b\.jpg"):
        build_visual_index(model, tmp_path / "idx", images=bad)
    assert not (tmp_path / "idx").exists()
    assert np.isfinite(VisualEmbedder(model).encode_images([str(bad / "a.png")])).all()
