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
`LeftRightMirror` (`lr_flip` in the config) mirrors a whole study instead, with its labels, as the slot table says
(`hubkit.slots`): left and right images trade places (the parasagittal T1 slices, the foramen crops), images showing
both sides (axial slices and crops) are mirrored, and the answer's lf/rf and ls/rs grades are swapped, which is the
same study as if the patient's sides were exchanged (the flip-with-label-swap of RSNA 2024 solutions). The midline
sagittal images are left as they are. Validation images are never augmented. Images stay 8-bit grayscale of the same
size, so the processor and the token budget are unchanged.
"""

from __future__ import annotations

import numpy as np

from hubkit.slots import MIRRORED_CONDITION, mirror_cells, mirror_view, slot_by_view

SHIFT, SCALE, ROTATE = 0.06, 0.08, 6.0
GAIN, OFFSET, GAMMA, NOISE = 0.2, 20.0, 0.25, 8.0

__all__ = ["Augmenter", "LeftRightMirror", "mirror_study", "SHIFT", "SCALE", "ROTATE", "GAIN", "OFFSET", "GAMMA",
           "NOISE"]



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

    The slot table (`hubkit.slots`) says what moves: a sided slot's image trades places with its other-side twin
    (the parasagittal T1 slices, the left and right foramen crops; when only one is present its view text and the
    prompt name the other side), images that show both sides at once (axial slices and crops) are mirrored
    horizontally, a mosaic's cells move and flip alike inside its image, and the answer's lf<->rf and ls<->rs grades
    are swapped; the midline sagittal images and any view no mode knows are kept. Raises ValueError when `target` is
    not a valid compact answer.
    """
    from PIL import ImageOps

    from hubkit import schema

    answer = schema.parse_target(target)
    images, views = list(images), list(views)
    for i, v in enumerate(views):
        slot = slot_by_view(v)
        if slot is not None and slot.cells:
            images[i] = _mirror_mosaic(images[i], slot)
        elif slot is not None and slot.mirrored_flip:
            images[i] = ImageOps.mirror(images[i])
    position = {v: i for i, v in enumerate(views)}
    done = set()
    for i, v in enumerate(list(views)):
        twin = mirror_view(v)
        if twin == v or i in done:
            continue
        j = position.get(twin)
        if j is not None:  # both present: swap the images, keep the slot order (and so the prompt)
            images[i], images[j] = images[j], images[i]
            done |= {i, j}
        else:
            views[i] = twin
            prompt = prompt.replace(v, twin)
    swapped = schema.answer_text([answer[lv][MIRRORED_CONDITION.get(c, c)] for lv, c in schema.ANSWER_FIELDS])
    return images, views, prompt, swapped


def _mirror_mosaic(image, slot):
    """A 2x2 mosaic's mirror image: each cell moved to its twin's place (`slots.mirror_cells`), flipped if it shows
    both sides."""
    from PIL import ImageOps

    w, h = image.size
    cw, ch = w // 2, h // 2
    cells = [image.crop(((i % 2) * cw, (i // 2) * ch, (i % 2 + 1) * cw, (i // 2 + 1) * ch)) for i in range(4)]
    out = image.copy()
    for pos, (src, flip) in enumerate(mirror_cells(slot)):
        out.paste(ImageOps.mirror(cells[src]) if flip else cells[src], ((pos % 2) * cw, (pos // 2) * ch))
    return out


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
