"""Real-world and hostile DICOM: every pydicom test file, oversized headers, truncation, mutated headers."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubkit.dataset_builder.dicom import DicomError, read_header
from hubkit.dataset_builder.pixels import load_slice

from tests.fixtures.dicom import write_slice


def _pydicom_test_files() -> list[str]:
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "download failures": offline, only the files shipped in the wheel
        return sorted(f for f in get_testdata_files("*") if f.endswith(".dcm"))


def test_every_pydicom_test_file_decodes_or_fails_cleanly():
    files = _pydicom_test_files()
    assert len(files) >= 50
    decoded, clean, slow = [], [], []
    for f in files:
        t = time.perf_counter()
        try:
            img = np.asarray(load_slice(read_header(f, require_geometry=False), 64))
        except DicomError as e:
            msg = str(e)
            assert "\n" not in msg and Path(f).name in msg
            clean.append(msg)
        else:  # any other exception type fails the test: that is a crash
            assert img.dtype == np.uint8 and img.shape == (64, 64)
            decoded.append(f)
        if time.perf_counter() - t > 10:
            slow.append(f)
    assert not slow, slow  # no hang
    assert len(decoded) >= 40, (len(decoded), len(clean))
    # A compressed file without a decoder names the packages to install.
    assert any("pip install 'hubkit-lumbar[decoders]'" in m for m in clean)
    print(f"pydicom test files: {len(decoded)} decoded, {len(clean)} failed cleanly, 0 crashed")


def test_huge_declared_size_is_refused_before_allocating(tmp_path):
    p = write_slice(tmp_path / "big.dcm", np.zeros((16, 16)), ipp=(0, 0, 0))
    ds = pydicom.dcmread(p)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(p)
    with pytest.raises(DicomError, match="beyond the limits .*; refusing to decode"):
        read_header(p)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 16, 16, 1_000_000
    ds.save_as(p)
    with pytest.raises(DicomError, match="refusing to decode"):
        read_header(p, require_geometry=False)


def test_pixel_data_shorter_than_declared(tmp_path):
    p = write_slice(tmp_path / "short.dcm", np.zeros((32, 32)), ipp=(0, 0, 0))
    ds = pydicom.dcmread(p)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(p)
    with pytest.raises(DicomError, match="truncated"):
        load_slice(read_header(p), 32)


_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
         "PhotometricInterpretation", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
         "WindowCenter", "WindowWidth", "NumberOfFrames", "InstanceNumber", "RescaleSlope", "PixelData"]
_VALUES = st.one_of(st.none(), st.integers(-2**31, 2**31), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.binary(max_size=64),
                    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8))


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    img = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)
    return write_slice(tmp_path_factory.mktemp("h") / "base.dcm", img, ipp=(0, 0, 0), wc=2000, ww=4000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(_TAGS), _VALUES), min_size=1, max_size=4))
def test_mutated_headers_only_raise_dicom_error(base_file, tmp_path, mutations):
    ds = pydicom.dcmread(base_file)
    for tag, value in mutations:
        try:
            if value is None:
                if tag in ds:
                    del ds[tag]
            else:
                setattr(ds, tag, value)
        except Exception:  # noqa: BLE001 - pydicom refused to even set this value: try the next mutation
            continue
    path = tmp_path / "m.dcm"
    try:
        ds.save_as(path, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - unwritable mutation: nothing to read
        return
    try:
        img = load_slice(read_header(path), 32)
    except DicomError:
        return
    assert np.asarray(img).dtype == np.uint8
