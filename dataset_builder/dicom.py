"""DICOM headers and series geometry: read headers without pixels, sort slices in space, tell planes and sides.

Pixels are decoded elsewhere (`hubkit.dataset_builder.pixels`) and only for the slices the picker chose.

Conventions (DICOM PS3.3 C.7.6.2.1.1): patient coordinates are LPS in mm (+x = patient left, +y = posterior,
+z = superior). A pixel (column c, row r) lies at `IPP + c*PixelSpacing[1]*row_dir + r*PixelSpacing[0]*col_dir`
where `row_dir = IOP[0:3]` (direction along a row, i.e. as the column index grows) and `col_dir = IOP[3:6]`.

Example:
    >>> series = read_series("train_images/4003253/702807833")
    >>> [round(h.center[0], 1) for h in series.slices]   # sagittal: patient x of each slice, sorted in space
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import numpy as np


class DicomError(ValueError):
    """A DICOM file or series cannot be used; the message is one line naming the file and the reason."""


def is_dicom_file(path: str | Path) -> bool:
    """Whether a file is DICOM by its name (`.dcm`) or its bytes (Part 10: "DICM" after a 128-byte preamble):
    what an uploaded study's series folders are told by, before any header is read."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    with path.open("rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


class Plane(str, enum.Enum):
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    @classmethod
    def of(cls, normal: np.ndarray) -> Plane:
        """The plane a slice normal (LPS) points out of: its largest axis, x -> sagittal, y -> coronal, z -> axial."""
        return (cls.SAGITTAL, cls.CORONAL, cls.AXIAL)[int(np.argmax(np.abs(normal)))]


# The only tags read from a header (a whitelist: no patient data can reach the dataset or a log from here).
HEADER_TAGS = (
    "SOPClassUID", "Modality", "SeriesDescription", "InstanceNumber", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns", "PhotometricInterpretation",
    "WindowCenter", "WindowWidth", "BitsAllocated", "SamplesPerPixel", "NumberOfFrames", "RescaleSlope",
    "RescaleIntercept",
    # what tells series apart and what they are, whatever the folder layout and the vendor's words
    "SeriesInstanceUID", "RepetitionTime", "EchoTime", "InversionTime", "ImageType",
)
# What a single-pass read (`read_header_and_pixels`) adds: the pixel data and what decoding it natively needs.
PIXEL_TAGS = ("BitsStored", "PixelRepresentation", "PixelData")


@dataclasses.dataclass(frozen=True)
class SliceHeader:
    """What the picker needs from one instance; read without decoding pixels."""

    path: Path
    instance_number: int
    position: tuple[float, float, float]  # ImagePositionPatient (centre of the first transmitted pixel)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row_dir (3) + col_dir (3)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    rows: int
    columns: int
    photometric: str
    transfer_syntax: str
    series_description: str = ""
    window: tuple[float, float] | None = None  # (center, width) from the header, if any
    frames: int = 1
    samples: int = 1
    series_uid: str = ""  # SeriesInstanceUID ("" if absent)
    times: tuple[float | None, float | None, float | None] = (None, None, None)  # TR, TE, TI in ms
    image_type: tuple[str, ...] = ()

    @property
    def row_dir(self) -> np.ndarray:
        return np.asarray(self.orientation[:3], dtype=float)

    @property
    def col_dir(self) -> np.ndarray:
        return np.asarray(self.orientation[3:], dtype=float)

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / (np.linalg.norm(n) or 1.0)

    @property
    def center(self) -> np.ndarray:
        """Patient coordinate of the image centre."""
        return self.pixel_to_patient((self.columns - 1) / 2.0, (self.rows - 1) / 2.0)

    @property
    def plane(self) -> Plane:
        return Plane.of(self.normal)

    def pixel_to_patient(self, x: float, y: float) -> np.ndarray:
        """Patient (LPS) coordinate of column x, row y."""
        return (np.asarray(self.position) + x * self.pixel_spacing[1] * self.row_dir
                + y * self.pixel_spacing[0] * self.col_dir)


