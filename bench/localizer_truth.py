"""BENCHMARKS.md 9d: where a localiser's points lie against the phantom's own anatomy, per structure, beside where
the annotators' lie. The errors `hubkit localizer train` reports compare two points; what a crop shows depends on
which way the point is off: a canal point slid along the tube leaves the disc (its narrowing fades beyond 8 mm,
`phantom.WINDOW_MM`), a foramen's slice moved medially leaves the foramen. Only a synthetic cohort knows its
anatomy (`hubkit.devkit.synth.spines_of`).

    python bench/localizer_truth.py COHORT runs/loc/oof_coordinates.csv [--out lines.jsonl]

One JSON line per source (the annotators' `train_label_coordinates.csv`, then the points given) and structure:
points, how far along the spine from the structure's disc (|w|: median, 90th and 99th percentiles, shares over 4
and 8 mm), off the picked slice's plane (through), in that plane (in-plane), the share at the right disc, and which
slice: the share on the slice of its series nearest the structure, the share of ties (the distances of the
structure's two nearest slices of that series differ by less than `TIE_MM`, as where an even number of slices is
centred on a disc: which is the nearest, and so the annotated instance, is decided by less than that; the
differences' 10th, 25th and 50th percentiles over all points) and the nearest-slice share away from ties.

Then one line for issue 24's "right axial slice" over the given recess points that have an annotated counterpart
(the points `hubkit.localizer.fit.point_metrics` scores): its two readings of the annotations (`axial_right_instance`,
the annotated instance itself; `axial_right_slice`, of the series chosen, the slice nearest the annotated point)
beside `right_slice`, the share on the chosen series' slice nearest the true recess. On the annotated series the
last two are the same rule (the phantom annotates a recess on the slice nearest it). On another axial series the
annotated point stands in for the structure, and it lies up to half the annotated series' spacing off it, along
that series' normal; a localiser takes another series where that series has a slice nearer the structure than any
of the annotated one, so exactly where the annotated point is farthest off (`other_series`: how many points lie
there; `other_series_right_slice`: how many of them on the slice nearest the true recess).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TIE_MM = 0.3  # two slices whose distances from the structure differ by less than this are a tie


def measure(cohort: Path, points_csv: Path) -> list[dict]:
    import pandas as pd

    from hubkit.dataset_builder import rsna_csv
    from hubkit.devkit.synth import spines_of
    from hubkit.localizer.locate import study_series
    from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS

    spines, desc = spines_of(cohort), rsna_csv.read_descriptions(cohort)
    code = {v: k for k, v in CONDITION_TITLES.items()}
    level = {v: k for k, v in LEVEL_TITLES.items()}
    structure = {"canal": "canal", "lf": "foramina", "rf": "foramina", "ls": "recesses", "rs": "recesses"}
    lines, recess_slices = [], {}
    for source, path in (("annotators", cohort / "train_label_coordinates.csv"), ("given", points_csv)):
        got: dict[str, list] = {}
        frame = pd.read_csv(path, dtype={"study_id": str, "series_id": str})
        given = frame.to_dict("records")  # the last source's: the points the line scores
        for sid, rows in frame.groupby("study_id"):
            series = study_series(cohort, sid, desc)
            spine = spines[sid]
            for r in rows.itertuples():
                h = series[str(r.series_id)].by_instance(int(r.instance_number))
                c, j = code[r.condition], LEVELS.index(level[r.level])
                p = h.pixel_to_patient(float(r.x), float(r.y))
                true = spine.landmark(c, j)
                off = true - p
                normal = np.asarray(h.normal, float)
                _, _, w, disc = spine.local(p[None])
                # each slice's own plane: an angled block's slices are tilted against the next block's
                far = sorted((abs(float((true - np.asarray(o.position, float)) @ np.asarray(o.normal))), id(o))
                             for o in series[str(r.series_id)].slices)
                tie = len(far) > 1 and far[1][0] - far[0][0] < TIE_MM
                if source == "given" and structure[c] == "recesses":
                    recess_slices[sid, r.condition, r.level] = (str(r.series_id), far[0][1] == id(h))
                got.setdefault(structure[c], []).append((abs(float(w[0])), abs(float(off @ normal)),
                                                         float(np.linalg.norm(off - (off @ normal) * normal)),
                                                         int(disc[0]) == j, far[0][1] == id(h), tie,
                                                         far[1][0] - far[0][0] if len(far) > 1 else np.inf))
        for name, values in got.items():
            a = np.array(values, float)
            lines.append({"source": source, "points": str(path), "structure": name, "n": len(a),
                          "along_mm": np.round(np.percentile(a[:, 0], [50, 90, 99]), 2).tolist(),
                          "along_over_4mm": round(float(np.mean(a[:, 0] > 4)), 4),
                          "along_over_8mm": round(float(np.mean(a[:, 0] > 8)), 4),
                          "through_mm": np.round(np.percentile(a[:, 1], [50, 90, 100]), 2).tolist(),
                          "in_plane_mm": np.round(np.percentile(a[:, 2], [50, 90]), 2).tolist(),
                          "right_disc": round(float(np.mean(a[:, 3])), 4),
                          "nearest_slice": round(float(np.mean(a[:, 4])), 4),
                          "ties": round(float(np.mean(a[:, 5])), 4),
                          "tie_margin_mm": np.round(np.percentile(a[:, 6], [10, 25, 50]), 2).tolist(),
                          "nearest_slice_off_ties": (round(float(np.mean(a[a[:, 5] == 0, 4])), 4)
                                                     if (a[:, 5] == 0).any() else None)})
    line = axial_line(cohort, given, recess_slices, desc)
    return lines + [{"source": "given", "points": str(points_csv), **line}]


def axial_line(cohort: Path, given: list[dict], recess_slices: dict, desc) -> dict:
    """The "right axial slice" line's three readings (see the module docstring) of the `given` points;
    `recess_slices`: {(study, condition title, level title): (series id, on the slice nearest the true recess?)}
    of their recesses."""
    from hubkit.dataset_builder import rsna_csv
    from hubkit.localizer.fit import point_metrics

    coords = rsna_csv.read_coordinates(cohort)
    proxy = point_metrics(given, coords, cohort, desc)
    same, other = [], []
    for sid, refs in coords.items():
        for ref in refs:
            got = recess_slices.get((sid, ref["condition"], ref["level"]))
            if got is not None:
                (same if got[0] == str(ref["series_id"]) else other).append(got[1])
    every = same + other
    return {"line": "right axial slice", "n": len(every),
            "axial_right_instance": proxy["axial_right_instance"], "axial_right_slice": proxy["axial_right_slice"],
            "right_slice": round(float(np.mean(every)), 4) if every else None,
            "other_series": len(other), "other_series_right_slice": int(sum(other))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", help="a cohort `hubkit synth` wrote")
    ap.add_argument("points", help="points in train_label_coordinates.csv's format (e.g. oof_coordinates.csv)")
    ap.add_argument("--out", default=None, help="append the JSON lines here too")
    args = ap.parse_args()
    for line in measure(Path(args.cohort), Path(args.points)):
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
