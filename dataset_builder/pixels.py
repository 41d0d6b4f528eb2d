"""Pixels: decode one DICOM slice, window it to 8 bits, orient it, resize it (whole, or a square cut from it).

The ONE place where pixels are made; the dataset builder and the inference pipeline both go through `to_image`
(`load_study`: `to_image(decode_picked(...))`), so training and inference see identical images.

Example:
    >>> img = load_slice(header, size=448)     # PIL.Image, mode "L", 448x448
"""

from __future__ import annotations

import numpy as np

from hubkit._imports import install_hint

from .dicom import MAX_FRAMES, MAX_PIXELS, DicomError, Plane, SliceHeader

_DECODER_HINT = (f"install a decoder: {install_hint('decoders')} "
                 "(pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg) or python-gdcm")
# Fallback window when the header has none: robust to a few hot pixels.
PERCENTILES = (0.5, 99.5)
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little endian


def decode(header: SliceHeader, frame: int | None = None) -> np.ndarray:
    """Decode one frame of `header.path` to a 2-D float32 array after the modality LUT (RescaleSlope/Intercept).

    Colour images (RGB, YBR, palette) are reduced to luminance; multi-frame files give `frame` (default: middle).

    Raises:
        DicomError (and nothing else): no pixel data, truncated pixel data, an oversized image, or a compressed
            transfer syntax without an installed decoder (the message names the packages to install).
    """
    try:
        return _decode(header, frame)
    except DicomError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders fail in many ways on hostile input; report, don't crash
        raise DicomError(f"{header.path}: pixel data cannot be decoded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''})") from None


def _decode(header: SliceHeader, frame: int | None) -> np.ndarray:
    import pydicom

    if header.rows * header.columns > MAX_PIXELS or header.frames > MAX_FRAMES:
        raise DicomError(f"{header.path}: declared size {header.rows}x{header.columns}x{header.frames} exceeds the "
                         "limits; refusing to decode")
    try:
        ds = pydicom.dcmread(header.path)
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, reported by name
        raise DicomError(f"{header.path}: unreadable DICOM ({type(e).__name__}: {str(e)[:80]})") from None
    return _decode_dataset(ds, header, frame)


def decode_picked(series, header: SliceHeader) -> np.ndarray:
    """`decode(header)` for a slice of `series` (a `dicom.Series`), from the pixels it kept when it read the header,
    if it kept any (same array either way)."""
    ds = series.kept_pixels(header.path)
    return decode(header) if ds is None else decode_dataset(ds, header)


def decode_dataset(ds, header: SliceHeader) -> np.ndarray:
    """`decode(header)` from a dataset of `header.path` already read with its pixel data (`read_header_and_pixels`):
    uncompressed grayscale is taken from it without a second read; anything else goes through `decode` (same
    array, same errors either way)."""
    try:
        arr = _native_gray(ds, header) if "PixelData" in ds else None
    except Exception:  # noqa: BLE001 - `decode` reads the file again and reports the problem
        arr = None
    if arr is None or header.rows * header.columns > MAX_PIXELS:
        return decode(header)
    return _rescale(arr.astype(np.float32), ds)


def _native_gray(ds, header: SliceHeader) -> np.ndarray | None:
    """One frame of uncompressed little-endian grayscale straight from the PixelData bytes, exactly as pydicom's
    `pixel_array` gives it (unused high bits masked, or sign-extended for signed data); None for anything else."""
    if (header.transfer_syntax not in _NATIVE_LE or header.frames != 1 or header.samples != 1
            or header.photometric not in ("MONOCHROME1", "MONOCHROME2")):
        return None
    try:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        stored = int(ds.get("BitsStored", bits) or bits)
        signed = int(ds.get("PixelRepresentation", 0) or 0)
    except (TypeError, ValueError):
        return None
    if bits not in (8, 16) or not 1 <= stored <= bits or signed not in (0, 1):
        return None
    n = header.rows * header.columns
    data = ds.PixelData
    if len(data) < n * bits // 8:
        return None
    arr = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{bits // 8}", count=n).reshape(header.rows,
                                                                                              header.columns)
    if stored < bits:  # what pydicom does with the unused bits (`correct_unused_bits`)
        shift = bits - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def _decode_dataset(ds, header: SliceHeader, frame: int | None) -> np.ndarray:
    import pydicom

    if "PixelData" not in ds:
        raise DicomError(f"{header.path}: no pixel data (header-only file)")
    if header.transfer_syntax in _NATIVE:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = header.rows * header.columns * header.frames * header.samples * bits // 8
        if len(ds.PixelData) < expected:
            raise DicomError(f"{header.path}: pixel data is truncated ({len(ds.PixelData)} of {expected} bytes)")
    index = (header.frames // 2 if frame is None else frame) if header.frames > 1 else None
    native = _native_gray(ds, header) if index is None else None
    if native is not None:  # the common case, without pydicom's generic decoder machinery (same array)
        return _rescale(native.astype(np.float32), ds)
    try:
        arr = ds.pixel_array if index is None else pydicom.pixels.pixel_array(ds, index=index)
    except (NotImplementedError, RuntimeError, ImportError) as e:
        msg = str(e).lower()
        if any(k in msg for k in ("missing", "plugin", "decoder", "support", "no module")):
            raise DicomError(f"{header.path}: compressed transfer syntax {header.transfer_syntax} cannot be "
                             f"decoded; {_DECODER_HINT}") from None
        raise
    photometric = header.photometric
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr, photometric = apply_color_lut(arr, ds), "RGB"
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom already converted YBR to RGB)
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114  # luminance
    if arr.ndim != 2:
        raise DicomError(f"{header.path}: expected one image frame, got pixel array of shape {arr.shape}")
    return _rescale(arr.astype(np.float32), ds)


