"""BENCHMARKS.md 9: the level localiser's errors, out of fold on its training cohort and on a held-out cohort.

    hubkit synth /tmp/loc/train --studies 120 --seed 0 --pose realistic --num-proc 2
    hubkit synth /tmp/loc/held --studies 30 --seed 777 --pose realistic --num-proc 2
    python bench/localizer_eval.py /tmp/loc/train /tmp/loc/held --work /tmp/loc/run --out metrics.jsonl

Fits `hubkit localizer train`'s default recipe (3 folds and a final model) on the first cohort, locates every study
of the second with the final model, and appends one JSON line per cohort: the errors `hubkit.localizer.fit
.point_metrics` reports, the fit's seconds and the seconds per located study.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", help="RSNA-layout cohort to fit on")
    ap.add_argument("held", help="RSNA-layout cohort to locate with the final model")
    ap.add_argument("--work", required=True, help="the localiser's folder")
    ap.add_argument("--out", default=None, help="append the JSON lines here too")
    args = ap.parse_args()

    from hubkit.dataset_builder import rsna_csv
    from hubkit.dataset_builder.study import find_series
    from hubkit.localizer.fit import FitConfig, point_metrics, train_localizer
    from hubkit.localizer.locate import Localizer

    t = time.perf_counter()
    oof = train_localizer(args.train, args.work, FitConfig(), progress=False)
    fit_s = time.perf_counter() - t
    loc, held = Localizer(args.work), Path(args.held)
    desc, coords = rsna_csv.read_descriptions(held), rsna_csv.read_coordinates(held)
    rows, t = [], time.perf_counter()
    for sid in sorted(coords, key=int):
        series, _ = find_series(held / "train_images" / sid, desc.get(sid), by_uid=not desc.get(sid))
        rows += [{"study_id": sid, **r} for r in loc.locate(series)[0]]
    per_study = (time.perf_counter() - t) / max(len(coords), 1)
    lines = [{"cohort": Path(args.train).name, "kind": "out_of_fold", "fit_s": round(fit_s, 1), **oof},
             {"cohort": held.name, "kind": "held_out", "locate_s_per_study": round(per_study, 3),
              **point_metrics(rows, coords, held, desc)}]
    for line in lines:
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