def _floats(value, n: int, name: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: {name} is not numeric ({value!r})") from None
    if len(out) != n or not all(np.isfinite(out)):
        raise DicomError(f"{path}: {name} must have {n} finite numbers, got {value!r}")
    return out


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        f = float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return f if np.isfinite(f) else None


# Refuse images larger than this before anything is allocated (a hostile header can declare gigapixels).
MAX_PIXELS = 4096 * 4096
MAX_FRAMES = 2048
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def read_header(path: str | Path, require_geometry: bool = True) -> SliceHeader:
    """Read one instance's header (no pixel decoding) and validate what the picker needs.

    Args:
        require_geometry: False accepts files without ImagePositionPatient/ImageOrientationPatient/PixelSpacing
            (an axial identity geometry is assumed) and multi-frame or colour files; used to read loose images.
    Raises:
        DicomError: not a DICOM file, oversized, or (with `require_geometry`) missing/invalid geometry tags,
            multi-frame or colour. Never any other exception type.
    """
    p = Path(path)
    try:
        return _read_header(p, require_geometry)
    except DicomError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed header can break pydicom in many ways; report, don't crash
        raise _malformed(p, e) from None


def read_header_and_pixels(path: str | Path) -> tuple[SliceHeader, object | None]:
    """`read_header` (geometry required) that also keeps the pixel data, reading the file once instead of twice.

    Returns (header, dataset holding only the whitelisted tags + PixelData) for `pixels.decode_dataset`; the dataset
    is None when the single-pass read fails, and then the header comes from `read_header`, so every header error
    (and, at decode time, every pixel error) is exactly the one the two-pass path gives.

    Raises:
        DicomError: as `read_header`.
    """
    p = Path(path)
    try:
        import pydicom

        ds = pydicom.dcmread(p, specific_tags=list(HEADER_TAGS + PIXEL_TAGS))
    except Exception:  # noqa: BLE001 - let the header-only read name the problem
        return read_header(p), None
    try:
        return _header_from_dataset(ds, p, True), ds
    except DicomError:
        raise
    except Exception as e:  # noqa: BLE001 - same wording as read_header
        raise _malformed(p, e) from None


def _malformed(p: Path, e: Exception) -> DicomError:
    """The one-line error for a header pydicom could open but hubkit could not use."""
    first = str(e).splitlines()[0][:80] if str(e) else ""
    return DicomError(f"{p}: malformed DICOM header ({type(e).__name__}: {first})")


def _read_header(p: Path, require_geometry: bool) -> SliceHeader:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except InvalidDicomError:
        raise DicomError(f"{p}: not a DICOM file (no DICM preamble); remove it or fix the export") from None
    except Exception as e:  # noqa: BLE001
        raise DicomError(f"{p}: unreadable DICOM header ({type(e).__name__}: {str(e)[:80]})") from None
    return _header_from_dataset(ds, p, require_geometry)


def _header_from_dataset(ds, p: Path, require_geometry: bool) -> SliceHeader:
    for tag in ("Rows", "Columns"):
        if ds.get(tag) in (None, ""):
            raise DicomError(f"{p}: missing {tag}; not an image")
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip() or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows < 8 or cols < 8:
        raise DicomError(f"{p}: image is only {rows}x{cols} pixels")
    if rows * cols > MAX_PIXELS or not 1 <= frames <= MAX_FRAMES or spp not in (1, 3):
        raise DicomError(f"{p}: declared size {rows}x{cols}x{frames} frame(s)x{spp} sample(s) is beyond the limits "
                         f"({MAX_PIXELS} pixels, {MAX_FRAMES} frames, 1 or 3 samples); refusing to decode")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    geometry = all(ds.get(t) not in (None, "") for t in ("ImagePositionPatient", "ImageOrientationPatient",
                                                         "PixelSpacing"))
    if require_geometry:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if ds.get(tag) in (None, ""):
                raise DicomError(f"{p}: missing {tag}; cannot place the slice in space")
        if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DicomError(f"{p}: expected MONOCHROME2 or MONOCHROME1 grayscale, got {photometric} with "
                             f"{spp} samples per pixel")
        if frames != 1:
            raise DicomError(f"{p}: multi-frame image ({frames} frames); export single-frame slices")
    if geometry:
        orientation = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", p)
        if np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 0.5:
            raise DicomError(f"{p}: ImageOrientationPatient row/column directions are degenerate {orientation}")
        position = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", p)
        spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing", p)
        if min(spacing) <= 0:
            raise DicomError(f"{p}: PixelSpacing must be positive, got {spacing}")
    else:
        orientation, position, spacing = _DEFAULT_ORIENTATION, (0.0, 0.0, 0.0), (1.0, 1.0)
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    try:
        instance = int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        instance = 0
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    return SliceHeader(
        path=p, instance_number=instance, position=position, orientation=orientation, pixel_spacing=spacing,
        rows=rows, columns=cols, photometric=photometric, transfer_syntax=tsuid,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        window=(center, width) if center is not None and width is not None and width > 0 else None,
        frames=frames, samples=spp, series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
        times=tuple(_first_number(ds.get(t)) for t in ("RepetitionTime", "EchoTime", "InversionTime")),
        image_type=tuple(str(v).strip() for v in (ds.get("ImageType") or ()) if str(v).strip()),
    )


class Series:
    """One series: a folder's files, or the files of one SeriesInstanceUID wherever they lie (`files`, with their
    headers already read in `headers`). Headers are read lazily: `by_instance` reads just `<instance>.dcm` when the
    RSNA file naming holds (what the `coords` picker needs), `slices` reads every header (what the `geometry` rule
    needs), sorted along the slice normal, not by InstanceNumber. Unreadable files are skipped, listed in `skipped`."""

    def __init__(self, directory: str | Path, description: str | None = None, keep_pixels: bool = False, *,
                 files: list[Path] | None = None, series_id: str | None = None,
                 headers: dict[Path, SliceHeader] | None = None):
        d = Path(directory)
        self.directory, self.series_id = d, series_id or d.name
        self.skipped: list[tuple[str, str]] = []
        self.files: list[Path] = sorted(files) if files is not None else []
        if files is None:
            if not d.is_dir():
                raise DicomError(f"{d}: series folder not found")
            for f in sorted(d.iterdir()):
                if f.is_symlink():
                    self.skipped.append((str(f), "symbolic link ignored"))
                elif f.is_file() and not f.name.startswith("."):
                    self.files.append(f)
        if not self.files:
            raise DicomError(f"{d}: no files in the series folder")
        self._file_set = set(self.files)
        self._headers: dict[Path, SliceHeader | None] = dict(headers or {})
        self._slices: list[SliceHeader] | None = None
        self._description = description
        # keep_pixels: files looked up by instance (the ones the `coords` picker takes) are read once, pixels
        # included, and `decode` uses those pixels instead of opening the file again.
        self.keep_pixels = keep_pixels
        self._datasets: dict[Path, object] = {}

    def header(self, f: Path, with_pixels: bool = False) -> SliceHeader | None:
        """The header of one file (cached); None, recorded in `skipped`, when it cannot be used."""
        if f not in self._headers:
            try:
                if with_pixels:
                    h, ds = read_header_and_pixels(f)
                    if ds is not None:
                        self._datasets[f] = ds
                    self._headers[f] = h
                else:
                    self._headers[f] = read_header(f)
            except DicomError as e:
                self._headers[f] = None
                self.skipped.append((str(f), str(e)))
        return self._headers[f]

    def kept_pixels(self, path: Path):
        """The dataset (whitelisted tags + PixelData) read with `path`'s header when `keep_pixels`, else None."""
        return self._datasets.get(path)

    @property
    def first(self) -> SliceHeader | None:
        """The first readable header (what the series says of itself: description, times, orientation)."""
        return next((h for h in map(self.header, self.files) if h is not None), None)

    @property
    def description(self) -> str:
        if self._description is None:
            first = self.first
            self._description = first.series_description if first else ""
        return self._description

    @property
    def slices(self) -> list[SliceHeader]:
        """Every readable slice, sorted along the slice normal (empty if none is readable)."""
        if self._slices is None:
            self._slices = sort_slices([h for h in map(self.header, self.files) if h is not None])
        return self._slices

    @property
    def normal(self) -> np.ndarray:
        return _mean_normal(self.slices)

    @property
    def plane(self) -> Plane:
        return Plane.of(self.normal)

    def positions(self) -> np.ndarray:
        """Position of each slice along the series normal (mm), in `slices` order (ascending)."""
        n = self.normal
        return np.array([float(np.dot(s.position, n)) for s in self.slices])

    def by_instance(self, instance_number: int) -> SliceHeader | None:
        """The slice with this InstanceNumber: reads `<n>.dcm` first, scans the whole series only if needed."""
        named = self.directory / f"{instance_number}.dcm"
        if named in self._file_set:
            h = self.header(named, with_pixels=self.keep_pixels)
            if h is not None and h.instance_number == instance_number:
                return h
        return next((s for s in self.slices if s.instance_number == instance_number), None)


def _mean_normal(slices: list[SliceHeader]) -> np.ndarray:
    """The unit mean of the slices' normals, each turned to point the way the first one does (a slice written with
    its row or column direction reversed has the opposite normal, which would cancel out in a plain mean)."""
    ns = np.array([s.normal for s in slices]) if slices else np.zeros((1, 3))
    ns = ns * np.where(ns @ ns[0] < 0, -1.0, 1.0)[:, None]
    n = ns.mean(axis=0)
    return n / (np.linalg.norm(n) or 1.0)


def sort_slices(slices: list[SliceHeader]) -> list[SliceHeader]:
    """Sort by position along the mean slice normal (`dot(IPP, n)`), ties by InstanceNumber."""
    if not slices:
        return []
    n = _mean_normal(slices)
    return sorted(slices, key=lambda s: (round(float(np.dot(s.position, n)), 4), s.instance_number))


def read_series(series_dir: str | Path, description: str | None = None, keep_pixels: bool = False) -> Series:
    """A lazily read `Series` (see its docstring).

    Raises:
        DicomError: the folder is missing or empty.
    """
    return Series(series_dir, description, keep_pixels)
