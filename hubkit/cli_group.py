"""The machinery under every hubkit verb: any exception becomes one line and an exit code, Ctrl-C says what was
kept, `--quiet` silences progress bars and notes; `hubkit.cli` holds the verbs themselves.

Exit codes: 0 done, 1 an error (one line on stderr; `--debug` / HUBKIT_DEBUG=1 raises it instead), 2 a usage
error (click's), 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys

import click

KEPT = "hubkit.kept"  # ctx.meta key: what survives an interruption of the running verb, said on Ctrl-C


def one_line(e: BaseException) -> str:
    """An exception as one line: its message's first line; the type too when it is not one of ours to expect."""
    text = " ".join(str(e).strip().split("\n")[0].split()) or type(e).__name__
    expected = (ValueError, OSError, ImportError, LookupError)
    return text if isinstance(e, expected) or type(e).__module__.startswith("hubkit") else (
        f"{type(e).__name__}: {text} (--debug or HUBKIT_DEBUG=1 shows the traceback)")


class Group(click.Group):
    """The hubkit group: turns any exception of a verb into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # click's own: usage errors exit 2 with their message
        except KeyboardInterrupt:
            kept = ctx.meta.get(KEPT)
            click.echo(f"interrupted{': ' + kept if kept else ''}", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 - the edge of the program: one line, not a traceback
            if ctx.meta.get("hubkit.debug"):
                raise
            click.echo(f"Error: {one_line(e)}", err=True)
            ctx.exit(1)


def progress() -> bool:
    """Progress bars wanted (not --quiet)."""
    return not click.get_current_context().find_root().params.get("quiet")


def kept(what: str) -> None:
    """Record what an interruption of the running verb leaves behind (said on Ctrl-C)."""
    click.get_current_context().meta[KEPT] = what


def relaunch_here(verb: str, num_gpus: int) -> None:
    """With `num_gpus` > 1 and not yet under a launcher: run this very command again under torchrun, one process per
    GPU, and exit with its code. Otherwise return, and the verb runs here (a single process, or one rank)."""
    if num_gpus <= 1 or "WORLD_SIZE" in os.environ:
        return
    from hubkit.distributed import relaunch

    raise SystemExit(relaunch(num_gpus, sys.argv[sys.argv.index(verb) + 1:], verb=verb))


def quiet(on: bool) -> None:
    """Progress bars and INFO notes on (default) or off, for every library hubkit drives."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("hubkit")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if on else logging.INFO)
    root.propagate = False
    if on:
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ[var] = "1"
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
