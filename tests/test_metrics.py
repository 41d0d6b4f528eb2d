"""hubkit.evaluation.metrics: the official RSNA metric and the classification metrics against hand-computed values."""

from __future__ import annotations

import csv
import math
import os
import socket

os.environ["HF_EVALUATE_OFFLINE"] = "1"  # before anything imports evaluate (read at import time)
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from hubkit.evaluation import metrics
from hubkit.schema import CONDITIONS, LABEL_COLUMNS, SUBMISSION_COLUMNS, label_column

LN3 = math.log(3.0)  # 1.0986122886681098
LN1_5 = math.log(1.5)  # 0.4054651081081644
NEG_LN_1E7 = 16.11809565095832  # -ln(1e-7), the seed's "scaled by ~16.1"


@pytest.fixture(scope="module")
def offline_metrics():
    """Both local modules through evaluate.load, with any network connection attempt made an error."""
    real_connect = socket.socket.connect

    def no_network(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    socket.socket.connect = no_network
    try:
        loaded = {name: metrics.load_metric(name) for name in metrics.METRIC_NAMES}
    finally:
        socket.socket.connect = real_connect
    return loaded


@pytest.fixture(scope="module")
def rsna(offline_metrics):
    m = offline_metrics["rsna_lumbar_metric"]

    def score(row_ids, predictions, references):
        return m.compute(row_ids=list(row_ids), predictions=[list(map(float, p)) for p in predictions],
                         references=list(references))

    return score


@pytest.fixture(scope="module")
def cls(offline_metrics):
    m = offline_metrics["lumbar_classification"]

    def compute(predictions, references, conditions=None, **kw):
        conditions = conditions or ["canal"] * len(references)
        return m.compute(predictions=list(predictions), references=list(references), conditions=list(conditions), **kw)

    return compute


def rid(study, cond, level):
    return f"{study}_{label_column(cond, level)}"


def three_studies():
    """Study 1: spinal severe at L4L5; study 2: worst spinal = moderate; study 3: all normal. Others mixed."""
    labels = {}
    for s, spinal in ((1, [0, 1, 0, 2, 0]), (2, [0, 0, 1, 0, 0]), (3, [0, 0, 0, 0, 0])):
        lab = {label_column("canal", lv): y for lv, y in zip(("L1L2", "L2L3", "L3L4", "L4L5", "L5S1"), spinal)}
        for i, col in enumerate(LABEL_COLUMNS[5:]):
            lab[col] = (i + s) % 3
        labels[s] = lab
    return labels


def rows_from(labels_by_study, probs_fn):
    ids, probs, refs = [], [], []
    for s, lab in labels_by_study.items():
        for col in LABEL_COLUMNS:
            ids.append(f"{s}_{col}")
            refs.append(lab[col])
            probs.append(probs_fn(col, lab[col]))
    return ids, probs, refs


def sev(p_severe):
    """A spinal prediction with the given P(severe), rest split evenly."""
    return [(1 - p_severe) / 2, (1 - p_severe) / 2, p_severe]


# ---------------------------------------------------------------------------------------------- official metric
def test_perfect_confident_submission_scores_zero(rsna):
    ids, probs, refs = rows_from(three_studies(), lambda col, y: np.eye(3)[y])
    r = rsna(ids, probs, refs)
    assert r["rsna_score"] == pytest.approx(0.0, abs=1e-12)
    for part in ("rsna_spinal", "rsna_foraminal", "rsna_subarticular", "rsna_any_severe_spinal"):
        assert r[part] == pytest.approx(0.0, abs=1e-12)
    assert r["rsna_n_rows"] == 75 and r["rsna_n_studies"] == 3 and r["rsna_n_missing"] == 0


def test_uniform_submission_hand_computed(rsna):
    ids, probs, refs = rows_from(three_studies(), lambda col, y: [1 / 3, 1 / 3, 1 / 3])
    r = rsna(ids, probs, refs)
    for g in ("spinal", "foraminal", "subarticular"):
        assert r[f"rsna_{g}"] == pytest.approx(LN3, rel=1e-12)  # -ln(1/3) whatever the weights
    # any-severe: q = 1/3 everywhere. Study 1 severe (w 4, y 1): -ln(1/3); study 2 (w 2) and 3 (w 1), y 0: -ln(2/3).
    any_severe = (4 * LN3 + 2 * LN1_5 + 1 * LN1_5) / 7
    assert any_severe == pytest.approx(0.8015492113, abs=1e-10)
    assert r["rsna_any_severe_spinal"] == pytest.approx(any_severe, rel=1e-12)
    assert r["rsna_score"] == pytest.approx((3 * LN3 + any_severe) / 4, rel=1e-12)
    assert r["rsna_score"] == pytest.approx(1.0243465193, abs=1e-9)


def test_any_severe_spinal_two_studies(rsna):
    ids, probs, refs = [], [], []
    # study 10: severe at L4L5 -> y 1, w 4, q = max P(severe) = 0.6; study 20: worst moderate -> y 0, w 2, q 0.2.
    studies = ((10, [0, 0, 1, 2, 0], [0.1, 0.2, 0.3, 0.6, 0.1]), (20, [0, 1, 0, 0, 0], [0.05, 0.2, 0.1, 0.1, 0.1]))
    for s, ys, ps in studies:
        for lv, y, p in zip(("L1L2", "L2L3", "L3L4", "L4L5", "L5S1"), ys, ps):
            ids.append(rid(s, "canal", lv)), refs.append(y), probs.append(sev(p))
    r = rsna(ids, probs, refs)
    expected = (4 * -math.log(0.6) + 2 * -math.log(0.8)) / 6
    assert expected == pytest.approx(0.4149315996, abs=1e-9)
    assert r["rsna_any_severe_spinal"] == pytest.approx(expected, rel=1e-12)
    assert r["rsna_n_studies"] == 2
    assert r["rsna_foraminal"] is None and r["rsna_score"] is None  # a part without rows -> no total

    # The maximum runs over LABELLED spinal rows only: study 20's L5S1 (normal, P(severe) 0.1) made unlabelled
    # with P(severe) 0.9 leaves y, w and q of study 20 unchanged.
    probs2, refs2 = probs[:-1] + [sev(0.9)], refs[:-1] + [-1]
    assert rsna(ids, probs2, refs2)["rsna_any_severe_spinal"] == pytest.approx(expected, rel=1e-12)


def test_missing_labels_are_dropped(rsna, cls):
    labels = three_studies()
    rng = np.random.default_rng(0)
    table = {f"{s}_{c}": rng.dirichlet([1, 1, 1]).tolist() for s in labels for c in LABEL_COLUMNS}
    ids, probs, refs = rows_from(labels, lambda col, y: None)
    probs = [table[i] for i in ids]
    dropped = {ids[3], ids[30], ids[60]}  # a spinal, a foraminal and a subarticular row
    refs_missing = [-1 if i in dropped else y for i, y in zip(ids, refs)]
    keep = [i not in dropped for i in ids]
    with_missing = rsna(ids, probs, refs_missing)
    removed = rsna([i for i, k in zip(ids, keep) if k], [p for p, k in zip(probs, keep) if k],
                   [y for y, k in zip(refs, keep) if k])
    assert with_missing["rsna_n_missing"] == 3 and removed["rsna_n_missing"] == 0
    for key in ("rsna_score", "rsna_spinal", "rsna_foraminal", "rsna_subarticular", "rsna_any_severe_spinal"):
        assert with_missing[key] == pytest.approx(removed[key], rel=1e-14)
    assert with_missing["rsna_score"] != pytest.approx(rsna(ids, probs, refs)["rsna_score"], rel=1e-6)

    preds = [int(np.argmax(p)) for p in probs]
    a = cls(preds, refs_missing)
    b = cls([p for p, k in zip(preds, keep) if k], [y for y, k in zip(refs, keep) if k])
    assert a["n_missing"] == 3 and a["n"] == 72 and a.pop("n_missing") == 3 and b.pop("n_missing") == 0
    assert a == b


def test_left_right_pooled_into_one_group(rsna):
    # left foraminal: one severe row, P(severe) 1/4 -> loss 2 ln 2, weight 4
    # right foraminal: two normal rows, P(normal) 1/2 -> loss ln 2 each, weight 1
    ids = [rid(1, "lf", "L4L5"), rid(1, "rf", "L4L5"), rid(1, "rf", "L5S1")]
    probs = [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.5, 0.5, 0.0]]
    r = rsna(ids, probs, [2, 0, 0])
    pooled = (4 * 2 * math.log(2) + 2 * math.log(2)) / 6  # = 5/3 ln 2
    per_side_mean = (2 * math.log(2) + math.log(2)) / 2  # = 3/2 ln 2, what separate groups would give
    assert r["rsna_foraminal"] == pytest.approx(pooled, rel=1e-12)
    assert r["rsna_foraminal"] != pytest.approx(per_side_mean, rel=1e-3)
    assert r["rsna_spinal"] is None and r["rsna_subarticular"] is None


