"""BENCHMARKS.md 9: the level localiser's errors, out of fold on its training cohort and on a held-out cohort.

    hubkit synth /tmp/loc/train --studies 120 --seed 0 --pose realistic --num-proc 2
    hubkit synth /tmp/loc/held --studies 30 --seed 777 --pose realistic --num-proc 2
    python bench/localizer_eval.py /tmp/loc/train /tmp/loc/held --work /tmp/loc/run --out metrics.jsonl
    python bench/localizer_eval.py --fitted runs/loc /tmp/loc/held /tmp/loc/held778 --points-dir /tmp/pts

Fits `hubkit localizer train`'s default recipe (3 folds and a final model) on the first cohort, locates every study
of the second with the final model, and appends one JSON line per cohort: the errors `hubkit.localizer.fit
.point_metrics` reports, the fit's seconds and the seconds per located study. With `--fitted DIR`, every cohort
given is held out and located with that localiser, nothing fitted; `--points-dir` keeps each cohort's points (for
`bench/localizer_truth.py`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohorts", nargs="+", help="the RSNA-layout cohort to fit on, then the one to locate with the "
                    "final model; with --fitted, only cohorts to locate")
    ap.add_argument("--work", help="the localiser's folder (fitted here)")
    ap.add_argument("--fitted", help="a localiser already fitted: locate the cohorts with it, fit nothing")
    ap.add_argument("--points-dir", help="write each located cohort's points here (<cohort name>.csv)")
    ap.add_argument("--out", default=None, help="append the JSON lines here too")
    args = ap.parse_args()
    if args.fitted is None and (args.work is None or len(args.cohorts) != 2):
        ap.error("give the cohort to fit on and the one to hold out, and --work; or --fitted and the held-out ones")

    from hubkit.dataset_builder import rsna_csv
    from hubkit.localizer.fit import FitConfig, point_metrics, train_localizer, write_rows
    from hubkit.localizer.locate import Localizer, study_series

    lines, held_out = [], args.cohorts
    if args.fitted is None:
        t = time.perf_counter()
        oof = train_localizer(args.cohorts[0], args.work, FitConfig(), progress=False)
        lines.append({"cohort": Path(args.cohorts[0]).name, "kind": "out_of_fold",
                      "fit_s": round(time.perf_counter() - t, 1), **oof})
        held_out = args.cohorts[1:]
    loc = Localizer(args.fitted or args.work)
    for held in map(Path, held_out):
        desc, coords = rsna_csv.read_descriptions(held), rsna_csv.read_coordinates(held)
        rows, t = [], time.perf_counter()
        for sid in sorted(coords, key=int):
            rows += [{"study_id": sid, **r} for r in loc.locate(study_series(held, sid, desc))[0]]
        per_study = (time.perf_counter() - t) / max(len(coords), 1)
        if args.points_dir:
            Path(args.points_dir).mkdir(parents=True, exist_ok=True)
            write_rows(Path(args.points_dir) / f"{held.name}.csv", rows)
        lines.append({"cohort": held.name, "kind": "held_out", "localizer": str(args.fitted or args.work),
                      "locate_s_per_study": round(per_study, 3), **point_metrics(rows, coords, held, desc)})
    for line in lines:
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
