"""The card of a localiser's own repo (`hubkit localizer train --push`): a pure function of its config (the facts
`hubkit.localizer.fit` wrote: architecture, training data, learned geometry, out-of-fold errors)."""

from __future__ import annotations

from typing import Any, Mapping

from hubkit.cards.citation import HUBKIT, RSNA


def error_rows(metrics: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """(name, value) of the localiser's errors (`fit.point_metrics`), as both its own card and a model card that
    ships it show them; "–" where unknown."""
    m = metrics or {}

    def mm(key):
        return "–" if m.get(key) is None else f"{m[key]:.2f} mm"

    def pct(key):
        return "–" if m.get(key) is None else f"{100 * m[key]:.1f}%"

    # where the errors are: a tube's point (the canal) can slide along it where a hole's (a foramen) cannot
    parts = [f"{name} {v['median_mm']:.2f} / {v['p90_mm']:.2f} mm"
             for name, v in (m.get("by_structure") or {}).items()]
    # judged by the annotated point on a series the annotators did not mark: a low estimate there (point_metrics)
    axial = pct("axial_right_slice") + (f" ({pct('axial_other_series')} of the points on a series not annotated)"
                                        if m.get("axial_right_slice") is not None and m.get("axial_other_series")
                                        else "")
    return [("median error", mm("median_mm")), ("90th percentile", mm("p90_mm")), ("within 5 mm", pct("within_5mm")),
            ("right level", pct("right_level")), ("right axial slice", axial),
            ("median / 90th percentile by structure", " · ".join(parts) or "–"),
            ("points not placed", m.get("not_placed", "–"))]


def render_localizer_card(config: Mapping[str, Any], repo_id: str, picture: str | None = None) -> str:
    """README.md for a localiser repo; `picture`: the path of its example picture in the repo, when it is pushed
    (a synthetic cohort's only)."""
    m = config.get("metrics") or {}
    trained = config.get("trained_on") or {}
    fit = config.get("fit") or {}
    table = "\n".join(f"| {k} | {v} |" for k, v in error_rows(m))
    recess, canal = config.get("recess_from_foramen_mm"), config.get("canal_from_foramina_mm")
    geometry = (f"each foramen {config.get('lateral_mm')} mm to its side of the midline; each recess "
                f"{recess[0]:.1f} mm medial of its foramen" if config.get("lateral_mm") and recess else
                "not learned (the training data had no left/right foramen pairs)")
    if canal:
        geometry += (f"; the canal {canal[1]:.1f} mm behind its level's foramina and {abs(canal[0]):.1f} mm "
                     f"{'below' if canal[0] >= 0 else 'above'} them, along the spine")
    shown = f"\n![One study out of fold: predicted and annotated points]({picture})\n" if picture else ""
    return f"""---
library_name: hubkit
tags:
- hubkit
- medical-imaging
- mri
- lumbar-spine
- keypoint-detection
---

# {repo_id.split("/")[-1]}

The level localiser of a hubkit lumbar-spine model: small U-Nets in plain torch that find, in a study's DICOM
series, the spinal canal (sagittal T2) and the left and right neural foramina (sagittal T1) at each level
L1/L2 → L5/S1, and the subarticular recesses by projecting into the axial T2 series through the DICOM geometry.
Written by `hubkit localizer train`.

> ⚠️ **Research only — not for diagnostic use.** Not a medical device; not reviewed, validated or cleared.

## Use

```bash
hubkit build-dataset DATA_DIR --output ds --picker crops --localizer {repo_id}
```

Every crop of the dataset is then cut at this localiser's points (out of fold for the studies it was trained on),
the dataset carries it, `hubkit train` ships it with the adapter, and the adapter's pipeline localises DICOM studies
by itself.

## Errors, out of fold ({m.get("points", "–")} points of {trained.get("studies", "–")} studies)

Patient millimetres between each predicted point and the annotated one; right level: nearer its own level's
annotated point than any other's; right axial slice: of the axial series chosen, the slice nearest the annotated
point (a low estimate where that is not the annotated series: the annotated point can lie up to half a slice
spacing off the structure).

| | |
|---|---|
{table}
{shown}
## Training

- Data: {trained.get("studies", "–")} studies of `{trained.get("cohort", "–")}` with train_label_coordinates.csv
  (fingerprint `{trained.get("coordinates_fingerprint", "–")}`), {fit.get("folds", "–")} folds and a final model
  on all of them.
- Networks: per head a whole-slice U-Net ({config.get("architecture", {}).get("coarse_input", "–")} px, one heatmap
  per level) and a {config.get("architecture", {}).get("fine_mm", "–")} mm one at 1 mm a pixel; width
  {config.get("architecture", {}).get("width", "–")}; {fit.get("epochs", "–")} coarse epochs.
- Geometry learned from the annotations: {geometry}.

## Citation

```bibtex
{HUBKIT}
```

The data it was trained on, if RSNA 2024's:

```bibtex
{RSNA[0]}
```
"""