def test_severe_weight_is_four_not_three(rsna):
    # severe row: P(severe) = e^-1 -> loss 1; normal row: P(normal) = e^-2 -> loss 2.
    e1, e2 = math.exp(-1), math.exp(-2)
    ids = [rid(1, "canal", "L4L5"), rid(1, "canal", "L1L2")]
    r = rsna(ids, [sev(e1), [e2, (1 - e2) / 2, (1 - e2) / 2]], [2, 0])
    assert r["rsna_spinal"] == pytest.approx((4 * 1 + 1 * 2) / 5, rel=1e-12)  # 1.2; weight 3 would give 1.25
    # moderate weight 2: moderate row P(moderate) = e^-1 with the same normal row -> (2*1 + 1*2) / 3
    r = rsna(ids, [[(1 - e1) / 2, e1, (1 - e1) / 2], [e2, (1 - e2) / 2, (1 - e2) / 2]], [1, 0])
    assert r["rsna_spinal"] == pytest.approx(4 / 3, rel=1e-12)


def test_unnormalised_probabilities_are_renormalised(rsna):
    labels = three_studies()
    rng = np.random.default_rng(1)
    table = {f"{s}_{c}": rng.dirichlet([2, 1, 1]) for s in labels for c in LABEL_COLUMNS}
    ids, _, refs = rows_from(labels, lambda col, y: None)
    normal = rsna(ids, [table[i] for i in ids], refs)
    scales = rng.uniform(0.1, 50.0, size=len(ids))
    scaled = rsna(ids, [table[i] * k for i, k in zip(ids, scales)], refs)
    for key in ("rsna_score", "rsna_spinal", "rsna_foraminal", "rsna_subarticular", "rsna_any_severe_spinal"):
        assert scaled[key] == pytest.approx(normal[key], rel=1e-12)
    # [2, 1, 1] on a normal row is P(normal) = 1/2 after renormalisation
    assert rsna([rid(5, "canal", "L1L2")], [[2, 1, 1]], [0])["rsna_spinal"] == pytest.approx(math.log(2), rel=1e-12)


