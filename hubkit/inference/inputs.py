"""What a consumer may hand the pipeline, turned into a `StudyInput`: a DICOM study folder, images + views, a row."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any



def study_from_input(inputs: Any, slice_size: int | None = None, descriptions: Any = None, *,
                     picker: str = "geometry", layout: str | None = None, coordinates: Any = None,
                     localizer: str | None = None):
    """A `StudyInput` (+ notes) from a study folder path, {"images", "views"[, "study_id", "prompt"]} or a
    dataset row. A folder's images are read at `slice_size` (the run's) with the run's `picker` and `layout`
    (`RunFacts.folder_picker`); a crops picker needs the study's points, `coordinates` (`coordinates_of`), or a
    `localizer` folder (the one the model ships) that finds them.
    `descriptions` (a series-descriptions CSV path, {series_id: description} or {study_id: {series_id:
    description}}) names its series, else the CSV beside a `*_images/` folder if there is one, else each series'
    own SeriesDescription. Raises ValueError saying what is missing or unreadable."""
    from .studies import StudyInput

    if isinstance(inputs, (str, os.PathLike)):
        from hubkit.dataset_builder.dicom import DicomError
        from hubkit.dataset_builder.study import load_study
        from hubkit.slots import mode

        path = Path(inputs)
        if path.is_file():
            raise ValueError(f"{path}: expected a study folder (one sub-folder of DICOM files per series), got a file")
        if not slice_size:
            raise ValueError(f"{path}: the model does not say at which size its training slices were stored (no run "
                             "record with a dataset manifest came with it); pass slice_size=N, the dataset's "
                             "--slice-size")
        rows = coordinates_of(coordinates, path.name)
        named = _descriptions_of(path, descriptions)
        located = None
        if mode(picker).coordinates == "required" and not rows:
            if not localizer:
                raise ValueError(f"{path}: this model was trained on {picker} at each level's points: pass "
                                 "coordinates= (a table in train_label_coordinates.csv's format, or {study_id: rows}) "
                                 "for this study, or use a model that ships a localiser; it never falls back to whole "
                                 "slices")
            from .localized import localize

            located = localize(path, named, localizer)
            rows = located[0]
        try:
            s = load_study(path, named, picker=picker, coords=rows, slice_size=slice_size, layout=layout,
                           found=located[3] if located is not None else None)
        except DicomError as e:
            raise ValueError(f"lumbar-classify cannot read study {path}: {e}") from e
        if located is not None:
            return (StudyInput(s.images, s.views, study_id=s.study_id, points=located[0], unplaced=located[2]),
                    list(located[1]) + list(s.notes))
        return StudyInput(s.images, s.views, study_id=s.study_id), list(s.notes)
    if isinstance(inputs, dict):
        missing = [k for k in ("images", "views") if k not in inputs or inputs[k] is None]
        if missing:
            raise ValueError(f"study dict lacks {missing}; expected {{'images': [...], 'views': [...]}} (one view name "
                             f"per image), got keys {sorted(inputs)}")
        images = [_to_pil(im, i) for i, im in enumerate(inputs["images"])]
        views = [str(v) for v in inputs["views"]]
        if len(images) != len(views) or not images:
            raise ValueError(f"got {len(images)} images and {len(views)} views; each image needs one view name")
        sid = inputs.get("study_id")
        return StudyInput(images, views, inputs.get("prompt"), None if sid is None else str(sid),
                          points=inputs.get("points"), unplaced=inputs.get("unplaced")), []
    raise TypeError(f"lumbar-classify takes a study folder path, a dict with images and views, or a dataset row; "
                    f"got {type(inputs).__name__}")


def read_coordinates(coordinates: Any) -> dict[str, list[dict]] | list[dict] | None:
    """The `coordinates=` parameter, read once: a CSV in train_label_coordinates.csv's format (path) becomes
    {study_id: rows}; a dict or a list of rows is kept; None stays None. ValueError naming a file it cannot read."""
    if coordinates is None or isinstance(coordinates, (dict, list, tuple)):
        return coordinates
    if isinstance(coordinates, (str, os.PathLike)):
        from hubkit.dataset_builder import rsna_csv

        path = Path(coordinates)
        if not path.is_file():
            raise ValueError(f"coordinates: {path}: no such file (give a CSV in train_label_coordinates.csv's format)")
        return rsna_csv.read_coordinates_csv(path)
    raise TypeError(f"coordinates= takes a CSV path, {{study_id: rows}} or a list of rows; got "
                    f"{type(coordinates).__name__}")


def coordinates_of(coordinates: Any, study_id: str) -> list[dict] | None:
    """This study's rows of the `coordinates=` parameter (`read_coordinates`' forms: {study_id: rows} or the rows
    of a single study)."""
    table = read_coordinates(coordinates)
    if isinstance(table, dict):
        return list(table.get(str(study_id)) or table.get(study_id) or []) or None
    return list(table) if table else None


def _descriptions_of(study_dir: Path, given: Any) -> dict[str, str] | None:
    """This study's {series_id: description} from what the caller gave, or from the CSV beside its folder."""
    from hubkit.dataset_builder import rsna_csv

    if given is None:
        return rsna_csv.descriptions_beside(study_dir)
    if isinstance(given, (str, os.PathLike)):
        if not Path(given).is_file():
            raise ValueError(f"series_descriptions: {given}: no such file (give the series-descriptions CSV)")
        given = rsna_csv.read_descriptions_csv(given)  # cached by path and mtime: not re-read per study
    if any(isinstance(v, dict) for v in given.values()):  # {study_id: {series_id: description}}
        given = given.get(study_dir.name, {})
    return {str(k): str(v) for k, v in given.items()}


