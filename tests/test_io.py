"""flagembed._io: modes, links, special files, stdout, output pre-checks, kill-safe folder swaps, readers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from flagembed import _io
from flagembed._io import (
    OutputPathError,
    atomic_write,
    check_output_dir,
    check_output_file,
    read_jsonl,
    read_texts,
    recover_dir,
    save_json,
    save_npy,
    staged_dir,
)


@pytest.fixture
def umask():
    """Set a umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_and_folders_get_the_umask_modes(tmp_path, umask, mask):
    umask(mask)
    save_npy(tmp_path / "v.npy", np.zeros(3))
    save_json(tmp_path / "r.json", {"a": 1})
    with staged_dir(tmp_path / "idx") as d:
        (d / "x").write_text("x")
    assert _mode(tmp_path / "v.npy") == 0o666 & ~mask
    assert _mode(tmp_path / "r.json") == 0o666 & ~mask
    assert _mode(tmp_path / "idx") == 0o777 & ~mask


def test_an_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "v.npy"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    save_npy(target, np.ones(2))
    assert _mode(target) == 0o640
    assert np.load(target).tolist() == [1.0, 1.0]


def test_writes_go_through_a_symlink_and_keep_it(tmp_path):
    real = tmp_path / "data" / "vectors.npy"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "latest.npy"
    link.symlink_to(real)
    save_npy(link, np.arange(3))
    assert link.is_symlink()
    assert np.load(real).tolist() == [0, 1, 2]


def test_special_files_are_written_not_replaced(tmp_path):
    save_npy("/dev/null", np.arange(3))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdout.write(open({str(fifo)!r}).read())"],
                              stdout=subprocess.PIPE, text=True)
    save_json(fifo, {"k": 1})
    assert '"k": 1' in reader.communicate(timeout=30)[0]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_dash_means_stdout(capfdbinary):
    save_npy("-", np.arange(4, dtype=np.int32))
    out = capfdbinary.readouterr().out
    assert out.startswith(b"\x93NUMPY")


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_check_output_file(tmp_path):
    check_output_file(tmp_path / "new" / "deeper" / "v.npy")  # missing folders are fine
    check_output_file("-")
    check_output_file("/dev/null")
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is not a directory"):
        check_output_file(tmp_path / "file" / "v.npy")
    with pytest.raises(OutputPathError, match=r"^cannot write /proc/flagembed\.npy: "):  # unwritable even as root
        check_output_file("/proc/flagembed.npy")


def test_check_output_dir(tmp_path):
    check_output_dir(tmp_path / "new")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="it is a file"):
        check_output_dir(tmp_path / "f", what="--out")
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("a")
    check_output_dir(full)  # overwrite allowed by default
    with pytest.raises(OutputPathError, match="not empty"):
        check_output_dir(full, overwrite=False)
    with pytest.raises(OutputPathError, match="cannot write /proc/x"):
        check_output_dir("/proc/x")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(parent, name: str, kind: str, pid: int, content: str, host: str = _io._HOST):
    d = parent / f".{name}.flagembed-{kind}-{host}-{pid}-0123abcd"
    d.mkdir()
    (d / "payload").write_text(content)
    return d


def test_recover_finishes_a_swap_killed_before_the_new_copy_moved_in(tmp_path):
    pid = _dead_pid()
    _leftover(tmp_path, "idx", "old", pid, "old")
    _leftover(tmp_path, "idx", "new", pid, "new")
    recover_dir(tmp_path / "idx")
    assert (tmp_path / "idx" / "payload").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_recover_rolls_back_when_only_the_old_copy_is_left(tmp_path):
    pid = _dead_pid()
    _leftover(tmp_path, "idx", "old", pid, "old")
    _leftover(tmp_path, "idx", "tmp", pid, "half written")
    recover_dir(tmp_path / "idx")
    assert (tmp_path / "idx" / "payload").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_recover_sweeps_dead_leftovers_but_not_live_ones(tmp_path):
    (tmp_path / "idx").mkdir()
    dead = _leftover(tmp_path, "idx", "tmp", _dead_pid(), "x")
    live = _leftover(tmp_path, "idx", "tmp", os.getppid(), "x")
    other = _leftover(tmp_path, "other", "tmp", _dead_pid(), "x")  # another target's: not ours to touch
    remote = _leftover(tmp_path, "idx", "tmp", _dead_pid(), "x", host="otherhost")  # a shared disk's other host
    recover_dir(tmp_path / "idx")
    assert not dead.exists() and live.exists() and other.exists() and remote.exists()


def test_staged_dir_replaces_whole_and_keeps_the_old_on_failure(tmp_path):
    target = tmp_path / "out"
    with staged_dir(target) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError), staged_dir(target) as d:
        (d / "a").write_text("2")
        raise RuntimeError("boom")
    assert (target / "a").read_text() == "1"
    with staged_dir(target) as d:
        (d / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_refuses_a_file_target(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(OutputPathError, match="it is a file"), staged_dir(tmp_path / "out") as d:
        (d / "a").write_text("1")
    assert (tmp_path / "out").read_text() == "mine"


def test_kill_during_a_swap_is_recovered_by_the_next_run(tmp_path):
    """A real SIGKILL between the two renames: the next staged_dir finishes the job."""
    target = tmp_path / "out"
    with staged_dir(target) as d:
        (d / "v").write_text("old")
    code = f"""
import os, signal
from pathlib import Path
import flagembed._io as io
real = os.replace
def replace(a, b):
    real(a, b)
    if ".flagembed-old-" in str(b):
        os.kill(os.getpid(), signal.SIGKILL)
io.os.replace = replace
with io.staged_dir(Path({str(target)!r})) as d:
    (d / "v").write_text("new")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    assert not target.exists()  # the kill came between the two renames
    recover_dir(target)
    assert (target / "v").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_non_utf8_input_names_the_file_and_line(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"t\.txt:3: not valid UTF-8"):
        read_texts(p)
    j = tmp_path / "c.jsonl"
    j.write_bytes(b'{"text": "a"}\n{"text": "\xe9"}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not valid UTF-8"):
        list(read_jsonl(j))


def test_read_texts_blank_lines_and_bom(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffone\r\n\ntwo\n".encode())
    assert read_texts(p) == ["one", "two"]
    assert read_texts(p, keep_blank=True) == ["one", "", "two"]
    with pytest.raises(ValueError, match="is a directory"):
        read_texts(tmp_path)


def test_a_killed_file_write_is_swept_by_the_next_write(tmp_path):
    stale = tmp_path / f".v.npy.flagembed-tmp-{_io._HOST}-{_dead_pid()}-x1_y2"
    stale.write_bytes(b"half")
    save_npy(tmp_path / "v.npy", np.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]
