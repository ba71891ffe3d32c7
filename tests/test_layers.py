"""Imports point downward only: models → engine → inference → jobs → cli/serve (STYLE.md §1)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "flagembed"
RANK = {
    "_compat": 0,
    "_io": 0,
    "models": 1,
    "engine": 2,
    "inference": 3,
    "index": 4,
    "evaluate": 5,
    "train": 5,
    "merge": 5,
    "longctx": 5,
    "distributed": 5,
    "demo": 6,
    "cli": 7,
    "serve": 7,
    "integrations": 7,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "flagembed" else None


def test_imports_point_down():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        own = rel.parts[1] if len(rel.parts) > 1 else None
        if own in (None, "__init__", "__main__"):
            continue
        own = own.removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                target = _layer(name)
                if target is None or target == own:
                    continue
                if target not in RANK or own not in RANK:
                    bad.append(f"{rel}: unknown layer {own!r} or {target!r}")
                elif RANK[target] > RANK[own]:
                    bad.append(f"{rel} imports {name} (a higher layer)")
    assert not bad, "\n".join(bad)


def test_no_pooling_outside_models():
    """CLS / mean / last-token pooling of hidden states is written only in flagembed/models."""
    import re

    pattern = re.compile(r"(hidden\w*|last_hidden_state|states?)\s*\[\s*:\s*,\s*(0|-1)\s*\]")
    offenders = [
        str(p) for p in PKG.rglob("*.py") if "models" not in p.parts and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders
