"""BENCHMARKS.md 9e: does a fine network trained on more patches (or for more epochs) find the foramina more
precisely? Refits one head's fine network of a fitted localiser with other settings, on the cohort it was fitted
on, and writes a copy of the localiser with only that network replaced (every other network and the config kept:
the comparison is that one network's), to locate held-out cohorts with (`bench/localizer_eval.py --fitted`).

    python bench/localizer_fine.py COHORT runs/loc --out /tmp/loc-p6e4 --patches 6 --fine-epochs 4

The networks are the final model's (fitted on every study of COHORT), so out-of-fold metrics do not apply; the
held-out cohorts are the measure. Prints the seconds spent reading the studies and fitting the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", help="the RSNA-layout cohort the localiser was fitted on")
    ap.add_argument("localizer", help="the fitted localiser's folder")
    ap.add_argument("--out", required=True, help="where the copy with the refitted network goes")
    ap.add_argument("--head", default="foramen", choices=("canal", "foramen"))
    ap.add_argument("--patches", type=int, default=2)
    ap.add_argument("--fine-epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np

    from hubkit.localizer import fit, net

    cfg = dataclasses.replace(fit.FitConfig(), patches=args.patches, fine_epochs=args.fine_epochs, seed=args.seed)
    t = time.perf_counter()
    studies, _ = fit._studies(Path(args.cohort), cfg, progress=False)
    read_s, t = time.perf_counter() - t, time.perf_counter()
    rng = np.random.default_rng(args.seed)
    samples = fit._samples(studies, sorted(studies, key=int), args.head, "fine", cfg, rng)
    model = fit._fit(samples, "fine", cfg, rng)
    fit_s = time.perf_counter() - t
    nets, config = net.load(args.localizer)
    nets[f"{args.head}.fine"] = model
    net.save(args.out, nets, {**config, "refit": {"head": args.head, **dataclasses.asdict(cfg)}})
    print(json.dumps({"out": args.out, "head": args.head, "patches": args.patches, "fine_epochs": args.fine_epochs,
                      "samples": len(samples), "read_s": round(read_s, 1), "fit_s": round(fit_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
