"""The processor's output for gray 8-bit studies, made without re-running its image path on every call; shared by
the training collator (`training.collate`) and inference (`inference.studies.prepare_inputs`).

An MR slice reaches the processor as an 8-bit gray ("L") image. Gemma 3's image path converts it to RGB, resizes
it (PIL), rescales and normalises: per pixel, a function of the 8-bit value after the resize. So:

- `PixelTable` resizes the gray image with the processor's own filter (PIL treats each band alike, so the three
  identical RGB bands resize to the gray result) and looks each 8-bit value up in a 256-entry table per channel,
  read from the processor's own output on a ramp of all 256 values: the same floats, exactly.
- `text_tokens` keeps the processor's ids for each distinct text (a study's prompt depends only on its views).

Callers compare their first batch with the processor's own output and fall back to the processor on any
difference, so a processor this was not written for costs speed, never correctness.

    table = PixelTable(processor.image_processor)
    pixels = table.pixels(images)          # float32 [n, 3, H, W], as processor(images=...)["pixel_values"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hubkit.model_family import resample_of


class PixelTable:
    """8-bit gray images -> the image processor's pixel values (other images go through the processor)."""

    def __init__(self, image_processor) -> None:
        self.image_processor = image_processor
        size = image_processor.size
        self.size = (size["width"], size["height"])
        # None: images of another size go through the processor (it would not resize them, or how is unknown)
        self.resample = resample_of(image_processor)
        self._lut: np.ndarray | None = None
        self._gray = False

    def table(self) -> np.ndarray:
        """(channels, 256) float32: the processor's pixel value for each 8-bit gray level, per channel."""
        if self._lut is None:
            from PIL import Image

            w, h = self.size
            ramp = (np.arange(w * h) % 256).astype(np.uint8).reshape(h, w)
            px = np.asarray(self.image_processor(images=[Image.fromarray(ramp, mode="L")],
                                                 return_tensors="np")["pixel_values"][0])
            lut = np.empty((px.shape[0], 256), np.float32)
            for v in range(256):
                lut[:, v] = px[:, ramp == v][:, 0]
            self._lut = lut
            self._gray = bool((lut == lut[:1]).all())
        return self._lut

    def pixels(self, images: list) -> np.ndarray:
        """float32 [n, channels, H, W] for `images` (PIL), equal to the processor's `pixel_values`."""
        lut = self.table()
        out = np.empty((len(images), lut.shape[0], self.size[1], self.size[0]), np.float32)
        slow = []
        for i, im in enumerate(images):
            if getattr(im, "mode", None) != "L" or (im.size != self.size and self.resample is None):
                slow.append(i)
                continue
            if im.size != self.size:
                im = im.resize(self.size, resample=int(self.resample))
            a = np.asarray(im)
            if self._gray:  # the same table for every channel (mean/std equal per channel): one lookup
                out[i] = np.take(lut[0], a)[None]
            else:
                for c in range(lut.shape[0]):
                    out[i, c] = np.take(lut[c], a)
        if slow:
            px = self.image_processor(images=[images[i] for i in slow], return_tensors="np")
            out[slow] = np.asarray(px["pixel_values"], np.float32)
        return out


def text_tokens(processor, text: str, n_images: int, size: tuple[int, int],
                cache: dict | None = None, max_cached: int = 100_000) -> dict[str, list[int]]:
    """input_ids / token_type_ids of `text` as the processor makes them (each image placeholder expanded to its soft
    tokens; blank images of `size` stand in, as the ids do not depend on the pixels), from `cache` when there."""
    key = (text, n_images)
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        from PIL import Image

        blanks = [Image.new("L", size)] * n_images
        kwargs: dict[str, Any] = {"images": [blanks]} if n_images else {}
        out = processor(text=[text], add_special_tokens=False, **kwargs)
        ids = list(np.asarray(out["input_ids"][0]).tolist())
        types = out.get("token_type_ids")
        hit = {"input_ids": ids,
               "token_type_ids": list(np.asarray(types[0]).tolist()) if types is not None else [0] * len(ids)}
        if cache is not None and len(cache) < max_cached:
            cache[key] = hit
    return hit


def difference(want: dict, got: dict) -> str | None:
    """None if both batches hold the same keys with equal tensors, else what differs."""
    import torch

    if set(want) != set(got):
        return f"keys {sorted(want)} vs {sorted(got)}"
    for k in want:
        a, b = torch.as_tensor(want[k]), torch.as_tensor(got[k])
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            return f"{k}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    return None
