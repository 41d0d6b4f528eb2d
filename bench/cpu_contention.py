"""BENCHMARKS.md 6's evidence: `hubkit train` on CPU (the demo's tiny recipe) alone, and beside one and two CPU-bound
processes, with this code and with an earlier commit (which ran a fixed torch thread count).

    python bench/cpu_contention.py --work /tmp/contention --before SITE --repeats 3   # results: BENCHMARKS.md 6
    python bench/cpu_contention.py --work /tmp/contention --steps 40 --repeats 1     # a quick look, this code only

SITE is an install of the older code that is not part of the repo: a folder with that commit's `hubkit` package at
its top (e.g. `pip install --no-deps --target SITE` of commit 7857243, the "before" of BENCHMARKS.md 6).

What is timed is what a user runs: `python -m hubkit.cli train --config configs/tiny-cpu.yaml --max-steps N` in its
own process, on a dataset and a tiny base built by the same code's CLI. A neighbour is `python -c "while True: pass"`,
started a second before training and killed after it. The rate is read from the run's `training_log.jsonl` as it
grows (one line per 10 steps): steps between the first and the last logged line over the wall time between their
appearance, so model loading, the first step and the final save are not counted. Scenarios run interleaved (each
repeat runs every scenario once) so that drift of the machine hits all alike; the summary gives medians.

One JSON line per run to --out: {"code", "neighbours", "repeat", "steps_per_s", "steps", "wall_s"}; then a table.
Run it on an otherwise quiet machine: anything else running is one more neighbour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"


def _env(site: str | None) -> dict[str, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the code under test chooses its own thread count
        env.pop(var, None)
    if site:
        env["PYTHONPATH"] = site
    return env


def _cli(site: str | None, *args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "hubkit.cli", *args], check=True, env=_env(site), cwd=cwd,
                   stdout=subprocess.DEVNULL)


def prepare(work: Path, code: str, site: str | None, studies: int) -> dict[str, Path]:
    """A synthetic cohort, its dataset and the tiny base, each built by `code`'s own CLI (once)."""
    root = work / code
    root.mkdir(parents=True, exist_ok=True)
    paths = {"cohort": work / "cohort", "ds": root / "ds", "base": root / "tiny-base"}
    if not (paths["cohort"] / "train.csv").is_file():
        _cli(None, "synth", str(paths["cohort"]), "--studies", str(studies), "--num-proc", "2", cwd=work)
    if not (paths["ds"] / "dataset_dict.json").is_file():
        _cli(site, "build-dataset", str(paths["cohort"]), "--output", str(paths["ds"]), "--num-proc", "2", cwd=work)
    if not (paths["base"] / "config.json").is_file():
        _cli(site, "base", "tiny", str(paths["base"]), cwd=work)
    return paths


def _logged_steps(path: Path) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    steps = [json.loads(x).get("step") for x in lines if x.strip().startswith("{")]
    return max((s for s in steps if s), default=None)


def timed_run(paths: dict[str, Path], site: str | None, steps: int, neighbours: int, run_dir: Path) -> dict:
    """One training run beside `neighbours` spinning processes; steps/s from the log's growth."""
    shutil.rmtree(run_dir, ignore_errors=True)
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(neighbours)]
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "hubkit.cli", "train", "--dataset", str(paths["ds"]), "--base-model",
               str(paths["base"]), "--output", str(run_dir), "--config", str(REPO / "configs" / "tiny-cpu.yaml"),
               "--max-steps", str(steps)]
        proc = subprocess.Popen(cmd, env=_env(site), cwd=run_dir.parent, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        seen: list[tuple[int, float]] = []  # (step, when its log line was first seen)
        log = run_dir / "training_log.jsonl"
        while proc.poll() is None:
            step = _logged_steps(log)
            if step and (not seen or step > seen[-1][0]):
                seen.append((step, time.monotonic()))
            time.sleep(0.05)
        err = proc.stderr.read()
        if proc.returncode:
            raise RuntimeError(f"train exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    if len(seen) < 2:
        raise RuntimeError(f"too few log lines to time ({seen}); use more --steps")
    (s0, t_first), (s1, t_last) = seen[0], seen[-1]
    return {"steps_per_s": round((s1 - s0) / (t_last - t_first), 3), "steps": s1 - s0,
            "wall_s": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="cohort, datasets, bases and runs")
    ap.add_argument("--before", default=None, metavar="SITE",
                    help="a folder holding an earlier `hubkit` package at its top (PYTHONPATH) to compare against")
    ap.add_argument("--neighbours", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside training")
    ap.add_argument("--steps", type=int, default=120, help="optimiser steps per run")
    ap.add_argument("--studies", type=int, default=60, help="studies of the synthetic cohort")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON lines (default: WORK/contention.jsonl)")
    args = ap.parse_args(argv)

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    codes = {"after": None, **({"before": str(Path(args.before).resolve())} if args.before else {})}
    paths = {code: prepare(work, code, site, args.studies) for code, site in codes.items()}
    out = Path(args.out or work / "contention.jsonl")
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.repeats):
        for n in args.neighbours:
            for code, site in codes.items():
                res = timed_run(paths[code], site, args.steps, n, work / code / "run")
                line = {"code": code, "neighbours": n, "repeat": r, **res}
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                print(json.dumps(line), flush=True)
                rates.setdefault((code, n), []).append(res["steps_per_s"])
    print(f"\nmedian steps/s over {args.repeats} runs ({os.cpu_count()} cores; ratio to the same code alone)")
    for code in codes:
        quiet = statistics.median(rates[(code, 0)]) if (code, 0) in rates else None
        for n in args.neighbours:
            m = statistics.median(rates[(code, n)])
            ratio = f"{m / quiet:.2f}x" if quiet else "-"
            print(f"  {code:>6}, {n} busy neighbour(s): {m:.2f} steps/s  {ratio}  {sorted(rates[(code, n)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
