"""BENCHMARKS.md 8's evidence: whole slices vs per-level crops (separate, mosaic), on the tight phantom and on the
realistic one, tiny model, several training seeds, scored on a held-out cohort of another seed.

    python bench/crops_sweep.py --seeds 0 1 2 --jobs 1 --threads 2          # this 2-core machine: hours
    python bench/crops_sweep.py --seeds 0 1 2 --jobs 8 --threads 2          # a 16-core box
    python bench/crops_sweep.py --smoke                                     # 16 studies, 20 steps: minutes

Data, built once under --work (reused when present), per pose (`hubkit synth --pose tight|realistic`): a training
cohort (--studies, seed 0; 90/10 split) and a held-out cohort (60 studies, seed 777), each built up to four ways: whole
slices picked from geometry (the `geometry` picker: what a DICOM folder gets at inference), crops `separate` and
crops `mosaic` (at the cohorts' own coordinates: the upper bound a localiser approaches), and `mosaic-localizer`
(mosaic crops at the points of a localiser fitted on the training cohort: out of fold there, its final model's on
the held-out cohort, as a model shipping it would see). The tiny base once.

Each (pose, layout, seed) job, one process, `--threads` torch threads: train with configs/tiny-cpu.yaml (the seed,
--steps), evaluate the validation split, fit calibration on it (`hubkit calibrate`), evaluate the held-out cohort
with it, and append one JSON line to --out:

    {"pose", "layout", "seed", "steps", "images", "max_length", "train_s", "wall_s",
     "validation": {"n", "kappa", "rsna_raw"},
     "held_out": {"n", "kappa", "rsna_raw", "rsna_calibrated", "kappa_by_condition"}}

`max_length` is the run's token budget per training example (its images' tokens and the text).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# bench/ (the script's folder) is on sys.path
from hubkit.schema import CONDITIONS
from sweep_pool import run_pool, sweep_arguments, train_and_score, use_threads

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 777
# layout -> (picker, crop layout, crops at the localiser's points rather than the annotators')
LAYOUTS = {"slices": ("geometry", None, False), "separate": ("crops", "separate", False),
           "mosaic": ("crops", "mosaic", False), "mosaic-localizer": ("crops", "mosaic", True)}
POSES = ("tight", "realistic")


def prepare(work: Path, poses, layouts, studies: int, held_out: int, fraction: float, size: int,
            num_proc: int) -> dict:
    """{(pose, layout): {"ds", "held"}} and the tiny base, under `work` (each built once)."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.devkit.synth import synth_cohort

    paths: dict = {"base": str(work / "tiny-base")}
    for pose in poses:
        cohorts = {}
        for name, n, seed in (("ds", studies, 0), ("held", held_out, HELD_OUT_SEED)):
            cohorts[name] = work / f"{pose}-{name}-cohort"
            if not (cohorts[name] / "train.csv").is_file():
                synth_cohort(cohorts[name], n, seed=seed, num_proc=num_proc, pose=pose, progress=False)
        localizer = None
        if any(LAYOUTS[lay][2] for lay in layouts):  # fitted once per pose on the training cohort
            from hubkit.localizer.fit import train_localizer
            from hubkit.localizer.net import CONFIG_FILE

            localizer = work / f"{pose}-localizer"
            if not (localizer / CONFIG_FILE).is_file():
                train_localizer(cohorts["ds"], localizer, progress=False)
        for layout in layouts:
            picker, crop_layout, located = LAYOUTS[layout]
            out = {}
            for name, frac in (("ds", fraction), ("held", 0.0)):
                folder = work / f"{pose}-{layout}-{name}"
                if not (folder / "dataset_dict.json").is_file():
                    build_dataset(BuildConfig(data_dir=str(cohorts[name]), picker=picker, crop_layout=crop_layout,
                                              localizer=str(localizer) if located else None, slice_size=size,
                                              validation_fraction=frac, num_proc=num_proc),
                                  folder, progress=False)
                out[name] = str(folder)
            paths[(pose, layout)] = out
    if not (work / "tiny-base" / "config.json").is_file():
        write_tiny_base(work / "tiny-base", seed=0)
    return paths


