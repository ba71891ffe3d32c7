"""Training data: file/folder loading, clear errors, deterministic group sampling, same-dataset batches, collation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagembed.train import DataArguments
from flagembed.train.data import EmbedderCollator, EmbedderTrainDataset, load_train_files, shuffle_chunks


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n: int, tag: str = "", negs: int = 5, kd: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "query": f"{tag}q{i}",
            "pos": [f"{tag}p{i}a", f"{tag}p{i}b"],
            "neg": [f"{tag}n{i}_{k}" for k in range(negs)],
        }
        if kd:
            row["pos_scores"] = [10.0 + i, 20.0 + i]
            row["neg_scores"] = [float(k) for k in range(negs)]
        rows.append(row)
    return rows


def test_files_and_folders_load_with_no_in_batch_neg_flag(tmp_path: Path):
    _write(tmp_path / "d" / "a.jsonl", _rows(3, "a"))
    _write(tmp_path / "d" / "sub" / "b_no_in_batch_neg.json", _rows(2, "b"))
    single = _write(tmp_path / "c.jsonl", _rows(4, "c"))
    files = load_train_files([str(tmp_path / "d"), str(single)], DataArguments(train_group_size=3))
    assert [len(f.examples) for f in files] == [3, 2, 4]
    assert [f.no_in_batch_neg for f in files] == [False, True, False]
    limited = load_train_files([str(single)], DataArguments(max_example_num_per_dataset=2))
    assert len(limited[0].examples) == 2


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"query": 1, "pos": ["x"], "neg": ["y"]}', "'query' must be a string"),
        ('{"query": "q", "pos": [], "neg": ["y"]}', "non-empty list"),
        ('{"query": "q", "pos": ["x", 3], "neg": ["y"]}', r"pos\[1\] must be a string"),
        ('{"query": "q", "pos": ["x"]}', "'neg' is empty"),
        ("not json", "invalid JSON"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, match: str):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_rows(1)[0])
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match) as err:
        load_train_files([str(path)], DataArguments(train_group_size=2))
    assert f"{path}:3" in str(err.value)


def test_knowledge_distillation_needs_aligned_scores(tmp_path: Path):
    row = _rows(1, kd=True)[0]
    row["neg_scores"] = row["neg_scores"][:-1]
    path = _write(tmp_path / "kd.jsonl", [row])
    with pytest.raises(ValueError, match=r"kd.jsonl:1: .*neg_scores"):
        load_train_files([str(path)], DataArguments(knowledge_distillation=True))
    with pytest.raises(FileNotFoundError):
        load_train_files([str(tmp_path / "missing.jsonl")], DataArguments())


def test_group_sampling_is_deterministic_and_aligns_teacher_scores(tmp_path: Path):
    path = _write(tmp_path / "kd.jsonl", _rows(6, kd=True, negs=5))
    args = DataArguments(train_group_size=4, knowledge_distillation=True)
    ds = EmbedderTrainDataset(load_train_files([str(path)], args), args, seed=7)
    first = [ds[i] for i in range(len(ds))]
    assert first == [ds[i] for i in range(len(ds))]  # same epoch, same draw (resume-safe)
    for i, item in enumerate(first):
        pos, *negs = item["passages"]
        assert pos in (f"p{i}a", f"p{i}b") and len(negs) == 3 and len(set(negs)) == 3
        assert all(n.startswith(f"n{i}_") for n in negs)
        want = [10.0 + i if pos.endswith("a") else 20.0 + i] + [float(n.split("_")[1]) for n in negs]
        assert item["teacher_scores"] == want
    ds.set_epoch(1)
    assert [ds[i] for i in range(len(ds))] != first  # new negatives each epoch
    ds.set_epoch(0)
    assert [ds[i] for i in range(len(ds))] == first


def test_too_few_negatives_are_tiled(tmp_path: Path):
    path = _write(tmp_path / "a.jsonl", _rows(2, negs=2))
    args = DataArguments(train_group_size=6)
    item = EmbedderTrainDataset(load_train_files([str(path)], args), args)[0]
    negs = item["passages"][1:]
    assert len(negs) == 5 and set(negs) == {"n0_0", "n0_1"}


def test_instructions_prompt_and_symmetric_types(tmp_path: Path):
    rows = [
        {"query": "q", "pos": ["p"], "neg": ["n"], "prompt": "Custom: "},
        {"query": "q", "pos": ["p"], "neg": ["n"], "type": "symmetric_sts"},
        {"query": "q", "pos": ["p"], "neg": ["n"]},
    ]
    path = _write(tmp_path / "a.jsonl", rows)
    args = DataArguments(
        train_group_size=2,
        query_instruction_for_retrieval="Q: ",
        query_instruction_format="{}{}",
        passage_instruction_for_retrieval="P: ",
        passage_instruction_format="<{}>{}",
    )
    ds = EmbedderTrainDataset(load_train_files([str(path)], args), args)
    assert ds[0]["query"] == "Custom: q" and ds[0]["passages"] == ["<P: >p", "<P: >n"]
    assert ds[1]["query"] == "Q: q" and ds[1]["passages"] == ["Q: p", "Q: n"]
    assert ds[2]["query"] == "Q: q"
    plain = DataArguments(train_group_size=2)
    assert EmbedderTrainDataset(load_train_files([str(path)], plain), plain)[2]["query"] == "q"  # no "None" prefix


def test_shuffle_chunks_keeps_the_characters():
    import numpy as np

    text = "abcdefghij" * 15
    out = shuffle_chunks(text, np.random.default_rng(0))
    assert sorted(out.replace(" ", "")) == sorted(text)


def test_same_dataset_batches_come_from_one_file_and_interleave_processes(tmp_path: Path):
    _write(tmp_path / "a.jsonl", _rows(9, "a"))
    _write(tmp_path / "b.jsonl", _rows(13, "b"))
    args = DataArguments(train_group_size=2, same_dataset_within_batch=True)
    files = load_train_files([str(tmp_path)], args)
    ds = EmbedderTrainDataset(files, args, batch_size=2, world_size=2, seed=1)
    assert len(ds) == (9 // 4 + 13 // 4) * 2  # partial global batches dropped
    seen = []
    for k in range(0, len(ds), 2):
        local = ds[k] + ds[k + 1]  # the two processes' slices of one global batch
        tags = {x["query"][0] for x in local}
        assert len(local) == 4 and len(tags) == 1
        seen += [x["query"] for x in local]
    assert len(seen) == len(set(seen))


def test_small_files_are_merged_or_dropped(tmp_path: Path):
    from flagembed.train.data import merge_small_files

    for name, n in (("big", 10), ("s1", 2), ("s2", 3)):
        _write(tmp_path / f"{name}.jsonl", _rows(n, name))
    files = load_train_files([str(tmp_path)], DataArguments(train_group_size=2))
    merged = merge_small_files(files, small_threshold=5, drop_threshold=0)
    assert sorted(len(f.examples) for f in merged) == [5, 10]
    assert [len(f.examples) for f in merge_small_files(files, small_threshold=5, drop_threshold=6)] == [10]
    assert merge_small_files(files, 0, 0) == files


def test_collator_pads_queries_and_passages(tiny_bert: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    collate = EmbedderCollator(tok, query_max_len=4, passage_max_len=6)
    items = [
        {
            "query": "what is a cell",
            "passages": ["cell text", "gene protein data study"],
            "teacher_scores": [1.0, 0.0],
            "no_in_batch_neg": False,
        },
        {"query": "gene", "passages": ["blood", "brain virus"], "teacher_scores": [0.5, 0.2], "no_in_batch_neg": True},
    ]
    batch = collate(items)
    assert batch["queries"]["input_ids"].shape == (2, 4)  # truncated to query_max_len
    assert batch["passages"]["input_ids"].shape[0] == 4 and batch["passages"]["input_ids"].shape[1] <= 6
    want = tok(["gene"], truncation=True, max_length=4)["input_ids"][0]
    assert batch["queries"]["input_ids"][1, : len(want)].tolist() == want
    assert batch["queries"]["attention_mask"][1].sum() == len(want)
    assert batch["teacher_scores"].flatten().tolist() == pytest.approx([1.0, 0.0, 0.5, 0.2])
    assert batch["no_in_batch_neg"].tolist() == [False, True]
    items[1]["passages"] = ["only one"]
    with pytest.raises(ValueError, match="same size"):
        collate(items)
