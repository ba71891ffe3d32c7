"""End-to-end helpers: the ``flagembed`` console script run in fresh processes, as users type it.

Every command runs in a new process (the console script next to ``sys.executable``) with ``HF_HUB_OFFLINE=1``,
the caller's ``PYTHONPATH`` (this tree first) and a private ``FLAGEMBED_CACHE``. The bundled model is used two
ways (the ``ws`` fixture is parametrized): by its NAME ``all-MiniLM-L6-v2``, and as a RELATIVE folder
``models/x`` with the working directory set to the workspace. Small real slices of ``../shared/data`` are
written into the workspace; the tests skip cleanly when the data or the bundled model is absent.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FLAGEMBED = Path(sys.executable).with_name("flagembed")
MODEL_NAME = "all-MiniLM-L6-v2"
N_QUERIES = 12  # scifact-train queries in the slice; their relevant docs plus fillers make N_DOCS
N_DOCS = 40
N_PAIRS = 50  # stsbenchmark train pairs


def cli_env(cache: Path) -> dict[str, str]:
    """The environment every subprocess gets: offline, this tree importable, a private export cache."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["FLAGEMBED_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.pop("FLAGEMBED_API_KEY", None)
    return env


@dataclass
class Workspace:
    """A working directory and the ``-m`` value that names the bundled model from there."""

    cwd: Path
    model: str  # "all-MiniLM-L6-v2" or "models/x"
    kind: str  # "name" or "path"
    model_dir: Path  # the folder the model's files live in (for Python-side references)
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300, check: bool = True, cwd: Path | None = None) -> Result:
        """Run ``flagembed *args`` in a fresh process; with ``check``, fail the test on a non-zero exit."""
        return run_process([str(FLAGEMBED), *args], cwd or self.cwd, self.env, timeout, check)

    def python(self, code: str, timeout: float = 300, check: bool = True) -> Result:
        """Run a Python snippet in a fresh process from the workspace."""
        return run_process([sys.executable, "-c", code], self.cwd, self.env, timeout, check)


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_process(args: list[str], cwd: Path, env: dict[str, str], timeout: float, check: bool) -> Result:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    res = Result(args, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args[:3])} ... exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-5000:]}",
            pytrace=False,
        )
    return res


def assert_clean_error(res: Result, *needles: str) -> str:
    """A user error: non-zero exit, no traceback, and a one-line message naming each of ``needles``."""
    assert res.returncode != 0, f"expected a failure, got exit 0:\n{res.stdout[-2000:]}"
    both = res.stdout + res.stderr
    assert "Traceback" not in both, f"a user error printed a traceback:\n{both[-4000:]}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines, f"no error message on stderr (stdout: {res.stdout[-1000:]!r})"
    message = next((ln for ln in lines if ln.lower().startswith("error")), lines[-1])
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in the error line {message!r}"
    return message


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def assert_user_modes(path: Path) -> None:
    """Outputs get the modes the user's umask gives (not the 0600/0700 of temporary files)."""
    mask = current_umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        got = p.stat().st_mode & 0o777
        assert got == want, f"{p} has mode {oct(got)}, expected {oct(want)} (umask {oct(mask)})"


def name_only(ws: Workspace) -> None:
    """Skip a check for the relative-folder spelling when the model's spelling cannot change it (saves time)."""
    if ws.kind != "name":
        pytest.skip("checked with the model name only: the model spelling does not change this step")


def find_json(root: Path, pattern: str = "*.json") -> list[Path]:
    """Result files under ``root`` (ignoring the embedding cache and search dumps)."""
    return sorted(
        p
        for p in root.rglob(pattern)
        if not p.name.endswith(".search.json") and not any("cache" in part for part in p.parts)
    )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def write_slices(data_dir: Path, dest: Path) -> None:
    """A BEIR folder (N_QUERIES train queries, N_DOCS docs incl. their positives) and N_PAIRS STS pairs."""
    src = data_dir / "scifact-train"
    qrels: dict[str, dict[str, int]] = {}
    with open(src / "qrels" / "train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    qids = list(qrels)[:N_QUERIES]
    wanted = {d for q in qids for d in qrels[q]}
    docs, fillers = [], []
    with open(src / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["_id"] in wanted:
                docs.append(d)
            elif len(fillers) < N_DOCS:
                fillers.append(d)
    docs = (docs + fillers)[:N_DOCS]
    for d in docs:  # keep the texts short: faster encoding, and well under every max length
        d["text"] = " ".join(d["text"].split()[:60])
    queries = {}
    with open(src / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in qids:
                queries[q["_id"]] = q
    beir = dest / "scifact"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (beir / "queries.jsonl").write_text("".join(json.dumps(queries[q]) + "\n" for q in qids), encoding="utf-8")
    with open(beir / "qrels" / "train.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, s in qrels[q].items():
                f.write(f"{q}\t{d}\t{s}\n")
    with open(data_dir / "stsbenchmark" / "train.tsv", encoding="utf-8") as f:
        lines = f.read().splitlines()
    (dest / "sts.tsv").write_text("\n".join(lines[: N_PAIRS + 1]) + "\n", encoding="utf-8")


def read_corpus(cwd: Path) -> list[dict]:
    with open(cwd / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_queries(cwd: Path) -> list[dict]:
    with open(cwd / "scifact" / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
