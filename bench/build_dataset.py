"""Benchmark: `hubkit build-dataset` vs a naive loop that decodes every slice of every series.

Both read the same synthetic cohort and produce 8-bit 448x448 images; the naive loop is what a first script does
(decode, window and resize every slice, then keep the ones it needs). Each measurement runs in a fresh process so
peak RSS is its own. Prints one JSON line per run and a summary with medians and the ratio.

    python bench/build_dataset.py --studies 40 --repeats 3 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def naive(cohort: Path, size: int) -> int:
    """Decode + window + resize every slice of every series (what hubkit avoids)."""
    from hubkit.dataset_builder.dicom import read_series
    from hubkit.dataset_builder.pixels import load_slice

    n = 0
    for study in sorted((cohort / "train_images").iterdir()):
        for series in sorted(study.iterdir()):
            for h in read_series(series).slices:
                load_slice(h, size)
                n += 1
    return n


def hubkit_build(cohort: Path, size: int, num_proc: int, out: Path) -> int:
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset

    report = build_dataset(BuildConfig(data_dir=str(cohort), slice_size=size, num_proc=num_proc), out)
    return sum(report["splits"].values())


def worker(args) -> None:
    cohort = Path(args.cohort)
    t0 = time.perf_counter()
    if args.worker == "naive":
        naive(cohort, args.image_size)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            hubkit_build(cohort, args.image_size, args.num_proc, Path(tmp) / "ds")
    dt = time.perf_counter() - t0
    studies = len(list((cohort / "train_images").iterdir()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"method": args.worker, "seconds": round(dt, 2), "studies_per_s": round(studies / dt, 3),
                      "peak_rss_mib": round(max(rss, rss_children), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--cohort", default=None, help="existing cohort (default: synthesise one)")
    ap.add_argument("--worker", choices=["naive", "hubkit"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    tmp = tempfile.TemporaryDirectory()
    cohort = Path(args.cohort or Path(tmp.name) / "cohort")
    if not args.cohort:  # in a child process: Linux keeps a process's peak RSS across fork+exec, so synthesising
        # here would show up as the peak RSS of every measured run started afterwards
        subprocess.run([sys.executable, "-c", "import sys; from hubkit.devkit.synth import synth_cohort; "
                        "synth_cohort(sys.argv[1], int(sys.argv[2]), 0, progress=False)", str(cohort),
                        str(args.studies)], check=True)
    results: dict[str, list[dict]] = {"naive": [], "hubkit": []}
    for _ in range(args.repeats):
        for method in ("hubkit", "naive"):  # interleaved so drift hits both
            cmd = [sys.executable, __file__, "--worker", method, "--cohort", str(cohort),
                   "--num-proc", str(args.num_proc), "--image-size", str(args.image_size)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}).stdout
            rec = json.loads(line.strip().splitlines()[-1])
            print(json.dumps(rec), flush=True)
            results[method].append(rec)
    med = {m: statistics.median(r["studies_per_s"] for r in rs) for m, rs in results.items()}
    mem = {m: statistics.median(r["peak_rss_mib"] for r in rs) for m, rs in results.items()}
    print(json.dumps({"summary": True, "studies": len(list((cohort / "train_images").iterdir())),
                      "num_proc": args.num_proc, "median_studies_per_s": med, "median_peak_rss_mib": mem,
                      "ratio_hubkit_over_naive": round(med["hubkit"] / med["naive"], 2), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
