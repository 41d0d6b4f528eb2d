"""Training-time image augmentation for `hubkit train` (`augment: full` or `augment: intensity`).

A fine-tune on a few hundred studies memorises each study (its noise, field of view, contrast) instead of reading
the grade; jittering what does not carry the label breaks that shortcut. What is jittered, per image:

- `full` only: a small affine: shift up to `SHIFT` of the side, scale within 1 +- `SCALE`, rotation within
  +-`ROTATE` degrees;
- both modes: contrast (gain), brightness (offset) and gamma, like a different scanner / window, and additive
  Gaussian noise.

Which to use: `full` where the anatomy's position varies between studies anyway (real MRI). `intensity` where the
position of a grade is itself stable and fine (hubkit's synthetic phantom seen by the tiny 16-token model, where a
shift of `SHIFT` moves a grade by a whole token block; BENCHMARKS.md 4 compares the modes).

Left and right carry labels (left vs right foraminal / subarticular), so `Augmenter` never mirrors an image.
`LeftRightMirror` (`lr_flip` in the config) mirrors a whole study instead, with its labels: the two parasagittal T1
slices trade places, every axial slice is mirrored and the answer's lf/rf and ls/rs grades are swapped, which is
the same study as if the patient's sides were exchanged (the flip-with-label-swap of RSNA 2024 solutions). The
midline sagittal T2 is left as it is. Validation images are never augmented. Images stay 8-bit grayscale of the same
size, so the processor and the token budget are unchanged.
"""

from __future__ import annotations

import numpy as np

from hubkit.schema import VIEW_T1

SHIFT, SCALE, ROTATE = 0.06, 0.08, 6.0
GAIN, OFFSET, GAMMA, NOISE = 0.2, 20.0, 0.25, 8.0

__all__ = ["Augmenter", "LeftRightMirror", "mirror_study", "SHIFT", "SCALE", "ROTATE", "GAIN", "OFFSET", "GAMMA",
           "NOISE"]

_T1_SIDES = {VIEW_T1["left"]: VIEW_T1["right"], VIEW_T1["right"]: VIEW_T1["left"]}
_SIDE_SWAP = {"lf": "rf", "rf": "lf", "ls": "rs", "rs": "ls"}


class Augmenter:
    """Callable over a list of PIL images; deterministic for a seed, mode and call order."""

    def __init__(self, seed: int = 0, mode: str = "full") -> None:
        if mode not in ("intensity", "full"):
            raise ValueError(f"augmentation mode must be 'intensity' or 'full', got {mode!r}")
        self.rng = np.random.default_rng(seed)
        self.geometry = mode == "full"
        self.bank = np.empty(0, np.float32)

    def __call__(self, images: list) -> list:
        return [self.image(im) for im in images]

    def image(self, im):
        from PIL import Image

        mode = im.mode
        gray = im.convert("L") if mode not in ("L",) else im
        r = self.rng
        out = self._affine(gray) if self.geometry else gray
        gamma, gain = float(np.exp(r.uniform(-GAMMA, GAMMA))), 1.0 + r.uniform(-GAIN, GAIN)
        # Gamma, gain and offset act on 8-bit values: one 256-entry table instead of per-pixel powers.
        lut = (np.arange(256, dtype=np.float32) / 255.0) ** gamma * 255.0 * gain + r.uniform(-OFFSET, OFFSET)
        x = lut[np.asarray(out)]
        x += self._noise(x.shape) * np.float32(r.uniform(0.0, NOISE))
        out = Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8), mode="L")
        return out if mode == "L" else out.convert(mode)

    def _noise(self, shape: tuple[int, ...]) -> np.ndarray:
        """Unit Gaussian noise: a window at a random offset into one bank drawn once (drawing fresh normals for
        every image cost more than all the rest of the augmenter together)."""
        n = int(np.prod(shape))
        if len(self.bank) < 4 * n:
            self.bank = self.rng.standard_normal(max(2**20, 4 * n), dtype=np.float32)
        start = int(self.rng.integers(0, len(self.bank) - n + 1))
        return self.bank[start:start + n].reshape(shape)

    def _affine(self, gray):
        from PIL import Image

        w, h = gray.size
        r = self.rng
        angle = np.deg2rad(r.uniform(-ROTATE, ROTATE))
        scale = 1.0 + r.uniform(-SCALE, SCALE)
        tx, ty = r.uniform(-SHIFT, SHIFT) * w, r.uniform(-SHIFT, SHIFT) * h
        # PIL's AFFINE maps output (x, y) to input: inverse of "rotate+scale about the centre, then shift".
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        cx, cy = w / 2.0, h / 2.0
        a, b = cos, sin
        d, e = -sin, cos
        c = cx - a * (cx + tx) - b * (cy + ty)
        f = cy - d * (cx + tx) - e * (cy + ty)
        return gray.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                              resample=Image.Resampling.BILINEAR, fillcolor=0)


def mirror_study(images: list, views: list[str], prompt: str, target: str) -> tuple[list, list[str], str, str]:
    """One study with the patient's left and right exchanged: (images, views, prompt, target) as given.

    The left and right parasagittal T1 images trade slots (when only one is present its view text and the prompt
    name the other side), axial images ("Axial ..." views) are mirrored horizontally, the answer's lf<->rf and
    ls<->rs grades are swapped; the midline sagittal T2 and any other view are kept. Raises ValueError when
    `target` is not a valid compact answer.
    """
    from PIL import ImageOps

    from hubkit import schema

    answer = schema.parse_target(target)
    images = [ImageOps.mirror(im) if schema.is_axial_view(v) else im for im, v in zip(images, views)]
    views = list(views)
    sides = [i for i, v in enumerate(views) if v in _T1_SIDES]
    if len(sides) == 2:  # both present: swap the images, keep the slot order (and so the prompt)
        i, j = sides
        images[i], images[j] = images[j], images[i]
    elif len(sides) == 1:
        old = views[sides[0]]
        views[sides[0]] = _T1_SIDES[old]
        prompt = prompt.replace(old, _T1_SIDES[old])
    swapped = schema.answer_text([answer[lv][_SIDE_SWAP.get(c, c)] for lv, c in schema.ANSWER_FIELDS])
    return images, views, prompt, swapped


class LeftRightMirror:
    """Applies `mirror_study` to a study with probability `p`; deterministic for a seed and call order."""

    def __init__(self, p: float, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"lr_flip must be a probability in [0, 1], got {p}")
        self.p, self.rng = p, np.random.default_rng([seed, 1])

    def __call__(self, images: list, views: list[str], prompt: str, target: str):
        if self.rng.random() < self.p:
            return mirror_study(images, views, prompt, target)
        return images, list(views), prompt, target
