"""`make demo`: the whole hubkit workflow offline, on one machine, with the CLI a user would type.

    python -m hubkit.devkit.demo --out demo-out [--studies 300] [--port 0]
    python -m hubkit.devkit.demo --crops --out demo-crops-out        # `make demo-crops`: per-level crops

Starts a loopback Hub, writes a synthetic DICOM cohort, builds and pushes the dataset (private), writes and pushes a
tiny random Gemma 3 base model, trains a LoRA adapter from the streamed Hub dataset and pushes it, evaluates it
against the untrained base, fits and pushes the calibration of its probabilities for the official score, renders
and pushes the model card, runs `pipeline("lumbar-classify", ...)` in a fresh Python process on a study folder the
model has never seen, and writes a competition submission CSV for the unseen studies (`hubkit predict`). Each step
is a real `hubkit` command.

With `--crops`, what the model sees are per-level crops on a phantom whose patients move like real ones (the
realistic pose): a level localiser is fitted on the cohort first (`hubkit localizer train`), the dataset is cut at its
out-of-fold points (`--picker crops --localizer`), the localiser ships in the dataset, the run and the model repo,
and the pipeline and `hubkit predict` locate the unseen studies' levels with it. Fitting the localiser on the 2-core
CPU is what makes this path slower than `make demo` (BENCHMARKS.md 9c).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

USER, TOKEN = "demo", "hf_demo_local_token"  # a token of the loopback hub only
DATASET_REPO, BASE_REPO, MODEL_REPO = f"{USER}/lumbar-synth", f"{USER}/tiny-gemma3-base", f"{USER}/lumbar-tiny"

PIPELINE_SNIPPET = """
import json, sys
import hubkit  # registers "lumbar-classify"
from transformers import pipeline
clf = pipeline("lumbar-classify", model=sys.argv[1])
out = clf(sys.argv[2])
print(json.dumps({"study_id": out["study_id"], "views": out["views"], "json": out["json"]}, indent=1))
if "points" in out:  # a crops model locates the levels itself
    print(f"{len(out['points'])} points placed by the model's localiser; levels not placed: "
          f"{', '.join(out.get('unplaced_levels', [])) or 'none'}")
print("probabilities at L4L5" + (" (calibrated)" if out["calibrated"] else "") + ":",
      json.dumps(out["levels"]["L4L5"]))
