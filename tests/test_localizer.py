"""The level localiser (issue 24, first part): its geometry, the axial projection, and `hubkit localizer train`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hubkit.dataset_builder import rsna_csv
from hubkit.dataset_builder.slices import series_by_kind
from hubkit.dataset_builder.study import find_series
from hubkit.schema import LEVEL_TITLES, LEVELS, SeriesKind
from tests.fixtures.localizer import localizer_cohort, trained_localizer

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cohort() -> Path:
    return localizer_cohort()


def _study(cohort: Path, sid: str):
    desc = rsna_csv.read_descriptions(cohort)
    series, _ = find_series(cohort / "train_images" / sid, desc.get(sid), by_uid=not desc.get(sid))
    return series


def test_pixel_frames_round_trip(cohort):
    """Coarse input <-> slice pixels and fine patch <-> slice pixels are exact inverses on every series' geometry
    (oriented, flipped or not), so a point survives the trip through both networks' frames."""
    from hubkit.localizer import net
    from hubkit.localizer.locate import from_patch, net_to_pixel, pixel_to_net, to_patch

    sid = sorted(rsna_csv.read_coordinates(cohort), key=int)[0]
    for s in _study(cohort, sid).values():
        h = s.slices[len(s.slices) // 2]
        for col, row in ((0.0, 0.0), (h.columns / 3, h.rows * 0.7), (h.columns - 1.0, h.rows - 1.0)):
            u, v = pixel_to_net(col, row, h, net.COARSE)
            assert np.allclose(net_to_pixel(u, v, h, net.COARSE), (col, row), atol=1e-9)
            pu, pv = to_patch(h, 100.0, 120.0, col, row)
            assert np.allclose(from_patch(h, 100.0, 120.0, pu, pv), (col, row), atol=1e-9)


def _world(series, r):
    h = series[str(r["series_id"])].by_instance(int(r["instance_number"]))
    return h.pixel_to_patient(float(r["x"]), float(r["y"]))


def test_geometry_priors_learn_the_anatomy_from_the_annotations(cohort):
    """The phantom puts each foramen 18 mm from the midline and each recess 8 mm medial of its foramen, at the same
    height: the medians over the annotated points find both (to within the slices' spacing), whatever the pose."""
    from hubkit.localizer.fit import geometry_priors

    coords = rsna_csv.read_coordinates(cohort)
    got = geometry_priors(dict.fromkeys(coords), coords, cohort, rsna_csv.read_descriptions(cohort))
    assert abs(got["lateral_mm"] - 18.0) <= 1.5
    assert np.allclose(got["recess_from_foramen_mm"], [8.0, 0.0, 0.0], atol=1.0)
    assert np.allclose(got["canal_from_foramina_mm"], [0.0, 6.0], atol=1.0)  # level with them, 6 mm behind


@pytest.mark.parametrize("slide_mm", [8.0, 15.0])
def test_the_canal_is_placed_from_its_levels_foramina(cohort, slide_mm):
    """The canal is a tube: its own maps can slide a point along it, where each foramen is a hole. Given each
    level's foramina (the annotators') and canal points slid down the tube, every canal point goes back to its
    disc: along the spine it lands on the annotated canal point (the fine network moves it across the tube only).
    The notes name a level only where the slide reached the next level's half (`AGREE_MM`)."""
    from hubkit.localizer.fit import geometry_priors
    from hubkit.localizer.locate import AGREE_MM, Localizer, spine_frame
    from hubkit.schema import CONDITION_TITLES

    coords = rsna_csv.read_coordinates(cohort)
    priors = geometry_priors(dict.fromkeys(coords), coords, cohort, rsna_csv.read_descriptions(cohort))
    trained = Localizer(trained_localizer())
    loc = Localizer(nets=trained.nets, config={**trained.config, **priors})
    code = {v: k for k, v in CONDITION_TITLES.items()}
    level = {LEVEL_TITLES[lv]: lv for lv in LEVELS}
    checked = 0
    for sid, rows in sorted(coords.items())[:4]:
        series = _study(cohort, sid)
        t2 = series_by_kind(series)[0][SeriesKind.SAG_T2][0]
        points = {(code[r["condition"]], level[r["level"]]): _world(series, r) for r in rows}
        foramina = {k: v for k, v in points.items() if k[0] in ("lf", "rf")}
        mids = {lv: (foramina["lf", lv] + foramina["rf", lv]) / 2 for lv in LEVELS
                if ("lf", lv) in foramina and ("rf", lv) in foramina}
        slid = {lv: points["canal", lv] + slide_mm * spine_frame(lv, mids)[0] for lv in mids if ("canal", lv) in points}
        notes: list[str] = []
        placed = loc._agree(t2, [], dict(slid), foramina, notes, {})
        got = {level[r["level"]]: _world(series, r) for r in placed}
        for lv in slid:
            down = spine_frame(lv, mids)[0]
            assert abs(float((got[lv] - points["canal", lv]) @ down)) <= 1.0, (sid, lv)
            moved = f"{LEVEL_TITLES[lv]}: the canal moved to agree with the foramina" in notes
            assert moved == (slide_mm > AGREE_MM), (sid, lv, notes)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("source", ["foramina", "canal"])
def test_axial_projection_finds_the_annotated_slice(cohort, source):
    """Given each level's foramen points (or, without them, its canal points; here the annotators'), the recesses
    projected through the DICOM geometry land on the annotated axial instance, for angled blocks and continuous
    stacks alike, and a level no axial slice reaches is named in a note, not guessed. Both recesses of a level
    land on one slice, even where the two foramina were placed at heights 3 mm apart (each side's own nearest
    slice would then often differ)."""
    from hubkit.localizer.fit import geometry_priors
    from hubkit.localizer.locate import _axial_rows
    from hubkit.schema import CONDITION_TITLES

    coords = rsna_csv.read_coordinates(cohort)
    offset = geometry_priors(dict.fromkeys(coords), coords, cohort, rsna_csv.read_descriptions(cohort))[
        "recess_from_foramen_mm"]
    code = {v: k for k, v in CONDITION_TITLES.items()}
    level = {LEVEL_TITLES[lv]: lv for lv in LEVELS}
    right = total = 0
    for sid, rows in coords.items():
        series = _study(cohort, sid)
        canal = {level[r["level"]]: _world(series, r) for r in rows if r["condition"] == CONDITION_TITLES["canal"]}
        foramina = {(code[r["condition"]], level[r["level"]]): _world(series, r)
                    + np.array([0.0, 0.0, 1.5 if code[r["condition"]] == "lf" else -1.5])
                    for r in rows if code[r["condition"]] in ("lf", "rf")}
        notes: list[str] = []
        axials = series_by_kind(series)[0][SeriesKind.AX_T2]
        placed = (_axial_rows(axials, {}, notes, foramina, offset) if source == "foramina"
                  else _axial_rows(axials, canal, notes))
        got = {(r["condition"], r["level"]): r for r in placed}
        for lv in LEVELS:  # both recesses of a level on one slice, as the crop shows them
            pair = [got.get((CONDITION_TITLES[c], LEVEL_TITLES[lv])) for c in ("ls", "rs")]
            if all(pair):
                assert len({(str(r["series_id"]), int(r["instance_number"])) for r in pair}) == 1, (sid, lv)
        for r in rows:
            if "Subarticular" in r["condition"]:
                g = got.get((r["condition"], r["level"]))
                total += 1
                right += g is not None and (str(g["series_id"]), int(g["instance_number"])) == (
                    str(r["series_id"]), int(r["instance_number"]))
        assert all("no axial slice reaches" in n for n in notes)
    assert total >= 40 and right / total >= 0.85, (right, total)


def test_point_metrics_names_the_points_on_a_series_not_annotated(tmp_path):
    """A recess point on the study's other axial series is counted there (`axial_other_series`, what the cards
    show beside the right-slice share) and judged there by the slice nearest the annotated point; on the annotated
    series, by the annotated instance."""
    from hubkit.cards.localizer import error_rows
    from hubkit.devkit.synth import synth_cohort
    from hubkit.localizer.fit import point_metrics
    from hubkit.localizer.locate import world_to_pixel

    cohort = synth_cohort(tmp_path / "two", 2, seed=3, progress=False, pose="realistic", rates={"two_axial": 1.0})
    coords, desc = rsna_csv.read_coordinates(cohort), rsna_csv.read_descriptions(cohort)
    exact = point_metrics([dict(r, study_id=sid) for sid, rows in coords.items() for r in rows], coords, cohort,
                          desc)
    assert exact["axial_other_series"] == 0.0
    moved, recesses, predicted = 0, 0, []
    for sid, rows in coords.items():
        series = _study(cohort, sid)
        axials = series_by_kind(series)[0][SeriesKind.AX_T2]
        for r in rows:
            row = dict(r, study_id=sid)
            if "Subarticular" in r["condition"]:
                recesses += 1
                q = _world(series, r)
                other = [s for s in axials if s.series_id != str(r["series_id"])]
                if other:
                    h = min(other[0].slices, key=lambda h: abs(world_to_pixel(q, h)[2]))
                    col, line, _ = world_to_pixel(q, h)
                    row.update(series_id=other[0].series_id, instance_number=h.instance_number, x=col, y=line)
                    moved += 1
            predicted.append(row)
    m = point_metrics(predicted, coords, cohort, desc)
    assert moved > 0 and m["axial_other_series"] == round(moved / recesses, 4)
    assert m["axial_right_slice"] == 1.0 and m["axial_right_instance"] == round(1 - moved / recesses, 4)
    assert dict(error_rows(m))["right axial slice"].endswith("of the points on a series not annotated)")
    assert dict(error_rows(exact))["right axial slice"] == "100.0%"


def test_train_writes_a_localizer_that_locates(cohort, tmp_path):
    """`hubkit localizer train`: the folder (weights, config with the training data's fingerprint, out-of-fold points
    in train_label_coordinates.csv's columns, metrics), and a Localizer loaded from it places points on the study's
    own series, the same on a second load."""
    from click.testing import CliRunner

    from hubkit.cli import cli
    from hubkit.localizer import net
    from hubkit.localizer.fit import COLUMNS, METRICS_FILE, OOF_FILE
    from hubkit.localizer.locate import Localizer

    out = tmp_path / "loc"
    res = CliRunner().invoke(cli, ["-q", "localizer", "train", str(cohort), "--output", str(out), "--folds", "2",
                                   "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "out of fold" in res.output and "median" in res.output
    config = json.loads((out / net.CONFIG_FILE).read_text())
    assert config["trained_on"]["studies"] == 8 and len(config["trained_on"]["coordinates_fingerprint"]) == 16
    assert config["lateral_mm"] > 0 and len(config["recess_from_foramen_mm"]) == 3  # the anatomy it learned
    along, behind = config["canal_from_foramina_mm"]  # the phantom's canal: level with its foramina, 6 mm behind
    assert abs(along) < 1.0 and abs(behind - 6.0) < 1.0
    assert (out / net.WEIGHTS_FILE).is_file()
    with (out / OOF_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS and {r["study_id"] for r in rows} <= set(rsna_csv.read_coordinates(cohort))
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert {"median_mm", "p90_mm", "within_5mm", "right_level", "axial_right_slice", "not_placed"} <= set(metrics)
    assert set(metrics["by_structure"]) == {"canal", "foramina", "recesses"}
    assert sum(v["points"] for v in metrics["by_structure"].values()) == metrics["points"]

    sid = sorted(rsna_csv.read_coordinates(cohort), key=int)[0]
    series = _study(cohort, sid)
    first, notes, placed = Localizer(out).locate(series)
    again, _, _ = Localizer(out).locate(series)
    assert first == again and set(placed) == set(LEVELS)
    for r in first:
        assert str(r["series_id"]) in series and series[str(r["series_id"])].by_instance(int(r["instance_number"]))


def test_train_refuses_a_cohort_without_coordinates(tmp_path):
    from click.testing import CliRunner

    from hubkit.cli import cli

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["localizer", "train", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def trained() -> Path:
    return trained_localizer()


def _images(folder: Path) -> dict[str, list[bytes]]:
    import datasets

    dd = datasets.load_from_disk(str(folder))
    return {r["study_id"]: [np.asarray(im).tobytes() for im in r["images"]] for split in dd.values() for r in split}


def test_a_crops_build_cuts_at_the_localizers_out_of_fold_points(cohort, trained, tmp_path):
    """--localizer: every training and validation study is cropped at the localiser's out-of-fold points, exactly
    as a build given those points as its coordinates file, and the manifest and card name the localiser."""
    import shutil

    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.localizer import net
    from hubkit.manifest import read_manifest

    built = tmp_path / "ds-loc"
    build_dataset(BuildConfig(data_dir=str(cohort), picker="crops", localizer=str(trained), slice_size=64,
                              validation_fraction=0.25), built, progress=False)
    oof = tmp_path / "oof-cohort"
    shutil.copytree(cohort, oof)
    shutil.copy(trained / "oof_coordinates.csv", oof / "train_label_coordinates.csv")
    build_dataset(BuildConfig(data_dir=str(oof), picker="crops", slice_size=64, validation_fraction=0.25),
                  tmp_path / "ds-oof", progress=False)
    oracle = tmp_path / "ds-oracle"
    build_dataset(BuildConfig(data_dir=str(cohort), picker="crops", slice_size=64, validation_fraction=0.25), oracle,
                  progress=False)

    assert _images(built) == _images(tmp_path / "ds-oof") != _images(oracle)
    manifest = read_manifest(built)
    assert manifest["localizer"]["digest"] == net.digest(trained)
    assert (manifest["localizer"]["out_of_fold"], manifest["localizer"]["located"]) == (8, 0)
    assert manifest["build"]["localizer"] == "loc" and "localizer" not in read_manifest(oracle)
    assert "the points of the localiser loc" in (built / "README.md").read_text()
    assert net.digest(built / net.FOLDER) == net.digest(trained)  # it travels with the dataset


def test_training_ships_the_datasets_localizer_and_refuses_another(cohort, trained, tmp_path):
    """`hubkit train`'s part: the localiser the dataset's crops were cut with goes into the run folder; a dataset
    whose localiser files are not the ones its manifest names is refused in one line, before any training."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.localizer import net
    from hubkit.localizer.points import ship_localizer
    from hubkit.manifest import read_manifest

    ds = tmp_path / "ds"
    build_dataset(BuildConfig(data_dir=str(cohort), picker="crops", localizer=str(trained), slice_size=64,
                              max_studies=2, validation_fraction=0.0), ds, progress=False)
    shipped = ship_localizer(str(ds), read_manifest(ds), tmp_path / "run")
    assert shipped == tmp_path / "run" / net.FOLDER and net.digest(shipped) == net.digest(trained)
    assert ship_localizer(str(ds), {"picker": "crops"}, tmp_path / "run2") is None  # the oracle: nothing to ship
    (ds / net.FOLDER / net.CONFIG_FILE).write_text((ds / net.FOLDER / net.CONFIG_FILE).read_text() + " ")
    with pytest.raises(ValueError, match=r"cut at the localiser loc .*does not hold that localiser"):
        ship_localizer(str(ds), read_manifest(ds), tmp_path / "run3")


def test_another_cohort_is_located_by_the_final_model(trained, tmp_path):
    """A cohort the localiser never saw gets no out-of-fold points (its coordinates do not match the fingerprint):
    the final model locates every study."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.synth import synth_cohort
    from hubkit.manifest import read_manifest

    other = synth_cohort(tmp_path / "other", 2, seed=9, progress=False, pose="realistic")
    build_dataset(BuildConfig(data_dir=str(other), picker="crops", localizer=str(trained), slice_size=64,
                              validation_fraction=0.0), tmp_path / "ds", progress=False)
    assert (read_manifest(tmp_path / "ds")["localizer"]["out_of_fold"],
            read_manifest(tmp_path / "ds")["localizer"]["located"]) == (0, 2)


def test_localizer_is_for_crops_only(cohort, trained, tmp_path):
    from click.testing import CliRunner

    from hubkit.cli import cli

    res = CliRunner().invoke(cli, ["build-dataset", str(cohort), "--output", str(tmp_path / "ds"), "--picker",
                                   "geometry", "--localizer", str(trained)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1 and "crop picker" in res.output
    res = CliRunner().invoke(cli, ["build-dataset", str(cohort), "--output", str(tmp_path / "ds"), "--picker",
                                   "crops", "--localizer", str(tmp_path)])
    assert res.exit_code != 0 and "not a localiser" in res.output and len(res.output.strip().splitlines()) == 1


def test_train_push_publishes_a_private_localizer_a_build_can_name(cohort, tmp_path, local_hub):
    """`hubkit localizer train --push`: a private model repo with the networks, their facts, the out-of-fold points
    and a card that passes the Hub's checks; `build-dataset --localizer OWNER/NAME` then takes the out-of-fold points
    of the same cohort from it, the very localiser that was trained."""
    from click.testing import CliRunner
    from huggingface_hub import HfApi

    from hubkit.cli import cli
    from hubkit.localizer import net
    from hubkit.localizer.points import localized_coordinates

    out = tmp_path / "loc"
    res = CliRunner().invoke(cli, ["localizer", "train", str(cohort), "--output", str(out), "--folds", "2",
                                   "--epochs", "2", "--push", "owner/lumbar-localizer"])
    assert res.exit_code == 0, res.output
    assert "(private)" in res.output and local_hub.owner_token not in res.output
    api = HfApi(token=local_hub.owner_token)
    assert api.repo_info("owner/lumbar-localizer").private
    files = set(api.list_repo_files("owner/lumbar-localizer"))
    assert {net.WEIGHTS_FILE, net.CONFIG_FILE, "oof_coordinates.csv", "metrics.json", "README.md"} <= files
    card = (out / "README.md").read_text()
    assert "--localizer owner/lumbar-localizer" in card and "| right level |" in card
    assert "| median / 90th percentile by structure | canal " in card and "mm behind its level's foramina" in card
    desc = rsna_csv.read_descriptions(cohort)
    ids = sorted(rsna_csv.read_coordinates(cohort), key=int)
    _, facts, _ = localized_coordinates("owner/lumbar-localizer", cohort, ids, desc)
    assert facts["source"] == "owner/lumbar-localizer" and facts["digest"] == net.digest(out)
    assert (facts["out_of_fold"], facts["located"]) == (8, 0)