def test_invalid_predictions_are_rejected(rsna):
    for bad in ([-0.1, 0.5, 0.6], [float("nan"), 0.5, 0.5], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError):
            rsna([rid(1, "canal", "L1L2")], [bad], [0])
    with pytest.raises(ValueError):
        rsna(["1_unknown_condition_l1_l2"], [[1, 1, 1]], [0])


def test_hard_zero_probability_is_clipped_at_1e_15(rsna):
    r = rsna([rid(1, "canal", "L1L2")], [[0.0, 1.0, 0.0]], [0])
    assert r["rsna_spinal"] == pytest.approx(-math.log(1e-15), rel=1e-12)  # 34.54, not inf


def test_matches_pandas_sklearn_replica_of_kaggle_code(rsna):
    """The Kaggle metric's own steps (pandas groupby + sklearn log_loss) on random, well-inside-(0,1) data."""
    import pandas as pd
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(4)
    ids = [f"{s}_{c}" for s in range(100, 140) for c in LABEL_COLUMNS]
    refs = rng.choice(3, size=len(ids), p=[0.75, 0.17, 0.08])
    probs = rng.dirichlet([2, 1, 1], size=len(ids))
    sol = pd.DataFrame(np.eye(3)[refs], columns=list(SUBMISSION_COLUMNS))
    sub = pd.DataFrame(probs, columns=list(SUBMISSION_COLUMNS))
    sol["sample_weight"] = 2.0 ** refs
    sol["study_id"] = sub["study_id"] = [i.split("_")[0] for i in ids]
    groups = ("spinal", "foraminal", "subarticular")
    sol["condition"] = sub["condition"] = [next(g for g in groups if g in i) for i in ids]
    losses = []
    cols = list(SUBMISSION_COLUMNS)
    for g in groups:
        idx = sol.index[sol["condition"] == g]
        losses.append(log_loss(sol.loc[idx, cols].values, sub.loc[idx, cols].values,
                               sample_weight=sol.loc[idx, "sample_weight"].values))
    sp, sp_sub = sol[sol["condition"] == "spinal"], sub[sub["condition"] == "spinal"]
    losses.append(log_loss(sp.groupby("study_id")["severe"].max(), sp_sub.groupby("study_id")["severe"].max(),
                           sample_weight=sp.groupby("study_id")["sample_weight"].max(), labels=[0, 1]))
    r = rsna(ids, probs, refs)
    got = [r["rsna_spinal"], r["rsna_foraminal"], r["rsna_subarticular"], r["rsna_any_severe_spinal"]]
    assert got == pytest.approx(losses, rel=1e-10)
    assert r["rsna_score"] == pytest.approx(np.average(losses, weights=[1, 1, 1, 1.0]), rel=1e-10)