def job(pose: str, layout: str, seed: int, ds: dict, base: str, work: str, steps: int, threads: int) -> dict:
    """One run: train, evaluate validation, calibrate, evaluate the held-out cohort; its result line."""
    use_threads(threads)
    from hubkit.config import TrainConfig
    from hubkit.manifest import read_manifest
    from hubkit.run_record import read_run

    t0 = time.perf_counter()
    run = Path(work) / "runs" / f"{pose}-{layout}-seed{seed}"
    cfg = TrainConfig.from_yaml(REPO / "configs" / "tiny-cpu.yaml").with_overrides(seed=seed, max_steps=steps)
    train_s, val, cal, held_res = train_and_score(ds["ds"], ds["held"], base, run, cfg)
    held = held_res["finetuned"]
    return {
        "pose": pose, "layout": layout, "seed": seed, "steps": steps, "threads": threads,
        "images": len(read_manifest(ds["ds"])["views"]), "max_length": read_run(run).max_length,
        # crops at a localiser's points: its out-of-fold errors on the training cohort
        **({"localizer": read_manifest(ds["ds"])["localizer"].get("metrics")}
           if "localizer" in read_manifest(ds["ds"]) else {}),
        "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - t0, 1),
        "validation": {"n": cal.n_studies, "kappa": val["kappa"], "rsna_raw": val["rsna_score_raw"]},
        "held_out": {"n": held_res["eval_config"].n_studies, "kappa": held["kappa"],
                     "rsna_raw": held["rsna_score_raw"], "rsna_calibrated": held["rsna_score"],
                     # which conditions a layout loses (crops at a localiser's points: the axial slice's errors)
                     "kappa_by_condition": {c: held.get(f"kappa_{c}") for c in CONDITIONS}},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--poses", nargs="+", choices=POSES, default=list(POSES))
    ap.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=list(LAYOUTS))
    ap.add_argument("--size", type=int, default=128, help="side of the stored images (the demo's)")
    sweep_arguments(ap, REPO / ".sweep" / "crops", "crops_sweep.jsonl", "16 studies (4 validation), 6 held out, "
                    "20 steps")
    args = ap.parse_args(argv)

    work = Path(args.work) / ("smoke" if args.smoke else "full")
    work.mkdir(parents=True, exist_ok=True)
    studies, held_out, steps, fraction = args.studies, args.held_out, args.steps, 0.1
    if args.smoke:
        studies, held_out, steps, fraction = 16, 6, steps or 20, 0.25
    if steps is None:
        from hubkit.config import TrainConfig

        steps = TrainConfig.from_yaml(REPO / "configs" / "tiny-cpu.yaml").max_steps
    out = Path(args.out or (work / "smoke.jsonl" if args.smoke else REPO / "bench" / "results" / "crops_sweep.jsonl"))
    jobs = args.jobs or max(1, (os.cpu_count() or 2) // args.threads)
    paths = prepare(work, args.poses, args.layouts, studies, held_out, fraction, args.size, num_proc=max(jobs, 2))
    # seed by seed: every (pose, layout) has a result as early as possible, more seeds as the sweep goes on
    todo = [(p, lay, s) for s in args.seeds for p in args.poses for lay in args.layouts]
    print(f"{len(todo)} runs ({steps} steps each), {min(jobs, len(todo))} at once, {args.threads} threads each; "
          f"lines -> {out}", flush=True)

    def describe(item, line):
        (pose, layout, seed), v, h = item, line["validation"], line["held_out"]
        return (f"{pose:>9} {layout:>8} seed {seed}: kappa validation {v['kappa'] or 0:.3f}, held-out "
                f"{h['kappa'] or 0:.3f}; held-out score {h['rsna_raw']:.4f} -> {h['rsna_calibrated']:.4f} "
                f"({line['images']} images, {line['max_length']} tokens, {line['wall_s']} s)")

    failures = run_pool(todo, job, lambda t: (*t, paths[t[:2]], paths["base"], str(work), steps, args.threads),
                        jobs, out, describe)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
