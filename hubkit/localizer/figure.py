"""The localiser's picture for its model card: one study's sagittal T2 and T1 with the points it predicted (out of
fold) beside the annotators', because people would rather look than read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hubkit.localizer import EXAMPLE_FILE  # noqa: F401 - its home; re-exported here

from .locate import point_of, world_to_pixel

PANELS = (("Sagittal T2: spinal canal", ("Spinal Canal Stenosis",)),
          ("Sagittal T1: left foramen", ("Left Neural Foraminal Narrowing",)))


def plot_example(path: str | os.PathLike, series: Mapping, predicted: Sequence[Mapping],
                 annotated: Sequence[Mapping]) -> Path | None:
    """PATH: per panel, the slice the predicted L3/L4 point lies on (its raw pixels, windowed), every predicted
    point of that structure (red crosses) and every annotated one (green circles) projected onto it, labelled by
    level. None when the study has no predicted point for a panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hubkit.dataset_builder.pixels import decode_picked

    panels = []
    for title, conditions in PANELS:
        mine = [r for r in predicted if r["condition"] in conditions]
        if not mine:
            return None
        ref = next((r for r in mine if r["level"] == "L3/L4"), mine[0])
        s = series[str(ref["series_id"])]
        h = s.by_instance(int(ref["instance_number"]))
        panels.append((title, h, decode_picked(s, h), [_on(r, series, h) for r in mine],
                       [_on(r, series, h) for r in annotated if r["condition"] in conditions]))
    fig = Figure(figsize=(4.2 * len(panels), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    for i, (title, h, arr, mine, theirs) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        lo, hi = np.percentile(arr, (1, 99))
        ax.imshow(arr, cmap="gray", vmin=lo, vmax=hi)
        for pts, style in ((theirs, dict(marker="o", s=70, facecolors="none", edgecolors="#2ca02c", linewidths=1.6)),
                           (mine, dict(marker="x", s=55, c="#d62728", linewidths=1.8))):
            pts = [p for p in pts if p is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], **style)
        for col, row, level in (p for p in mine if p is not None):
            ax.annotate(level, (col, row), xytext=(6, -6), textcoords="offset points", color="#d62728", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle("Localiser, one study out of fold: predicted (red ×) and annotated (green ○)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)


def _on(row: Mapping, series: Mapping, header):
    """(col, row, level) of a point projected onto `header`'s slice; None when its series or slice is missing."""
    p = point_of(series, row)
    if p is None:
        return None
    col, r, _ = world_to_pixel(p, header)
    return col, r, str(row["level"])