def _rescale(out: np.ndarray, ds) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        out = out * slope + intercept
    return out


def window(arr: np.ndarray, window: tuple[float, float] | None = None,
           percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Map intensities to uint8.

    Uses the DICOM WindowCenter/WindowWidth when given and sensible (the window covers part of the data range);
    otherwise falls back to the `percentiles` of the image, which is robust to a few hot pixels.
    """
    if not np.isfinite(arr).all():  # rare (float pixel data): drop NaN/inf before taking statistics
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        arr = np.where(np.isfinite(arr), arr, finite.min())
    lo = hi = None
    if window is not None:
        c, w = window
        lo_w, hi_w = c - w / 2.0, c + w / 2.0
        # A window that misses the data entirely would give a blank image: fall back.
        if hi_w > float(arr.min()) and lo_w < float(arr.max()):
            lo, hi = lo_w, hi_w
    if lo is None:
        lo, hi = (float(v) for v in np.percentile(arr, percentiles))
    if hi <= lo:
        hi = lo + 1.0
    scaled = (arr - lo) / (hi - lo) * 255.0 + 0.5
    np.clip(scaled, 0.0, 255.5, out=scaled)
    return scaled.astype(np.uint8)


def orient(img: np.ndarray, header: SliceHeader) -> np.ndarray:
    """Flip to the usual display so left/right and up/down mean the same in every image.

    Axial: patient right on image left (columns run toward patient left), anterior at the top.
    Sagittal: anterior on image left, superior at the top. Coronal: patient right on image left, superior at top.
    """
    flip_lr, flip_ud = flips(header)
    if flip_lr:
        img = img[:, ::-1]
    if flip_ud:
        img = img[::-1, :]
    return np.ascontiguousarray(img)


def flips(header: SliceHeader) -> tuple[bool, bool]:
    """(flip left-right, flip up-down) that `orient` applies to this slice."""
    r, c = header.row_dir, header.col_dir
    plane = header.plane
    if plane is Plane.AXIAL:
        return bool(r[0] < 0), bool(c[1] < 0)
    if plane is Plane.SAGITTAL:
        return bool(r[1] < 0), bool(c[2] > 0)
    return bool(r[0] < 0), bool(c[2] > 0)


def load_slice(header: SliceHeader, size: int):
    """Decode, orient, resize and window one slice to a `size`x`size` 8-bit grayscale PIL image.

    The float image is resized first (bilinear, PIL mode "F") and windowed after, so windowing touches size^2
    pixels instead of the full matrix; a percentile window is measured on the full-resolution image.
    """
    return to_image(decode(header), header, size)


def to_image(arr: np.ndarray, header: SliceHeader, size: int, region=None):
    """The float image `decode` gave for `header` -> a `size`x`size` 8-bit image: the whole slice (`load_slice`), or
    with `region` (`crops.Region`: a centre in the slice's pixels and a side in mm) the square it names, cut after
    orienting, so left, right, up and down mean what they mean in whole slices. The window is the whole slice's
    either way (a crop is as bright as the same place in the slice); outside the slice a crop is the slice's
    darkest value."""
    from PIL import Image

    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, arr[finite].min() if finite.any() else 0.0)
    win = header.window
    if win is None:
        lo, hi = (float(v) for v in np.percentile(arr, PERCENTILES))
        win = ((lo + hi) / 2.0, max(hi - lo, 1e-6))
    oriented = orient(arr.astype(np.float32, copy=False), header)
    if region is None:
        small = np.asarray(Image.fromarray(oriented, mode="F").resize((size, size), Image.BILINEAR))
    else:
        small = _cut(oriented, header, region, size)
    return Image.fromarray(shown(small, header, win), mode="L")


def shown(arr: np.ndarray, header: SliceHeader, win: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit pixels as a reader sees them: `window` (`win`, else the header's, else the image's percentiles), then
    MONOCHROME1 inverted (high stored values are dark; the VOI window applies before inversion)."""
    img8 = window(arr, win if win is not None else header.window)
    return 255 - img8 if header.photometric == "MONOCHROME1" else img8


def _cut(oriented: np.ndarray, header: SliceHeader, region, size: int) -> np.ndarray:
    """The `region` square of an oriented slice, resampled (bilinear, antialiased like a whole slice's resize) to
    size x size; padded with the slice's darkest value where it runs past the slice's edge."""
    from PIL import Image

    rows, cols = oriented.shape
    flip_lr, flip_ud = flips(header)
    col = (cols - 1 - region.col) if flip_lr else region.col  # the centre, where orienting moved it
    row = (rows - 1 - region.row) if flip_ud else region.row
    half_w = region.side_mm / 2.0 / header.pixel_spacing[1]  # PixelSpacing: (between rows, between columns)
    half_h = region.side_mm / 2.0 / header.pixel_spacing[0]
    box = (col + 0.5 - half_w, row + 0.5 - half_h, col + 0.5 + half_w, row + 0.5 + half_h)  # pixel edges
    pad = int(np.ceil(max(0.0, -box[0], -box[1], box[2] - cols, box[3] - rows))) + 1
    if pad > 1:
        oriented = np.pad(oriented, pad, constant_values=float(oriented.min()))
        box = tuple(v + pad for v in box)
    return np.asarray(Image.fromarray(np.ascontiguousarray(oriented), mode="F").resize(
        (size, size), Image.BILINEAR, box=box))
