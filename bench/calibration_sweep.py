"""BENCHMARKS.md 7's evidence: does calibration fitted on validation lower the official score of a held-out cohort,
and does the loss weighted like the metric beat the plain loss? Tiny model, synthetic cohort, several seeds, in
parallel.

    python bench/calibration_sweep.py --seeds 0 1 2 --jobs 6 --threads 2     # a 16-core box; results: BENCHMARKS.md 7
    python bench/calibration_sweep.py --smoke                                # 12 studies, 20 steps: a few minutes

Data, built once under --work (reused when present): a synthetic cohort (`hubkit synth`, --studies, seed 0) built
as the demo builds it (`build-dataset`: coords picker, 90/10 split), a held-out cohort from another seed (60 studies,
seed 777, built with --validation-fraction 0, evaluated as its `train` split) and the tiny base (`hubkit base tiny`).

Each (seed, loss) job, one process each, `--threads` torch threads: train with configs/tiny-cpu.yaml (TRL, CPU; the
seed and `loss_weights` "" or "moderate=2,severe=4"; --steps), evaluate the validation split (no calibration yet:
raw), fit calibration on those predictions (`hubkit calibrate`), evaluate the held-out cohort with it (raw and
calibrated), and append one JSON line to --out:

    {"seed", "loss", "loss_weights", "steps", "train_s", "wall_s",
     "validation": {"n", "kappa", "rsna_raw", "rsna_calibrated"},      # calibrated = in-sample (fitted there)
     "held_out": {"n", "kappa", "rsna_raw", "rsna_calibrated"}, "calibration": {temperatures, scale}}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# bench/ (the script's folder) is on sys.path
from sweep_pool import run_pool, sweep_arguments, train_and_score, use_threads

REPO = Path(__file__).resolve().parents[1]
LOSSES = {"unweighted": "", "weighted": "moderate=2,severe=4"}
HELD_OUT_SEED = 777


def prepare(work: Path, studies: int, held_out: int, validation_fraction: float, num_proc: int) -> dict[str, str]:
    """The cohort, the held-out cohort and the tiny base under `work` (each built once)."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.devkit.synth import synth_cohort

    paths = {"ds": work / "ds", "held": work / "held-ds", "base": work / "tiny-base"}
    for name, n, seed, fraction in (("ds", studies, 0, validation_fraction), ("held", held_out, HELD_OUT_SEED, 0.0)):
        if not (paths[name] / "dataset_dict.json").is_file():
            cohort = synth_cohort(work / f"{name}-cohort", n, seed=seed, num_proc=num_proc)
            build_dataset(BuildConfig(data_dir=str(cohort), validation_fraction=fraction, num_proc=num_proc),
                          paths[name])
    if not (paths["base"] / "config.json").is_file():
        write_tiny_base(paths["base"], seed=0)
    return {k: str(v) for k, v in paths.items()}


def job(seed: int, loss: str, paths: dict[str, str], work: str, steps: int, threads: int) -> dict:
    """One (seed, loss) run: train, evaluate validation, calibrate, evaluate held-out; the result line."""
    use_threads(threads)
    from hubkit.config import TrainConfig

    t0 = time.perf_counter()
    run = Path(work) / "runs" / f"seed{seed}-{loss}"
    cfg = TrainConfig.from_yaml(REPO / "configs" / "tiny-cpu.yaml").with_overrides(
        seed=seed, loss_weights=LOSSES[loss], max_steps=steps, backend="trl")
    train_s, val, cal, held_res = train_and_score(paths["ds"], paths["held"], paths["base"], run, cfg)
    held = held_res["finetuned"]
    return {
        "seed": seed, "loss": loss, "loss_weights": LOSSES[loss], "steps": steps, "threads": threads,
        "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - t0, 1),
        "validation": {"n": cal.n_studies, "kappa": val["kappa"], "rsna_raw": val["rsna_score_raw"],
                       "rsna_calibrated": cal.score_calibrated},
        "held_out": {"n": held_res["eval_config"].n_studies, "kappa": held["kappa"],
                     "rsna_raw": held["rsna_score_raw"], "rsna_calibrated": held["rsna_score"]},
        "calibration": {**cal.temperatures, "severe_spinal_scale": cal.severe_spinal_scale},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--losses", nargs="+", choices=sorted(LOSSES), default=list(LOSSES), help="losses compared")
    sweep_arguments(ap, REPO / ".sweep" / "calibration", "calibration_sweep.jsonl", "12 studies (3 validation), "
                    "6 held out, 20 steps")
    args = ap.parse_args(argv)

    work = Path(args.work) / ("smoke" if args.smoke else "full")
    work.mkdir(parents=True, exist_ok=True)
    studies, held_out, steps = args.studies, args.held_out, args.steps
    fraction = 0.1
    if args.smoke:
        studies, held_out, steps, fraction = 12, 6, steps or 20, 0.25
    if steps is None:
        from hubkit.config import TrainConfig

        steps = TrainConfig.from_yaml(REPO / "configs" / "tiny-cpu.yaml").max_steps
    out = Path(args.out or (work / "smoke.jsonl" if args.smoke else REPO / "bench" / "results" /
                            "calibration_sweep.jsonl"))
    jobs = args.jobs or max(1, (os.cpu_count() or 2) // args.threads)
    paths = prepare(work, studies, held_out, fraction, num_proc=jobs)
    todo = [(s, loss) for s in args.seeds for loss in args.losses]
    print(f"{len(todo)} runs ({steps} steps each), {min(jobs, len(todo))} at once, {args.threads} threads each; "
          f"lines -> {out}", flush=True)

    def describe(item, line):
        (seed, loss), v, h = item, line["validation"], line["held_out"]
        return (f"seed {seed} {loss:>10}: validation {v['rsna_raw']:.4f} -> {v['rsna_calibrated']:.4f}, held-out "
                f"{h['rsna_raw']:.4f} -> {h['rsna_calibrated']:.4f} (kappa {h['kappa'] or 0:.3f}), "
                f"{line['wall_s']} s")

    failures = run_pool(todo, job, lambda t: (*t, paths, str(work), steps, args.threads), jobs, out, describe)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
