"""hubkit.cards.metadata: the cards hubkit renders pass; each kind of metadata the Hub refuses gives its one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubkit.cards import metadata
from hubkit.cards.dataset import render_dataset_card
from hubkit.cards.metadata import HUB_LICENSES, PIPELINE_TAGS, card_problems, card_warnings, check_card
from hubkit.cards.model import render_model_card
from hubkit.schema import CONDITIONS
from hubkit.slots import VIEWS
from tests.fixtures.records import eval_folder, run_folder

FT = {"kappa": 0.91, "qwk": 0.95, "weighted_accuracy": 0.9, "f1_weighted": 0.93, "accuracy": 0.96,
      "rsna_score": 0.23, "parse_failure_rate": 0.0, "n_studies": 12}
MANIFEST = {"schema_version": 1, "slice_size": 128, "picker": "coords", "synthetic": True, "views": list(VIEWS),
            "splits": {"train": 9, "validation": 1}, "images": {"train": 70, "validation": 8},
            "label_counts": {c: [40, 6, 3, 1] for c in CONDITIONS}, "studies_built": 10, "studies_skipped": 0,
            "build": {"data_dir": "cohort", "seed": 0, "validation_fraction": 0.1}, "hubkit_version": "0.1.0"}


# one model-index result; {dataset} and {metrics} vary
RESULT = "model-index:\n- name: x\n  results:\n  - task: {{type: t}}\n    dataset: {dataset}\n    metrics: {metrics}"


def _run(tmp_path: Path, base_model: str, with_eval: bool = True) -> tuple[Path, Path | None]:
    run = run_folder(tmp_path / "run", base_model, train_config={"lora_r": 16},
                     dataset={"repo_id": "me/lumbar-ds", "revision": "a" * 40, "manifest": MANIFEST})
    return run, eval_folder(tmp_path / "eval", FT) if with_eval else None


def _card(front: str, body: str = "# Card\n") -> str:
    return f"---\n{front.strip()}\n---\n{body}"


@pytest.mark.parametrize("base", ["google/medgemma-1.5-4b-it", "google/gemma-3-4b-it", "local-base-folder"])
@pytest.mark.parametrize("with_eval", [True, False])
def test_hubkit_model_cards_pass(tmp_path, base, with_eval):
    if base == "local-base-folder":  # a run trained from a folder: the Hub refuses a path as base_model
        (tmp_path / base).mkdir()
        base = str(tmp_path / base)
    run, ev = _run(tmp_path, base, with_eval)
    text = render_model_card(run, ev, "me/medgemma-lumbar")
    assert card_problems(text, "model") == [] and card_warnings(text, "model") == []
    check_card(text, "model")
    assert ("model-index:" in text) is with_eval and ("base_model:" in text) is ("/" in base and base[0] != "/")


@pytest.mark.parametrize("synthetic", [True, False])
@pytest.mark.parametrize("studies", [10, 5000])
def test_hubkit_dataset_cards_pass(synthetic, studies):
    manifest = {**MANIFEST, "synthetic": synthetic, "splits": {"train": studies - 1, "validation": 1}}
    for repo_id in ("me/lumbar-ds", None):
        text = render_dataset_card(manifest, repo_id=repo_id)
        assert card_problems(text, "dataset") == [], text[:600]


@pytest.mark.parametrize("front, rtype, expected", [
    ("license: not-a-licence", "model", '"license" "not-a-licence" is not a Hub license id'),
    ("license: MIT", "model", 'did you mean "mit"?'),
    ("license: [mit, apache-2.0]", "model", '"license" must be a string'),
    ("license: [mit, nope-1.0]", "dataset", '"license" "nope-1.0" is not a Hub license id'),
    ("license: other\nlicense_link: LICENSE", "model", '"license: other" needs "license_name"'),
    ("license: other\nlicense_name: My License\nlicense_link: LICENSE", "model",
     '"license_name" "My License" must be a lowercase slug'),
    ("license: other\nlicense_name: my-license-1.0", "model", '"license: other" needs "license_link"'),
    ("license: other\nlicense_name: x\nlicense_link: ftp://x.org/l", "model", '"license_link" "ftp://x.org/l" must'),
    ("license: other\nlicense_name: x\nlicense_link: ../LICENSE", "model", '"license_link" "../LICENSE" must'),
    ("base_model: /tmp/run/base", "model",
     '"base_model" with value "/tmp/run/base" is not valid. Use a model id from https://hf.co/models.'),
    ("base_model: [google/gemma-3-4b-it, 'not an id']", "model", '"base_model" with value "not an id" is not valid'),
    ("base_model: {a: 1}", "model", '"base_model" must be a model id or a list of model ids'),
    ("base_model: a/b\nbase_model_relation: distilled", "model",
     '"base_model_relation" "distilled" must be one of adapter, merge, quantized, finetune'),
    ("base_model_relation: adapter", "model", '"base_model_relation" needs "base_model"'),
    ("pipeline_tag: lumbar-classify", "model", '"pipeline_tag" "lumbar-classify" is not a Hub task id'),
    ("tags: medical", "model", '"tags" must be a list of strings'),
    ("tags: [medical, 3]", "dataset", '"tags" must be a list of strings'),
    ("datasets: me/ds", "model", '"datasets" must be a list of dataset ids'),
    ("datasets: [me/ds, 'a--b']", "model", '"datasets" entry "a--b" is not a valid dataset id'),
    ("model-index: {name: x}", "model", '"model-index" must be a list'),
    ("model-index:\n- results: []", "model", '"model-index[0].name" is required'),
    ("model-index:\n- name: x\n  results:\n  - dataset: {type: d, name: D}\n    metrics: [{type: acc, value: 1}]",
     "model", '"model-index[0].results[0].task" is required'),
    ("model-index:\n- name: x\n  results: [3]", "model", '"model-index[0].results[0]" must be a mapping'),
    (RESULT.format(dataset="{type: d, name: D}", metrics="[]"), "model",
     '"model-index[0].results[0].metrics" must list at least one'),
    (RESULT.format(dataset="{type: d}", metrics="[{type: a, value: 1}]"), "model",
     '"model-index[0].results[0].dataset.name" is required'),
    (RESULT.format(dataset="{type: d, name: D, config: 3}", metrics="[{type: a, value: 1}]"), "model",
     '"model-index[0].results[0].dataset.config" must be a string'),
    (RESULT.format(dataset="{type: d, name: D}", metrics="[{type: a}]"), "model",
     '"model-index[0].results[0].metrics[0].value" is required'),
    (RESULT.format(dataset="{type: d, name: D}", metrics="[{type: a, value: 1}]\n    source: {name: paper}"), "model",
     '"model-index" cannot be parsed'),
    ("size_categories: [n<1K, tiny]", "dataset",
     '"size_categories" "tiny" is not one of datasets\' values: unknown, n<1K'),
    ("task_categories: [image-text-to-text, lumbar]", "dataset", '"task_categories" "lumbar" is not a Hub task id'),
    ("license: mit\nlicense: apache-2.0", "model", 'duplicated mapping key "license"'),
    ("license: [mit", "model", "front matter is not valid YAML"),
    ("- license\n- mit", "model", "front matter must be a YAML mapping"),
])
def test_each_problem_has_its_line(front, rtype, expected):
    problems = card_problems(_card(front), rtype)
    assert len(problems) == 1 and expected in problems[0], problems
    assert "\n" not in problems[0]
    with pytest.raises(ValueError, match="^README.md metadata: ") as e:
        check_card(_card(front), rtype)
    assert expected in str(e.value)


def test_every_problem_is_reported_and_located():
    assert len(card_problems(_card("license: nope\npipeline_tag: nope\ntags: nope"), "model")) == 3
    dup = "\n---\nlicense: mit\ntags: [a]\nlicense: mit\n---\n"  # the client allows blank lines before ---
    assert "duplicated mapping key \"license\" at README.md line 5" in card_problems(dup, "model")[0]


def test_no_metadata_is_a_warning_not_a_problem():
    for text in ("# Just a title\n", "---\n---\n# Empty\n"):
        assert card_problems(text, "model") == []
        assert card_warnings(text, "model") == [metadata.MISSING_METADATA]
    with pytest.raises(ValueError, match="repo_type must be one of"):
        card_problems("# x\n", "bucket")


def test_size_categories_skipped_without_datasets(monkeypatch):
    monkeypatch.setattr(metadata, "dataset_size_categories", lambda: None)
    assert card_problems(_card("size_categories: [tiny]"), "dataset") == []


def test_vocabularies_hold_what_hubkit_uses():
    assert {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-nc-4.0", "gemma", "llama3", "other", "unknown"} \
        <= HUB_LICENSES
    assert {"image-text-to-text", "text-generation", "image-classification"} <= PIPELINE_TAGS
    assert {"n<1K", "1K<n<10K", "unknown"} <= set(metadata.dataset_size_categories())


def test_dataset_size_category_follows_the_row_count():
    from hubkit.cards.dataset import size_category

    got = [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 250_000, 10**12)]
    assert got == ["n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "n>1T"]
    assert set(got) <= set(metadata.dataset_size_categories())
