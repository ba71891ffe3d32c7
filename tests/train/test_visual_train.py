"""Visualized-BGE training: data checks, the InfoNCE loss by hand, frozen text tower, saved folder reloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_visual
import torch

from flagembed.inference.visual import VisualEmbedder
from flagembed.train.config import EmbedderTrainingArguments
from flagembed.train.visual import VisualArguments, build_visual_trainer, finetune_visual, parse_visual_args
from flagembed.train.visual_data import load_visual_rows


@pytest.fixture(scope="module")
def data(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vtrain")
    model = tiny_visual.build_visual(tiny_bert, tmp / "model", seed=4)
    for i in range(4):
        tiny_visual.draw(60 + i).save(tmp / f"i{i}.png")
    words = ["red", "blue", "green", "dark"]
    t2it = [
        {"query": f"{w} cell", "pos": {"image": f"i{i}.png", "text": w}, "neg": [{"image": f"i{(i + 1) % 4}.png"}]}
        for i, w in enumerate(words)
    ]
    edit = [{"query": {"image": f"i{i}.png", "text": "make it red"}, "pos": f"i{(i + 1) % 4}.png",
             "neg": [f"i{(i + 2) % 4}.png"]} for i in range(4)]  # fmt: skip
    (tmp / "t2it.jsonl").write_text("\n".join(json.dumps(r) for r in t2it) + "\n")
    (tmp / "edit.jsonl").write_text("\n".join(json.dumps(r) for r in edit) + "\n")
    return model, tmp


def _targs(tmp, **kw):
    base = dict(output_dir=str(tmp), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, report_to=[],
                logging_steps=1, save_strategy="no", use_cpu=True, loss_plot=False)  # fmt: skip
    return EmbedderTrainingArguments(**{**base, **kw})


def test_rows_are_checked_against_the_task(data, tmp_path):
    _, tmp = data
    rows = load_visual_rows([tmp / "edit.jsonl"], "edit_image")
    assert rows[0]["query"]["image"].endswith("i0.png")
    assert rows[0]["pos"][0] == {"image": str(tmp / "i1.png"), "text": ""}
    with pytest.raises(ValueError, match=r"t2it.jsonl:1: edit_image needs an image\+text query"):
        load_visual_rows([tmp / "t2it.jsonl"], "edit_image")
    with pytest.raises(ValueError, match="unknown task_type"):
        load_visual_rows([tmp / "t2it.jsonl"], "i2t")  # type: ignore[arg-type]


def test_loss_is_infonce_by_hand_and_text_tower_is_frozen(data, tmp_path):
    model, tmp = data
    args = VisualArguments(model_name_or_path=str(model), train_data=[str(tmp / "t2it.jsonl")])
    trainer = build_visual_trainer(args, _targs(tmp_path / "o"))
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    m = trainer.model
    loss = trainer.compute_loss(m, batch)
    qs = [trainer.train_dataset[i]["query"]["text"] for i in (0, 1)]
    cands = [c for i in (0, 1) for c in trainer.train_dataset[i]["candidates"]]
    emb = VisualEmbedder(model)
    q = torch.from_numpy(emb.encode(qs))
    c = torch.from_numpy(emb.encode_images([x["image"] for x in cands], [x["text"] for x in cands]))
    m.eval()
    with torch.no_grad():
        scores = q @ c.T / 0.02
    expected = torch.nn.functional.cross_entropy(scores, torch.tensor([0, 2]))  # positives first in each group
    assert float(trainer.compute_loss(m, batch)) == pytest.approx(float(expected), rel=1e-4)
    assert loss.requires_grad
    assert not any(p.requires_grad for p in m.text.parameters())
    assert all(p.requires_grad for p in m.visual.parameters()) and m.visual_proj.weight.requires_grad


@pytest.mark.slow
def test_finetune_saves_a_loadable_folder(data, tmp_path):
    """edit_image through the API (t2it goes through the CLI test below)."""
    model, tmp = data
    task = "edit_image"
    file = tmp / ("t2it.jsonl" if task == "t2it" else "edit.jsonl")
    out = tmp_path / "out"
    args, targs = parse_visual_args([
        "--model_name_or_path", str(model), "--train_data", str(file), "--task_type", task, "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--report_to", "none",
        "--save_strategy", "no", "--use_cpu", "True", "--loss_plot", "False", "--patch_dropout", "0.5",
    ])  # fmt: skip
    result = finetune_visual(args, targs)
    assert result.global_step == 2 and np.isfinite(result.train_loss)
    before, after = VisualEmbedder(model), VisualEmbedder(out)
    np.testing.assert_array_equal(after.encode(["red cell"]), before.encode(["red cell"]))  # text tower frozen
    img = [str(tmp / "i0.png")]
    assert np.abs(after.encode_images(img) - before.encode_images(img)).max() > 1e-5  # vision side trained


@pytest.mark.slow
def test_cli_finetune_visual(data, tmp_path):
    from typer.testing import CliRunner

    from flagembed.cli import app

    model, tmp = data
    out = tmp_path / "cli-out"
    res = CliRunner().invoke(app, [
        "finetune", "visual", "--model", str(model), "--train-data", str(tmp / "t2it.jsonl"), "--output", str(out),
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--save_strategy", "no",
        "--use_cpu", "True", "--loss_plot", "False",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "trained 1 steps" in res.output and (out / "visual.safetensors").is_file()
    bad = CliRunner().invoke(app, ["finetune", "visual", "--model", str(model), "--train-data", str(tmp / "t2it.jsonl"),
                                   "--output", str(tmp_path / "x"), "--task-type", "edit_image"])  # fmt: skip
    assert bad.exit_code != 0 and "edit_image needs" in bad.output
