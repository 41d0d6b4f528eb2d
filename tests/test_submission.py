"""The submission CSV (hubkit.inference.submission): one dialect for every writer, read back for resuming."""

from __future__ import annotations

import numpy as np
import pytest

from hubkit.inference.submission import (HEADER, SUBMISSION_EPS, read_submission, study_rows, write_rows,
                                         write_submission_csv)
from hubkit.schema import LABEL_COLUMNS


def _probs(seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {c: (rng.dirichlet([3, 1, 1]) * 7).tolist() for c in LABEL_COLUMNS}


def test_rows_are_normalised_clipped_and_in_official_order():
    probs = _probs(0)
    probs[LABEL_COLUMNS[3]] = [1.0, 0.0, 0.0]
    rows = study_rows(7, probs)
    assert [r[0] for r in rows] == [f"7_{c}" for c in LABEL_COLUMNS]
    values = np.array([[float(x) for x in r[1:]] for r in rows])
    assert np.allclose(values.sum(1), 1, atol=1e-12) and values.min() >= SUBMISSION_EPS * (1 - 1e-9)
    with pytest.raises(ValueError, match="rows missing"):
        study_rows(7, {c: probs[c] for c in LABEL_COLUMNS[:-1]})
    with pytest.raises(ValueError, match="not an RSNA label column"):
        study_rows(7, {**probs, "spinal_x": [1, 1, 1]})
    with pytest.raises(ValueError, match="7_spinal_canal_stenosis_l1_l2: probabilities must be"):
        study_rows(7, {**probs, LABEL_COLUMNS[0]: [1, -1, 1]})


def test_writer_and_append_give_the_same_bytes_and_read_back(tmp_path):
    rows = [{"row_id": f"{s}_{c}", "probs": p} for s in ("11", "5") for c, p in _probs(int(s)).items()]
    one = write_submission_csv(tmp_path / "one.csv", rows)
    appended = tmp_path / "appended.csv"
    with appended.open("w", newline="") as fh:
        write_rows(fh, [HEADER])
    for s in ("11", "5"):  # study by study, as `hubkit predict` appends
        with appended.open("a", newline="") as fh:
            write_rows(fh, study_rows(s, _probs(int(s))))
    assert appended.read_bytes() == one.read_bytes()
    back = read_submission(one)
    assert list(back) == ["11", "5"] and back["5"] == study_rows("5", _probs(5))


def test_a_study_cut_short_at_the_end_is_left_out_and_bad_files_are_refused(tmp_path):
    full = write_submission_csv(tmp_path / "full.csv", [{"row_id": f"{s}_{c}", "probs": p}
                                                        for s in ("1", "2") for c, p in _probs(int(s)).items()])
    lines = full.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(b"".join(lines[:1 + 25 + 7]) + lines[33][:10])  # killed inside study 2's 8th row
    assert list(read_submission(cut)) == ["1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: not a submission file"):
        read_submission(bad)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    with pytest.raises(ValueError, match="rows 2-26 are not one study's 25 rows"):
        read_submission(shuffled)


def test_submissions_compare_as_numbers_and_the_comparison_can_fail(tmp_path):
    from tests.fixtures.submissions import PROB_TOL, assert_same_submission

    probs = {c: [0.7, 0.2, 0.1] for c in LABEL_COLUMNS}
    write_submission_csv(tmp_path / "a.csv", [{"row_id": r[0], "probs": [float(x) for x in r[1:]]}
                                              for r in study_rows("7", probs)])
    near = {c: [0.7 + PROB_TOL / 4, 0.2 - PROB_TOL / 4, 0.1] for c in LABEL_COLUMNS}
    far = {**probs, LABEL_COLUMNS[3]: [0.2, 0.7, 0.1]}
    for name, p, sid in (("near", near, "7"), ("far", far, "7"), ("other", probs, "8")):
        write_submission_csv(tmp_path / f"{name}.csv", [{"row_id": r[0], "probs": [float(x) for x in r[1:]]}
                                                        for r in study_rows(sid, p)])
    assert_same_submission(tmp_path / "near.csv", tmp_path / "a.csv")  # last digits differ: the same submission
    with pytest.raises(AssertionError, match="tolerance"):
        assert_same_submission(tmp_path / "far.csv", tmp_path / "a.csv")
    with pytest.raises(AssertionError, match="row ids differ"):
        assert_same_submission(tmp_path / "other.csv", tmp_path / "a.csv")