# ------------------------------------------------------------------------------------------ classification metric
def test_kappa_perfect_and_constant(cls):
    refs = [0, 0, 1, 2, 0, 1, 2, 2]
    perfect = cls(refs, refs)
    assert perfect["kappa"] == pytest.approx(1.0) and perfect["qwk"] == pytest.approx(1.0)
    assert perfect["accuracy"] == 1.0 and perfect["weighted_accuracy"] == 1.0 and perfect["f1_weighted"] == 1.0
    assert perfect["rsna_proxy"] == pytest.approx(0.0, abs=1e-6)
    constant = cls([0] * len(refs), refs)
    assert constant["kappa"] == 0.0 and constant["qwk"] == 0.0
    assert cls([0, 0], [0, 0])["kappa"] is None  # undefined, not NaN


def test_weighted_accuracy_and_proxy_by_hand(cls):
    # refs 0 0 1 2 / preds 0 1 1 0: right on rows 1 (w 1) and 3 (w 2) of total weight 1 + 1 + 2 + 4 = 8
    r = cls([0, 1, 1, 0], [0, 0, 1, 2])
    assert r["accuracy"] == 0.5
    assert r["weighted_accuracy"] == pytest.approx(3 / 8)
    assert r["recall_normal_mild"] == 0.5 and r["recall_moderate"] == 1.0 and r["recall_severe"] == 0.0
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert -math.log(1e-7) == pytest.approx(NEG_LN_1E7, rel=1e-14)
    assert r["rsna_proxy"] == pytest.approx(NEG_LN_1E7 * 5 / 8, abs=1e-6)  # 10.0738
    assert r["rsna_proxy"] == pytest.approx(NEG_LN_1E7 * (1 - r["weighted_accuracy"]), abs=1e-6)


def test_matches_sklearn_and_per_condition_keys(cls):
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

    rng = np.random.default_rng(2)
    refs = rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
    preds = np.where(rng.random(300) < 0.6, refs, rng.choice(3, size=300))
    conds = [CONDITIONS[i % 5] for i in range(300)]
    r = cls(preds.tolist(), refs.tolist(), conds, parse_failures=[True, False, False, False])
    w = 2.0 ** refs
    assert r["kappa"] == pytest.approx(cohen_kappa_score(refs, preds), rel=1e-12)
    assert r["qwk"] == pytest.approx(cohen_kappa_score(refs, preds, weights="quadratic"), rel=1e-12)
    assert r["f1_weighted"] == pytest.approx(f1_score(refs, preds, average="weighted"), rel=1e-12)
    assert r["weighted_accuracy"] == pytest.approx(accuracy_score(refs, preds, sample_weight=w), rel=1e-12)
    for i, c in enumerate(CONDITIONS):
        m = np.arange(300) % 5 == i
        assert r[f"kappa_{c}"] == pytest.approx(cohen_kappa_score(refs[m], preds[m]), rel=1e-12)
        assert r[f"n_{c}"] == 60 and np.asarray(r[f"confusion_matrix_{c}"]).sum() == 60
    assert np.asarray(r["confusion_matrix"]).sum() == r["n"] == 300
    assert r["parse_failure_rate"] == 0.25 and r["n_parse_failures"] == 1 and r["n_answers"] == 4