def _to_pil(im: Any, i: int):
    """A decoded PIL image from a PIL image, a path, a datasets Image value or an array (ValueError naming image i).

    Files and bytes are checked before decoding: more than MAX_PIXELS pixels (the DICOM reader's limit) or more
    than one frame is refused, so a small file that declares a gigantic image (a decompression bomb) costs nothing.
    """
    from PIL import Image

    from hubkit.dataset_builder.dicom import MAX_PIXELS

    if isinstance(im, Image.Image):
        return im
    if isinstance(im, (str, os.PathLike)):
        return _open_checked(im, i, str(im))
    if isinstance(im, dict) and (im.get("bytes") or im.get("path")):  # undecoded datasets Image value
        import io

        src = io.BytesIO(im["bytes"]) if im.get("bytes") else im["path"]
        return _open_checked(src, i, "bytes" if im.get("bytes") else str(im["path"]))
    try:
        import numpy as np

        arr = np.asarray(im)
        if arr.ndim not in (2, 3) or arr.shape[0] * arr.shape[1] > MAX_PIXELS:
            raise ValueError(f"shape {arr.shape}")
        return Image.fromarray(arr)
    except Exception as e:
        raise ValueError(f"image {i}: expected a PIL image, a path or a 2-D/3-D array of at most {MAX_PIXELS} "
                         f"pixels, got {type(im).__name__}") from e


def _open_checked(src: Any, i: int, name: str):
    from PIL import Image

    from hubkit.dataset_builder.dicom import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src)
            w, h = img.size
            if w * h > MAX_PIXELS or getattr(img, "n_frames", 1) > 1:
                raise ValueError(f"image {i} ({name}): declares {w}x{h} pixels and {getattr(img, 'n_frames', 1)} "
                                 f"frame(s); at most {MAX_PIXELS} pixels and 1 frame are decoded (decompression "
                                 "bomb?); downscale it first")
            img.load()
    except ValueError:
        raise
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, SyntaxError) as e:
        raise ValueError(f"image {i} ({name}): cannot decode: {e}") from e
    return img
