"""The process pool the learning sweeps share (`crops_sweep.py`, `calibration_sweep.py`): every run in its own
spawned process, result lines appended as they come, a failed run reported without losing the others."""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence


def run_pool(todo: Sequence[tuple], job: Callable, args_of: Callable[[tuple], tuple], jobs: int, out: Path,
             describe: Callable[[tuple, dict], str]) -> int:
    """`job(*args_of(item))` for every item of `todo`, `jobs` at once; each result (a JSON-ready dict) is appended
    to `out` as one line and `describe(item, line)` printed. Returns how many runs failed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(job, *args_of(item)): item for item in todo}
        for fut in as_completed(futures):
            item = futures[fut]
            try:
                line = fut.result()
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others' lines
                failures += 1
                print(f"{' '.join(map(str, item))}: failed: {e!r}", file=sys.stderr, flush=True)
                continue
            with out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(describe(item, line), flush=True)
    return failures


def sweep_arguments(ap, work: Path, results: str, smoke: str) -> None:
    """The options every learning sweep takes (its own are added beside them)."""
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    ap.add_argument("--studies", type=int, default=300, help="studies of the training cohort (seed 0)")
    ap.add_argument("--held-out", type=int, default=60, help="studies of the held-out cohort (seed 777)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per job")
    ap.add_argument("--jobs", type=int, default=None, help="jobs at once (default: cores / threads)")
    ap.add_argument("--work", default=str(work), help="data and runs (git-ignored)")
    ap.add_argument("--out", default=None, help=f"JSON lines (default: bench/results/{results}; with --smoke, "
                                                "WORK/smoke.jsonl)")
    ap.add_argument("--smoke", action="store_true", help=smoke)


def train_and_score(dataset: str, held: str, base: str, run: Path, cfg) -> tuple[float, dict, object, dict]:
    """One sweep run in this process: train `cfg` (a short run evaluates and checkpoints once, at its end),
    evaluate the validation split, fit calibration on it, evaluate the held-out cohort with it. Returns (training
    seconds, validation results, the calibration, the held-out `evaluate_model` answer)."""
    import shutil
    import time

    from hubkit.evaluation import evaluate_model
    from hubkit.evaluation.calibration import calibrate_run
    from hubkit.training import train

    shutil.rmtree(run, ignore_errors=True)
    if cfg.max_steps < cfg.eval_steps:
        cfg = cfg.with_overrides(eval_steps=cfg.max_steps, save_steps=cfg.max_steps)
    t0 = time.perf_counter()
    train(dataset, base, run, cfg)
    train_s = time.perf_counter() - t0
    val = evaluate_model(run, dataset, "validation", output=run / "eval-validation", progress=False)["finetuned"]
    cal = calibrate_run(run, run / "eval-validation")
    return train_s, val, cal, evaluate_model(run, held, "train", output=run / "eval-held-out", progress=False)


def use_threads(threads: int) -> None:
    """A run's process: `threads` torch threads (set before torch is imported here), no progress bars (parallel
    runs' bars would bury the result lines)."""
    import os

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(threads)
