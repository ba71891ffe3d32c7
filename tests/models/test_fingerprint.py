"""weights_fingerprint: equal for copies (whatever their mtimes), different for other weights."""

from __future__ import annotations

import os
import shutil

import pytest

from flagembed.models import weights_fingerprint


def test_a_copy_matches_and_a_touched_file_still_matches(tiny_bert, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy, copy_function=shutil.copyfile)  # new mtimes
    for p in copy.iterdir():
        os.utime(p, (1, 1))
    assert weights_fingerprint(copy) == weights_fingerprint(tiny_bert)


def test_other_weights_differ(tiny_bert, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert weights_fingerprint(copy) != weights_fingerprint(tiny_bert)


def test_large_files_are_sampled(tmp_path):
    big = tmp_path / "m"
    big.mkdir()
    (big / "model.safetensors").write_bytes(os.urandom(9 << 20))
    first = weights_fingerprint(big)
    with open(big / "model.safetensors", "r+b") as f:
        f.seek(len(b"") + (9 << 20) // 15)  # inside the first sampled block
        f.write(b"\x00" * 16)
    assert weights_fingerprint(big) != first


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weight files"):
        weights_fingerprint(tmp_path)