def test_module_constants_match_schema(offline_metrics):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_lc", metrics.metric_path("lumbar_classification"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.CONDITION_ORDER == CONDITIONS and mod.CLASS_NAMES == SUBMISSION_COLUMNS


# ----------------------------------------------------------------------------------------------------- helpers
def test_offline_load_and_paths(offline_metrics):
    import evaluate

    assert evaluate.config.HF_EVALUATE_OFFLINE
    for name in metrics.METRIC_NAMES:
        assert os.path.isfile(metrics.metric_path(name))
    assert type(offline_metrics["rsna_lumbar_metric"]).__name__ == "RsnaLumbarMetric"
    with pytest.raises(ValueError):
        metrics.metric_path("accuracy")


def test_study_rows_compute_all_submission_and_plots(tmp_path, offline_metrics, rsna):
    labels = three_studies()
    labels[2][LABEL_COLUMNS[7]] = None  # missing label
    rng = np.random.default_rng(3)
    rows = []
    for s, lab in labels.items():
        probs = {c: (rng.dirichlet([3, 1, 1]) * 5).tolist() for c in LABEL_COLUMNS}
        rows += metrics.study_rows(s, lab, probs=probs)
    assert len(rows) == 75 and rows[0]["row_id"] == "1_spinal_canal_stenosis_l1_l2"
    assert rows[0]["condition"] == "canal" and rows[0]["level"] == "L1L2"
    assert sum(rows[0]["probs"]) == pytest.approx(1.0) and rows[0]["prediction"] == int(np.argmax(rows[0]["probs"]))
    assert sum(r["reference"] == -1 for r in rows) == 1
    hard = metrics.study_rows(9, {}, preds={c: 2 for c in LABEL_COLUMNS})
    assert hard[0]["probs"] == [0.0, 0.0, 1.0] and hard[0]["reference"] == -1
    with pytest.raises(KeyError):
        metrics.study_rows(9, {}, preds={LABEL_COLUMNS[0]: 0})

    res = metrics.compute_all(rows, parse_failures=[False, False, True])
    assert res["n"] == 74 and res["n_missing"] == 1 and res["rsna_n_missing"] == 1
    assert res["parse_failure_rate"] == pytest.approx(1 / 3)
    for c in CONDITIONS:
        assert f"kappa_{c}" in res and f"confusion_matrix_{c}" in res
    assert set(res) >= {"kappa", "qwk", "weighted_accuracy", "f1_weighted", "accuracy", "rsna_proxy", "rsna_score"}

    sub = metrics.write_submission_csv(tmp_path / "submission.csv", rows)
    with sub.open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["row_id", *SUBMISSION_COLUMNS] and len(table) == 75
    assert all(abs(sum(float(t[k]) for k in SUBMISSION_COLUMNS) - 1) < 1e-12 for t in table)
    again = rsna([t["row_id"] for t in table], [[float(t[k]) for k in SUBMISSION_COLUMNS] for t in table],
                 [r["reference"] for r in rows])
    assert again["rsna_score"] == pytest.approx(res["rsna_score"], rel=1e-9)
    with pytest.raises(ValueError):
        metrics.write_submission_csv(tmp_path / "bad.csv", rows[:-1])

    pngs = metrics.plot_confusion_matrices(res, tmp_path / "figures")
    assert [p.name for p in pngs] == ["confusion_matrix.png"] + [f"confusion_matrix_{c}.png" for c in CONDITIONS]
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