"""


def _step(title: str) -> float:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)
    return time.perf_counter()


def _run(args: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo-out", help="folder for everything the demo writes (wiped first)")
    ap.add_argument("--studies", type=int, default=None,
                    help="synthetic studies (>= 100; default 300 = 270 train + 30 validation: the tiny model memorises "
                         "135; 200 with --crops, where fitting the localiser takes ~5 s a study on 2 cores)")
    ap.add_argument("--crops", action="store_true",
                    help="per-level crops on the realistic phantom, at the points of a localiser fitted first")
    ap.add_argument("--port", type=int, default=0, help="loopback hub port (0 = any free port)")
    ap.add_argument("--config", default=None,
                    help="training config: a YAML path or a shipped recipe name (default: tiny-cpu)")
    args = ap.parse_args(argv)

    from hubkit.devkit.local_hub import LocalHub, hub_env

    studies = args.studies or (200 if args.crops else 300)
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = args.config or "tiny-cpu"  # the shipped recipe (hubkit.configs), also in a non-editable install
    hub = LocalHub(out / "hub", tokens={TOKEN: USER}, port=args.port).start()
    env = {**os.environ, **hub_env(hub.url, TOKEN, out / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    hubkit = [sys.executable, "-m", "hubkit.cli"]
    from hubkit.training.cpu import fair_threads

    procs = str(fair_threads())  # worker processes for synth and build: the cores other processes leave free
    pose = ["--pose", "realistic"] if args.crops else []
    numbers = iter(range(1, 12 if args.crops else 11))

    def step(title: str) -> None:
        _step(f"{next(numbers)}/{11 if args.crops else 10} {title}")

    t_start = time.perf_counter()
    try:
        print(f"loopback hub at {hub.url} (user '{USER}'), everything under {out}")
        step(f"synthetic RSNA-layout DICOM cohort ({studies} studies{', realistic pose' if args.crops else ''}) "
             "+ 2 unseen studies")
        _run(hubkit + ["synth", str(out / "cohort"), "--studies", str(studies), "--seed", "0", "--num-proc", procs,
                       *pose], env)
        _run(hubkit + ["synth", str(out / "unseen"), "--studies", "2", "--seed", "12345", *pose], env)
        build = []
        if args.crops:
            step("fit the level localiser on the cohort's annotated points (3 folds + a final model)")
            _run(hubkit + ["localizer", "train", str(out / "cohort"), "--output", str(out / "localizer")], env)
            build = ["--picker", "crops", "--localizer", str(out / "localizer")]
        step("build the dataset and push it (private)" + (": crops at the localiser's out-of-fold points"
                                                           if args.crops else ""))
        _run(hubkit + ["build-dataset", str(out / "cohort"), "--output", str(out / "dataset"), "--num-proc", procs,
                       *build, "--push", DATASET_REPO], env)
        step("a tiny random Gemma 3 base model, pushed as the base")
        _run(hubkit + ["base", "tiny", str(out / "base"), "--push", BASE_REPO], env)
        step("QLoRA/LoRA fine-tune from the streamed Hub dataset, push the adapter")
        _run(hubkit + ["train", "--dataset", DATASET_REPO, "--base-model", BASE_REPO, "--output",
                       str(out / "run"), "--config", config, "--push", MODEL_REPO], env)
        step("evaluate on the validation split, fine-tuned vs base")
        _run(hubkit + ["evaluate", "--model", MODEL_REPO, "--dataset", DATASET_REPO, "--output",
                       str(out / "run" / "eval"), "--compare-base"], env)
        step("calibrate the probabilities for the official score on the validation predictions, push it")
        _run(hubkit + ["calibrate", str(out / "run"), "--eval", str(out / "run" / "eval"), "--push", MODEL_REPO], env)
        step("model card from the run and evaluation files, pushed")
        _run(hubkit + ["card", str(out / "run"), "--eval", str(out / "run" / "eval"), "--push", MODEL_REPO], env)
        step("a consumer: pipeline('lumbar-classify') in a fresh process on an unseen study folder")
        unseen = sorted((out / "unseen" / "train_images").iterdir())[0]
        _run([sys.executable, "-c", PIPELINE_SNIPPET, MODEL_REPO, str(unseen)], env)
        step("a competition submission for the unseen studies (hubkit predict)")
        _run(hubkit + ["predict", str(out / "unseen" / "train_images"), "--model", MODEL_REPO, "--output",
                       str(out / "submission.csv")], env)
        step("results")
        _summary(out, hub.url, time.perf_counter() - t_start, args.crops)
    finally:
        hub.stop()
    return 0


def _summary(out: Path, url: str, seconds: float, crops: bool) -> None:
    from hubkit.cards.model import METRIC_ROWS
    from hubkit.eval_record import read_results
    from hubkit.run_record import CALIBRATION_FILE, read_calibration

    eval_dir = out / "run" / "eval"
    results = read_results(eval_dir)
    print(f"{'metric':60} {'base':>10} {'fine-tuned':>11}")
    for key, name, fmt in METRIC_ROWS:  # the card's rows, in the card's formats
        vals = [results.get(v, {}).get(key) for v in ("base", "finetuned")]
        if any(v is not None for v in vals):
            cells = (f"{'-' if v is None else fmt.format(v):>{w}}" for v, w in zip(vals, (10, 11)))
            print(f"{name:60} " + " ".join(cells))
    c = read_calibration(out / "run")
    cal = out / "run" / CALIBRATION_FILE
    if c is not None and c.score_calibrated is not None:
        print(f"{'Official RSNA 2024 score, calibrated (in-sample)':60} {'':>10} {c.score_calibrated:>11.3f}")
    located = (f"  level localiser     {out / 'localizer'}   (out-of-fold points, errors, picture; shipped in the "
               "model repo)\n" if crops else "")
    print(f"""
Where everything is:
  cohort (DICOM)      {out / 'cohort'}
{located}  dataset + card      {out / 'dataset'}   (hub: {url}/datasets/{DATASET_REPO})
  training run        {out / 'run'}       (adapter, run record, training_log.jsonl, logs/ for TensorBoard)
  evaluation          {eval_dir}
  calibration         {cal}
  submission          {out / 'submission.csv'}   (hubkit predict on the unseen studies)
  model card          {out / 'run' / 'README.md'}   (hub: {url}/{MODEL_REPO})
  local hub storage   {out / 'hub'}
Done in {seconds / 60:.1f} min.""")


if __name__ == "__main__":
    sys.exit(main())
