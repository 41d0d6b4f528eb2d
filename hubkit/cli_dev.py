"""The CLI's development verbs: the stand-ins only the demo, the tests and offline work need (`hubkit.devkit`): a
synthetic cohort, random base models, a loopback Hub. `hubkit.cli` adds them to its group; the only product module
that reaches into `devkit/`, and only when one of these verbs runs.
"""

from __future__ import annotations

import click

from hubkit.cli_group import kept as _kept, progress as _progress  # noqa: I001


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--studies", default=40, show_default=True, help="Number of synthetic studies.")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--num-proc", default=1, show_default=True, help="Worker processes (same files as one).")
@click.option("--pose", type=click.Choice(["tight", "realistic"]), default="tight", show_default=True,
              help="tight: every spine at about the same place; realistic: moved, spaced and curved as patients are, "
                   "varied fields of view, axial blocks or stacks that start and end anywhere.")
def synth(out: str, studies: int, seed: int, num_proc: int, pose: str) -> None:
    """Write a synthetic RSNA-layout DICOM cohort whose labels are visible in the pixels.

    \b
    Example:
      hubkit synth /tmp/cohort --studies 40 --seed 0 --num-proc 2
      hubkit synth /tmp/cohort-real --studies 300 --pose realistic
    """
    from hubkit.devkit.synth import synth_cohort

    _kept(f"the studies written so far stay in {out} (a new run rewrites them)")
    path = synth_cohort(out, studies, seed, num_proc=num_proc, progress=_progress(), pose=pose)
    click.echo(f"wrote {studies} synthetic studies to {path}")


@click.group()
def base() -> None:
    """Write a base model that loads offline: a tiny random Gemma 3 VLM or MedGemma 1.5 4B's architecture."""


@base.command("tiny")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Random seed of the weights.")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME", help="Also push it to this (private) repo.")
def base_tiny(out: str, seed: int, push_repo: str | None) -> None:
    """A tiny random Gemma 3 vision-language model + Gemma-style processor (CPU tests and the demo).

    \b
    Example:
      hubkit base tiny runs/tiny-base --push me/tiny-gemma3-base
    """
    from hubkit.devkit.base_models import write_tiny_base

    path = write_tiny_base(out, seed=seed)
    click.echo(f"wrote {path}")
    _push_folder(path, push_repo, "Tiny random Gemma 3 base (hubkit base tiny)")


@base.command("medgemma-arch")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="Where the random weights are made (about 8 GB either way).")
@click.option("--dtype", default="bfloat16", show_default=True, help="The weights' dtype, as torch names it.")
def base_medgemma_arch(out: str, device: str, dtype: str) -> None:
    """Random weights with MedGemma 1.5 4B's exact configuration (GPU speed and memory work; ~8 GB).

    \b
    Example:
      hubkit base medgemma-arch /tmp/medgemma-arch --device cuda
    """
    from hubkit.devkit.base_models import write_medgemma_arch_base

    click.echo(f"wrote {write_medgemma_arch_base(out, dtype=dtype, device=device)}")


def _push_folder(path, repo: str | None, message: str) -> None:
    if repo:
        from hubkit.hub import upload_folder

        upload_folder(path, repo, repo_type="model", commit_message=message)
        click.echo(f"pushed to {repo} (private)")


@click.group()
def hub() -> None:
    """A loopback Hub-compatible server for offline work (a local stand-in, not a production hub)."""


@hub.command("serve")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder holding repos and tokens.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8765, show_default=True, help="Port to listen on.")
@click.option("--token", "tokens", multiple=True, metavar="TOKEN=USER", help="Add a user token (repeatable).")
def hub_serve(root: str, host: str, port: int, tokens: tuple[str, ...]) -> None:
    """Serve a Hub-compatible API on HOST:PORT until interrupted.

    \b
    Example:
      hubkit hub serve --root /tmp/hub --port 8765 --token hf_me=me
      HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=hf_me HF_HUB_DISABLE_XET=1 hubkit build-dataset ... --push me/ds
    """
    from hubkit.devkit.local_hub import serve

    mapping = {}
    for t in tokens:
        if "=" not in t:
            raise click.BadParameter(f"{t!r}: expected TOKEN=USER", param_hint="--token")
        tok, user = t.split("=", 1)
        mapping[tok] = user
    serve(root, host=host, port=port, tokens=mapping or None)


VERBS = (synth, base, hub)
