"""hubkit command line: thin adapters, one library call per verb; heavy imports happen inside each command.

Every failure is one line on stderr and exit 1 (2 for usage errors); `--debug` or HUBKIT_DEBUG=1 shows the
traceback instead. Ctrl-C exits 130 and says what was kept. `--quiet` silences progress bars and notes. That
machinery lives in `hubkit.cli_group`; this module holds the verbs.
"""

from __future__ import annotations

import os

import click

from hubkit._imports import DISTRIBUTION
from hubkit.cli_group import Group, kept as _kept, progress as _progress, quiet as _quiet  # noqa: I001
from hubkit.cli_group import relaunch_here as _relaunch
from hubkit.config import BuildConfig
from hubkit.schema import Picker
from hubkit.slots import CROP_LAYOUTS, modes


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes; errors and results only.")
@click.option("--debug", is_flag=True, envvar="HUBKIT_DEBUG", help="Show tracebacks (also HUBKIT_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """hubkit: RSNA lumbar-spine DICOM -> Hub dataset -> QLoRA MedGemma adapter -> card -> pipeline().

    \b
    Workflow:
      hubkit synth /tmp/cohort --studies 40
      hubkit build-dataset /tmp/cohort --output /tmp/ds --push me/lumbar-ds
      hubkit train --dataset me/lumbar-ds --base-model google/medgemma-1.5-4b-it --output runs/a --push me/lumbar
      hubkit evaluate --model runs/a --dataset me/lumbar-ds --output runs/a/eval --compare-base
      hubkit calibrate runs/a --eval runs/a/eval
      hubkit card runs/a --eval runs/a/eval --push me/lumbar
      hubkit predict /data/rsna --model me/lumbar --output submission.csv
    """
    ctx.meta["hubkit.debug"] = debug
    _quiet(quiet)


@cli.command("build-dataset")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Where to save the dataset.")
@click.option("--num-proc", default=1, show_default=True, help="Worker processes.")
@click.option("--picker", type=click.Choice(modes()), default=Picker.COORDS.value, show_default=True,
              help="coords: whole slices at train_label_coordinates.csv's points; geometry: whole slices from DICOM "
                   "geometry only (as a DICOM folder at inference); crops: a square around each structure of each "
                   "level, at the coordinates.")
@click.option("--crop-layout", type=click.Choice(CROP_LAYOUTS), default=None,
              help="With --picker crops: mosaic (one 2x2 image per level; the default) or separate (20 images a "
                   "study).")
@click.option("--localizer", default=None, metavar="DIR_OR_REPO",
              help="With --picker crops: cut at this localiser's points (out-of-fold for the studies it was trained "
                   "on) instead of the annotators' coordinates.")
@click.option("--slice-size", "--image-size", "slice_size", default=BuildConfig.slice_size, show_default=True,
              help="Side of the stored square slices (the pipeline reads DICOM at this size too).")
@click.option("--validation-fraction", default=0.1, show_default=True, help="Share of studies held out.")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/validation split.")
@click.option("--max-studies", type=int, default=None, help="Build at most this many studies.")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME", help="Push to this (private) dataset repo.")
@click.option("--public", is_flag=True, help="Make the pushed repo public (RSNA imagery must stay private).")
def build_dataset(data_dir, output, num_proc, picker, crop_layout, localizer, slice_size, validation_fraction, seed,
                  max_studies, push_repo, public) -> None:
    """Turn an RSNA-layout folder of DICOMs + CSVs into an Arrow dataset with a card and a build report.

    \b
    Example:
      hubkit build-dataset /tmp/cohort --output /tmp/ds --num-proc 2
      hubkit build-dataset /tmp/cohort --output /tmp/ds --push me/lumbar-ds
      hubkit build-dataset /tmp/cohort --output /tmp/ds-crops --picker crops --localizer runs/loc
    """
    from pathlib import Path

    from hubkit.dataset_builder.build import build_dataset as build
    from hubkit.dataset_builder.build import work_dir
    from hubkit.dataset_builder.report import summary

    cfg = BuildConfig(data_dir=data_dir, picker=picker, crop_layout=crop_layout, localizer=localizer,
                      slice_size=slice_size,
                      validation_fraction=validation_fraction, seed=seed, num_proc=num_proc, max_studies=max_studies)
    out = Path(output)
    _kept(f"finished studies stay in {work_dir(out)}: run the same command to resume")
    report = build(cfg, output, push=push_repo, private=not public, progress=_progress())
    for line in summary(report, out):
        click.echo(line, err=line.startswith(("warning", "csv", "studies", "files")))
    if report.get("pushed"):
        click.echo(f"pushed to {report['pushed']} ({'public' if public else 'private'})")


@cli.command()
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.argument("repo", metavar="OWNER/NAME")
@click.option("--public", is_flag=True, help="Create the repo public (RSNA imagery must stay private).")
def push(path: str, repo: str, public: bool) -> None:
    """Publish a built dataset folder or a finished run folder, without rebuilding or retraining it.

    One commit, private by default; nothing is committed when nothing changed. A dataset goes as Parquet with its
    card (re-rendered for REPO), manifest and chart; a run as its adapter, processor, config and card.

    \b
    Example:
      hubkit push /tmp/ds me/lumbar-ds
      hubkit push runs/seed me/medgemma-lumbar
    """
    from hubkit.publish import push as publish

    res = publish(path, repo, private=not public)
    state = "committed" if res.changed else "nothing changed, no new commit"
    click.echo(f"pushed {path} to {res.url} ({'public' if public else 'private'}; {state}: {res.commit[:12]})")


@cli.command()
@click.option("--dataset", required=True, help="Dataset folder (build-dataset output / Parquet) or Hub repo id.")
@click.option("--base-model", required=True, help="Base model id or folder (a Gemma 3 / MedGemma VLM).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--config", "config_path", default=None, metavar="YAML|NAME",
              help="YAML of TrainConfig fields, or a shipped recipe by name (tiny-cpu, seed-a100-40g); flags below "
                   "override it.")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME", help="Push the adapter to this repo.")
@click.option("--backend", type=click.Choice(["auto", "unsloth", "trl"]), default=None,
              help="auto: Unsloth on CUDA when installed, else TRL + PEFT.")
@click.option("--oversample", default=None, metavar="moderate=2,severe=4",
              help="Repeat studies by their worst grade, on the stream.")
@click.option("--loss-weights", default=None, metavar="moderate=2,severe=4",
              help="Weigh the answer tokens of Moderate/Severe grades like the metric (TRL backend).")
@click.option("--max-steps", type=int, default=None, help="Optimiser steps (default: from epochs).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the run folder.")
@click.option("--num-gpus", type=int, default=1, show_default=True,
              help="GPUs of this host to train on (DDP through torchrun; one process per GPU).")
def train(dataset, base_model, output, config_path, push_repo, backend, oversample, loss_weights, max_steps, resume,
          num_gpus) -> None:
    """QLoRA/LoRA fine-tune from the streamed dataset; writes adapter + processor + hubkit_config.json.

    \b
    Example:
      hubkit train --dataset me/lumbar-ds --base-model google/medgemma-1.5-4b-it \\
          --config configs/seed-a100-40g.yaml --output runs/seed --push me/medgemma-lumbar
      hubkit train ... --num-gpus 2      (= torchrun --standalone --nproc-per-node 2 -m hubkit.cli train ...)
    """
    _relaunch("train", num_gpus)
    from hubkit.config import TrainConfig
    from hubkit.training import train as run_training

    cfg = TrainConfig.from_yaml(config_path) if config_path else TrainConfig()
    cfg = cfg.with_overrides(backend=backend, oversample=oversample, loss_weights=loss_weights, max_steps=max_steps)
    _kept(f"checkpoints stay in {output}/checkpoints: add --resume to continue")
    run = run_training(dataset, base_model, output, cfg, resume=resume, push=push_repo)
    click.echo(f"run folder: {run}" + (f" (pushed to {push_repo})" if push_repo else ""))


@cli.command("evaluate")
@click.option("--model", required=True, help="Run folder, adapter folder or Hub model repo.")
@click.option("--dataset", required=True, help="save_to_disk folder, Parquet folder or Hub dataset repo.")
@click.option("--split", default="validation", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for results.")
@click.option("--compare-base", is_flag=True, help="Also evaluate the untrained base model, side by side.")
@click.option("--batch-size", default=8, show_default=True, help="Studies per forward pass.")
@click.option("--max-studies", type=int, default=None, help="Evaluate at most this many studies.")
@click.option("--no-calibration", is_flag=True,
              help="Do not apply the model's calibration.json (the raw official score is reported either way).")
def evaluate(model, dataset, split, output, compare_base, batch_size, max_studies, no_calibration) -> None:
    """Score a model on a split: Kaggle-format predictions, metrics (kappa, official RSNA score), confusion matrices.

    \b
    Example:
      hubkit evaluate --model runs/a --dataset me/lumbar-ds --output runs/a/eval --compare-base
    """
    from hubkit.evaluation import evaluate_model

    res = evaluate_model(model, dataset, split=split, output=output, compare_base=compare_base, batch_size=batch_size,
                         max_studies=max_studies, calibrate=not no_calibration, progress=_progress())
    for name in ("finetuned", "base"):
        r = res.get(name)
        if r:
            score = f"RSNA score {_num(r.get('rsna_score'))}"
            if r.get("calibrated"):
                score = f"RSNA score {_num(r.get('rsna_score_raw'))} raw -> {_num(r.get('rsna_score'))} calibrated"
            click.echo(f"{name:>9}: kappa {r.get('kappa') or 0:.3f}  {score}"
                       f"  parse failures {r.get('parse_failure_rate', 0):.1%}")
    click.echo(f"results in {res['output']}")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--eval", "eval_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder written by `hubkit evaluate` on the validation split (its predictions.jsonl).")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME",
              help="Also upload calibration.json to this model repo.")
def calibrate(run_dir, eval_dir, push_repo) -> None:
    """Fit the probabilities' calibration (a temperature per condition group, a severe-spinal scale) on validation
    predictions to minimise the official RSNA score; writes RUN_DIR/calibration.json, which the pipeline, evaluate
    and predict then apply.

    \b
    Example:
      hubkit evaluate --model runs/a --dataset me/lumbar-ds --split validation --output runs/a/eval
      hubkit calibrate runs/a --eval runs/a/eval --push me/medgemma-lumbar
    """
    from hubkit.evaluation.calibration import calibrate_run
    from hubkit.run_record import CALIBRATION_FILE

    cal = calibrate_run(run_dir, eval_dir, push=push_repo)
    temps = ", ".join(f"{g} {t:.3g}" for g, t in cal.temperatures.items())
    click.echo(f"fitted on {cal.split or 'an unnamed split'} ({cal.n_studies} studies): official RSNA score "
               f"{_num(cal.score_raw)} raw -> {_num(cal.score_calibrated)} calibrated "
               f"(temperatures {temps}; severe-spinal scale {cal.severe_spinal_scale:.3g})")
    pushed = f" and pushed it, with the card, to {push_repo}" if push_repo else ""
    click.echo(f"wrote {os.path.join(run_dir, CALIBRATION_FILE)}{pushed}")


@cli.command()
@click.argument("data_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--model", required=True, help="Run folder or Hub model repo of the adapter.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Submission CSV to write (an interrupted one is continued).")
@click.option("--batch-size", default=8, show_default=True, help="Studies per forward pass.")
@click.option("--no-calibration", is_flag=True, help="Do not apply the model's calibration.json.")
@click.option("--series-descriptions", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Series-descriptions CSV (default: test_series_descriptions.csv beside test_images/).")
@click.option("--num-workers", type=int, default=None, help="Processes reading DICOM ahead of the device.")
@click.option("--slice-size", type=int, default=None,
              help="Side of the slices read from DICOM (default: the run's, from its dataset manifest).")
@click.option("--num-gpus", type=int, default=1, show_default=True,
              help="GPUs of this host to split the studies over (torchrun; one process per GPU, one CSV).")
@click.option("--overwrite", is_flag=True,
              help="Replace an output written by another model or with other settings (else: refused).")
@click.option("--coordinates", type=click.Path(dir_okay=False, exists=True), default=None,
              help="For a model trained on crops: the studies' points, in train_label_coordinates.csv's format.")
def predict(data_dir, model, output, batch_size, no_calibration, series_descriptions, num_workers, slice_size,
            num_gpus, overwrite, coordinates) -> None:
    """Competition test folder (test_images/<study>/<series>/*.dcm) -> submission CSV (25 rows per study).

    \b
    Example:
      hubkit predict /data/rsna --model me/medgemma-lumbar --output submission.csv --batch-size 8
      hubkit predict /data/rsna --model runs/a --output sub.csv --num-gpus 2
          (= torchrun --standalone --nproc-per-node 2 -m hubkit.cli predict ...)
    """
    _relaunch("predict", num_gpus)
    from hubkit.inference.predict import predict_folder

    report = predict_folder(data_dir, model, output, batch_size=batch_size, calibrate=not no_calibration,
                            series_descriptions=series_descriptions, num_workers=num_workers, slice_size=slice_size,
                            overwrite=overwrite, coordinates=coordinates,
                            on_warning=lambda m: click.echo(f"warning: {m}", err=True),
                            progress=_progress())
    if report.main:
        again = ("; all were there already, from this model with these settings (--overwrite predicts again)"
                 if report.reused == report.studies else "")
        click.echo(f"wrote {report.output}: {report.studies} studies ({report.predicted} predicted now, "
                   f"{report.reused} from an earlier run, {len(report.failed)} unreadable: priors)"
                   f"{', calibrated' if report.calibrated else ''}{again}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--eval", "eval_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder written by `hubkit evaluate` (metrics tables, confusion matrices).")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME",
              help="Upload only the card files (README.md + card_assets/) to this model repo, in one commit.")
@click.option("--repo-id", default=None, metavar="OWNER/NAME",
              help="Repo id shown in the quick start (default: --push).")
@click.option("--public", is_flag=True, help="Create the repo public if it does not exist yet.")
def card(run_dir, eval_dir, push_repo, repo_id, public) -> None:
    """Render the adapter's model card (README.md) from the run's files, optionally push it.

    \b
    Example:
      hubkit card runs/a --eval runs/a/eval --push me/medgemma-lumbar
    """
    from hubkit.cards.model import write_model_card

    path = write_model_card(run_dir, eval_dir, repo_id or push_repo, push=bool(push_repo), private=not public)
    click.echo(f"wrote {path}" + (f" and pushed it to {push_repo}" if push_repo else ""))


@cli.command("env")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def env(as_json: bool) -> None:
    """Versions, devices and Hub settings to paste into a bug report (whether a token is set, never the token).

    \b
    Example:
      hubkit env
      hubkit env --json
    """
    import json

    from hubkit.environment import report

    info = report()
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join(f"- {k}: {v}" for k, v in info.items()))


@cli.group()
def localizer() -> None:
    """The level localiser: where each level's structures are, for crops without the annotators' coordinates."""


@localizer.command("train")
@click.argument("cohort", type=click.Path(file_okay=False, exists=True))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--folds", default=3, show_default=True, help="Folds of the out-of-fold points (then one final model).")
@click.option("--epochs", default=None, type=int, help="Passes of the coarse networks (default: the recipe's).")
@click.option("--seed", default=0, show_default=True, help="Random seed (folds, augmentation, weights).")
@click.option("--push", "push_repo", default=None, metavar="OWNER/NAME",
              help="Also push it to this (private) model repo, with its card.")
def localizer_train(cohort, output, folds, epochs, seed, push_repo) -> None:
    """Fit the localiser on an RSNA-layout cohort's train_label_coordinates.csv: K folds (their out-of-fold points
    in the Kaggle coordinates format, and the errors against the annotators'), then a final model on every study.

    \b
    Example:
      hubkit localizer train /data/rsna --output runs/loc --folds 3 --push me/lumbar-localizer
    """
    from hubkit import publish
    from hubkit.cards.localizer import error_rows
    from hubkit.localizer.fit import METRICS_FILE, OOF_FILE, FitConfig, train_localizer

    cfg = FitConfig(folds=folds, seed=seed, **({"epochs": epochs} if epochs else {}))
    if push_repo:
        publish.check(push_repo, "model", private=True)  # before minutes of fitting
    m = train_localizer(cohort, output, cfg, progress=_progress())
    click.echo(f"out of fold ({m['points']} points): " + ", ".join(f"{k} {v}" for k, v in error_rows(m)))
    click.echo(f"wrote {output} (the localiser, {OOF_FILE}, {METRICS_FILE})")
    if push_repo:
        click.echo(f"pushed to {publish.push_localizer_folder(output, push_repo).url} (private)")


@cli.command()
@click.argument("space", metavar="OWNER/NAME")
@click.option("--model", required=True, metavar="REPO", help="The model repo the Space demonstrates (OWNER/NAME).")
@click.option("--output", "-o", default=None, type=click.Path(file_okay=False),
              help="Write the Space's files here; without --push-too nothing is pushed.")
@click.option("--push-too", is_flag=True, help="With --output: write there and push as well.")
@click.option("--public", is_flag=True, help="Create the Space public (it shows the model to anyone who opens it).")
def space(space, model, output, push_too, public) -> None:
    """A Gradio demo Space for MODEL: upload a zipped DICOM study, see the 25 grades with their probabilities, the
    images the model was given and the levels' points. Pushed as a Space repo (private unless --public) holding
    app.py, requirements.txt, README.md and this hubkit's wheel; the model's card then links it.

    \b
    Example:
      hubkit space me/lumbar-demo --model me/lumbar-medgemma
      hubkit space me/lumbar-demo --model me/lumbar-medgemma --output space/    # write only, to look first
      python -m hubkit.space.app --model me/lumbar-medgemma                     # the same app, locally
    """
    import tempfile

    from hubkit.space.writer import publish_space, write_space

    if output and not push_too:
        click.echo(f"wrote {write_space(output, space, model)} (app.py, requirements.txt, README.md, the wheel); "
                   f"push it with: hubkit space {space} --model {model} --output {output} --push-too")
        return
    with tempfile.TemporaryDirectory() as tmp:
        res, linked = publish_space(space, model, output or tmp, private=not public)
    click.echo(f"pushed the Space to {res.url} ({'public' if public else 'private'})"
               + (f"; the model card of {model} links it" if linked else ""))


def _add_dev_verbs() -> None:
    from hubkit.cli_dev import VERBS

    for verb in VERBS:
        cli.add_command(verb)


_add_dev_verbs()

if __name__ == "__main__":  # pragma: no cover
    cli()
