"""The localiser's networks and their files: small U-Nets in plain torch, two per head.

- `coarse`: a whole sagittal slice at `COARSE` px -> five heatmaps, one per level (L1/L2 .. L5/S1), each peaking
  where that level's structure is, highest on the slice the structure lies on. Four 2x downsamplings put the whole
  slice in view, so a level is told by counting discs.
- `fine`: a `FINE` mm square around a coarse point, at 1 mm a pixel -> one heatmap peaking on the structure: the
  point to the millimetre that a coarse whole-slice view cannot give.

Two heads make a localiser: `canal` reads sagittal T2 slices (the spinal canal at each level), `foramen` reads
sagittal T1 slices (the neural foramina; left and right lie on different slices, told apart by which side of the
midline a slice is). Their weights travel as one safetensors file, their facts as a JSON beside it:

    localizer.safetensors      weights ("canal.coarse.*", "canal.fine.*", "foramen.coarse.*", "foramen.fine.*")
    localizer.json             architecture, input spec, decoding thresholds, training data, folds, metrics
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from hubkit.localizer import CONFIG_FILE, FOLDER, WEIGHTS_FILE  # noqa: F401 - their home; re-exported here

HEADS = ("canal", "foramen")  # which network reads which series: canal on the sagittal T2, foramen on the T1
# coarse: 4 downsamplings, heatmaps at half the input's side; fine: 2 downsamplings, heatmaps at full resolution.
STAGES = {"coarse": {"depth": 4, "stride": 2}, "fine": {"depth": 2, "stride": 1}}
COARSE, FINE = 64, 32  # the coarse input's side (px, a whole slice); the fine input's side (mm = px)
SCHEMA_VERSION = 1


def make_net(channels: int, width: int, depth: int, stride: int):
    """A U-Net of `depth` 2x downsamplings (one 3x3 convolution per level: on a CPU the second costs more than it
    gives), decoded back to 1/`stride` of its input's side; `channels` maps of logits (`read_maps` reads them)."""
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(inplace=True))

    widths = [width * 2 ** min(i, 3) for i in range(depth + 1)]
    top = {1: 0, 2: 1}[stride]

    class KeypointNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList([block(1 if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1)])
            self.dec = nn.ModuleList([block(widths[i + 1] + widths[i], widths[i])
                                      for i in reversed(range(top, depth))])
            self.head = nn.Conv2d(widths[top], channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, enc in enumerate(self.enc):
                x = enc(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for dec in self.dec:
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                x = dec(torch.cat([x, skips.pop()], 1))
            return self.head(x)

    return KeypointNet()


def build(stage: str, levels: int, width: int):
    """The network of a stage (`STAGES`): coarse has a channel per level, fine one."""
    return make_net(levels if stage == "coarse" else 1, width, **STAGES[stage])


def read_maps(logits: np.ndarray, radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """What maps of logits (n, channels, h, w) say, per input and channel: whether the structure is there (its
    presence: the sigmoid of the highest logit) and where (row, col) in cells: the softmax's centre of mass within
    `radius` cells of the highest logit. Trained so (`fit`): presence against the structure's height on that input,
    the softmax over the map against a Gaussian at the point."""
    n, c, h, w = logits.shape
    flat = logits.reshape(n, c, -1)
    top = flat.argmax(-1)
    presence = 1.0 / (1.0 + np.exp(-np.take_along_axis(flat, top[..., None], -1)[..., 0]))
    r0, c0 = np.divmod(top, w)
    where = np.zeros((n, c, 2))
    for i in range(n):
        for ch in range(c):
            r_lo, r_hi = max(0, r0[i, ch] - radius), min(h, r0[i, ch] + radius + 1)
            c_lo, c_hi = max(0, c0[i, ch] - radius), min(w, c0[i, ch] + radius + 1)
            patch = logits[i, ch, r_lo:r_hi, c_lo:c_hi]
            weight = np.exp(patch - patch.max())
            rr, cc = np.mgrid[r_lo:r_hi, c_lo:c_hi]
            where[i, ch] = ((weight * rr).sum() / weight.sum(), (weight * cc).sum() / weight.sum())
    return presence, where


def save(folder: str | os.PathLike, nets: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write the networks' weights ({"canal.coarse": net, ...}) and the config into FOLDER; returns it."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, net in nets.items()
               for k, v in net.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **config}, indent=2) + "\n")
    return out


def load(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """({"canal.coarse": net, ...} in eval mode, config) of a localiser folder. ValueError naming what is missing or
    newer."""
    from safetensors.torch import load_file

    d = Path(folder)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (d / name).is_file():
            raise ValueError(f"{d}: not a localiser (no {name}); train one with `hubkit localizer train`")
    config = json.loads((d / CONFIG_FILE).read_text())
    if config.get("schema_version", 1) > SCHEMA_VERSION:
        raise ValueError(f"{d / CONFIG_FILE}: a localiser newer than this hubkit reads; upgrade hubkit")
    arch = config["architecture"]
    tensors = load_file(str(d / WEIGHTS_FILE))
    nets = {}
    for head in HEADS:
        for stage in STAGES:
            name = f"{head}.{stage}"
            model = build(stage, arch["levels"], arch["width"])
            model.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
            nets[name] = model.eval()
    return nets, config


def digest(folder: str | os.PathLike) -> str:
    """sha256 of the localiser's weights and config (what a dataset or a run names it by)."""
    import hashlib

    h = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        h.update((Path(folder) / name).read_bytes())
    return h.hexdigest()
