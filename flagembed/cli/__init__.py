"""The ``flagembed`` command line: thin commands that parse, call one public function, print."""

from __future__ import annotations

import logging

import typer

from flagembed.cli import embed as _embed
from flagembed.cli import index as _index
from flagembed.cli import models as _models

app = typer.Typer(
    name="flagembed",
    help="Embed, search, rerank and evaluate with BGE-style models.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("embed")(_embed.embed)
app.command("demo")(_embed.demo)
app.command("models")(_models.models)
from flagembed.cli import rerank as _rerank  # noqa: E402

app.command("rerank")(_rerank.rerank)
app.add_typer(_index.index_app, name="index")
app.command("search")(_index.search)
from flagembed.cli import serve as _serve  # noqa: E402

app.command("serve")(_serve.serve)
from flagembed.cli import train as _train  # noqa: E402

app.add_typer(_train.finetune_app, name="finetune")
app.command("mine")(_train.mine)
app.command("score")(_train.score)
from flagembed.cli import merge as _merge  # noqa: E402

app.command("merge", cls=_merge.VariadicCommand)(_merge.merge)
from flagembed.cli import eval as _eval  # noqa: E402

app.add_typer(_eval.eval_app, name="eval")
from flagembed.cli import export as _export  # noqa: E402

app.command("export")(_export.export)


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars are noise on the command line
    app()


__all__ = ["app", "main"]
