"""The ``flagembed`` command line: thin commands that parse, call one public function, print."""

from __future__ import annotations

import errno
import logging
import signal
import sys
from typing import Any

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


def _version(value: bool) -> None:
    if value:
        from flagembed import __version__

        typer.echo(f"flagembed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Embed, search, rerank and evaluate with BGE-style models."""


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
from flagembed.cli import longctx as _longctx  # noqa: E402

app.add_typer(_longctx.longctx_app, name="longctx")
from flagembed.cli import beacon as _beacon  # noqa: E402

app.add_typer(_beacon.beacon_app, name="beacon")
from flagembed.cli import pretrain as _pretrain  # noqa: E402

app.add_typer(_pretrain.pretrain_app, name="pretrain")


class Interrupted(BaseException):
    """Ctrl-C, raised past typer (which would turn ``KeyboardInterrupt`` into a silent exit 130)."""


def _on_sigint(signum: int, frame: Any) -> None:
    raise Interrupted()


def main() -> None:
    """Console entry point: user errors (bad paths, Ctrl-C) end in one line, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars are noise on the command line
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        app()
    except Interrupted:
        typer.echo("interrupted: stopped before writing any output (files are written whole or not at all)", err=True)
        sys.exit(130)
    except OSError as exc:
        typer.echo(f"error: {describe_os_error(exc)}", err=True)
        sys.exit(2)


def describe_os_error(exc: OSError) -> str:
    """``cannot write X: permission denied`` style text for an OS error."""
    reason = (exc.strerror or str(exc)).lower()
    if exc.filename is None:
        return reason
    verb = "write" if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EISDIR, errno.EEXIST) else "use"
    return f"cannot {verb} {exc.filename}: {reason}"


__all__ = ["app", "main"]
