"""DICOM headers, spatial sorting, laterality, windowing and MONOCHROME1 handling."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from hubkit.dataset_builder.dicom import DicomError, Plane, is_dicom_file, read_header, read_series
from hubkit.dataset_builder.pixels import decode_picked, load_slice, orient, window
from tests.fixtures.dicom import write_slice


def test_series_sorted_by_position_not_instance_number(tmp_path):
    img = np.full((16, 16), 100, np.uint16)
    xs = [10.0, -10.0, 0.0, 20.0, -20.0]
    for inst, x in enumerate(xs, start=1):
        write_slice(tmp_path / f"{inst}.dcm", img, ipp=(x, -100, 100), instance=inst)
    s = read_series(tmp_path, "Sagittal T1")
    n = s.normal  # sagittal normal of IOP (0,1,0,0,0,-1) points to patient right (-x)
    assert s.plane is Plane.SAGITTAL
    pos = s.positions()
    assert list(pos) == sorted(pos)
    assert [h.center[0] for h in s.slices] == sorted(xs, key=lambda x: x * n[0])


def test_header_errors_are_one_line_and_name_the_file(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"hello")
    with pytest.raises(DicomError, match=r"x\.dcm: not a DICOM file"):
        read_header(bad)
    p = write_slice(tmp_path / "y.dcm", np.zeros((16, 16)), ipp=(0, 0, 0))
    ds = pydicom.dcmread(p)
    del ds.ImageOrientationPatient
    ds.save_as(p)
    with pytest.raises(DicomError, match=r"y\.dcm: missing ImageOrientationPatient") as e:
        read_header(p)
    assert "\n" not in str(e.value)


def test_dicom_files_are_told_by_name_or_preamble(tmp_path):
    write_slice(tmp_path / "1.dcm", np.zeros((4, 4), np.uint16), ipp=(0, 0, 0))
    (tmp_path / "IM0001").write_bytes((tmp_path / "1.dcm").read_bytes())  # an export without suffixes
    (tmp_path / "notes.txt").write_bytes(b"x" * 200)
    (tmp_path / "short").write_bytes(b"DICM")
    told = [is_dicom_file(tmp_path / n) for n in ("1.dcm", "IM0001", "notes.txt", "short")]
    assert told == [True, True, False, False]


def test_window_from_header_and_percentile_fallback():
    arr = np.linspace(0, 1000, 100).reshape(10, 10)
    assert window(np.array([[300.0, 400.0, 500.0, 600.0, 700.0]]), (500, 200)).tolist() == [[0, 0, 128, 255, 255]]
    # A window far outside the data would give a blank image: fall back to percentiles.
    w2 = window(arr, (10_000, 10))
    assert w2.min() == 0 and w2.max() == 255
    assert window(np.zeros((4, 4))).max() == 0


def test_monochrome1_is_inverted(tmp_path):
    img = np.tile(np.arange(32, dtype=np.uint16) * 100, (32, 1))
    iop = (1, 0, 0, 0, 1, 0)
    a = load_slice(read_header(write_slice(tmp_path / "a.dcm", img, (0, 0, 0), iop)), 32)
    b = load_slice(read_header(write_slice(tmp_path / "b.dcm", img, (0, 0, 0), iop, photometric="MONOCHROME1")), 32)
    a, b = np.asarray(a, int), np.asarray(b, int)
    assert a[0, 0] < a[0, -1] and b[0, 0] > b[0, -1]
    assert np.abs(a + b - 255).max() <= 1


def test_axial_left_right_from_geometry(tmp_path):
    """Columns running toward patient right (row cosine x < 0) are flipped: patient left always on image right."""
    img = np.zeros((16, 16), np.uint16)
    img[:, :4] = 4000  # bright on the first columns
    std = read_header(write_slice(tmp_path / "s.dcm", img, (0, 0, 0), (1, 0, 0, 0, 1, 0)))
    rev = read_header(write_slice(tmp_path / "r.dcm", img, (0, 0, 0), (-1, 0, 0, 0, 1, 0)))
    assert std.plane is Plane.AXIAL
    a = orient(window(img.astype(float)), std)
    b = orient(window(img.astype(float)), rev)
    assert a[:, :4].mean() > 200  # first columns = patient right: stays on image left
    assert b[:, -4:].mean() > 200  # first columns = patient left: moved to image right


@pytest.mark.parametrize("bits,stored,signed", [(16, 16, 0), (16, 12, 0), (16, 12, 1), (16, 16, 1), (8, 8, 0),
                                                (8, 6, 1)])
def test_native_decode_matches_pydicom_and_single_read(tmp_path, bits, stored, signed):
    """The numpy decoder of uncompressed data gives pydicom's `pixel_array` exactly (unused high bits masked or
    sign-extended), and the one-read path of a series (`keep_pixels`) gives exactly `load_slice`'s image."""
    from hubkit.dataset_builder.pixels import decode, to_image

    rng = np.random.default_rng(bits + stored + signed)
    raw = rng.integers(0, 2 ** bits, (24, 20), dtype=np.uint16 if bits == 16 else np.uint8)  # garbage high bits
    (tmp_path / "s").mkdir()
    path = write_slice(tmp_path / "s" / "1.dcm", np.zeros((24, 20)), (0, 0, 0))
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, signed
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-7"
    ds.PixelData = raw.tobytes()
    ds.save_as(path, enforce_file_format=True)
    ref = pydicom.dcmread(path)
    expected = ref.pixel_array.astype(np.float32) * 2 - 7
    h = read_header(path)
    assert np.array_equal(decode(h), expected)
    series = read_series(tmp_path / "s", keep_pixels=True)
    h1 = series.by_instance(1)
    assert series._datasets  # read once, pixels kept
    assert np.array_equal(decode_picked(series, h1), expected)
    assert np.array_equal(np.asarray(to_image(decode_picked(series, h1), h1, 16)), np.asarray(load_slice(h, 16)))


def test_single_read_keeps_errors_of_the_two_pass_path(tmp_path):
    """A truncated or header-only file found through `keep_pixels` fails with the same message as `load_slice`."""
    from hubkit.dataset_builder.pixels import to_image

    (tmp_path / "s").mkdir()
    path = write_slice(tmp_path / "s" / "1.dcm", np.full((32, 32), 7), (0, 0, 0))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DicomError) as two_pass:
        load_slice(read_header(path), 16)
    series = read_series(tmp_path / "s", keep_pixels=True)
    with pytest.raises(DicomError) as one_pass:
        to_image(decode_picked(series, series.by_instance(1)), series.by_instance(1), 16)
    assert str(one_pass.value) == str(two_pass.value) and "truncated" in str(one_pass.value)
