"""`hubkit card`: rendered from fixture files only; all-fields and missing-fields variants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hubkit.cards.model import render_model_card, write_model_card
from tests.fixtures.records import eval_folder, run_folder

FT = {"kappa": 0.9123, "qwk": 0.95, "weighted_accuracy": 0.9, "f1_weighted": 0.93, "accuracy": 0.96,
      "rsna_score": 0.2345, "rsna_proxy": 1.61, "parse_failure_rate": 0.0, "kappa_canal": 0.97, "kappa_lf": 0.88,
      "kappa_rf": 0.86, "kappa_ls": 0.93, "kappa_rs": 0.91, "n_studies": 12, "_timestamp": "x"}
BASE = {"kappa": 0.0, "qwk": 0.0, "weighted_accuracy": 0.41, "f1_weighted": 0.7, "accuracy": 0.8,
        "rsna_score": 1.2, "rsna_proxy": 9.5, "parse_failure_rate": 0.0, "kappa_canal": 0.0, "kappa_lf": 0.0,
        "kappa_rf": 0.0, "kappa_ls": 0.0, "kappa_rs": 0.0, "n_studies": 12}
MANIFEST = {"schema_version": 1, "slice_size": 160, "picker": "geometry", "synthetic": True,
            "label_counts": {c: [90, 7, 3, 0] for c in ("canal", "lf", "rf", "ls", "rs")}}


def _run_dir(tmp_path: Path, with_eval: bool = True, with_manifest: bool = True) -> tuple[Path, Path | None]:
    ds_dir = tmp_path / "ds"
    ds_dir.mkdir()
    run = run_folder(
        tmp_path / "run", "google/medgemma-1.5-4b-it", adapter=True,
        train_config={"learning_rate": 0.003, "lora_r": 16, "backend": "trl"}, vision_input_size=896,
        quantized_4bit=True,
        base_model_card={"license": "other", "license_name": "health-ai-developer-foundations",
                         "license_link": "https://developers.google.com/health-ai-developer-foundations/terms",
                         "tags": ["medical", "gemma"]} if with_manifest else None,
        dataset={"source": str(ds_dir), "kind": "local", "path": str(ds_dir), "fingerprint": "abc123",
                 "train_rows": 108, "validation_rows": 12, "oversample": "",
                 "manifest": MANIFEST if with_manifest else None},
        backend="trl", max_length=512, planned_steps=1000, global_step=1000, stopped_early=False,
        first_eval_loss=2.5, best_eval_loss=0.1234, best_checkpoint="checkpoint-900", train_runtime_s=420.0,
        versions={"transformers": "5.17.0", "peft": "0.21.2", "unsloth": None})
    if not with_eval:
        return run, None
    return run, eval_folder(tmp_path / "eval", FT, BASE, slices={"picker": "coords", "slice_size": 160},
                            figures=True)


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _assert_well_formed(text: str) -> None:
    """No section left with a heading and nothing under it, and no run of blank lines a skipped block leaves."""
    for name, body in _sections(text).items():
        assert body.strip(), f"empty section {name!r}"
    assert "\n\n\n" not in text


def test_all_fields(tmp_path):
    run, ev = _run_dir(tmp_path)
    text = render_model_card(run, ev, "me/medgemma-lumbar")
    card = ModelCard(text)
    data = card.data
    assert data.library_name == "peft" and data.pipeline_tag == "image-text-to-text"
    assert data.base_model == "google/medgemma-1.5-4b-it" and data.license == "other"
    assert {"medical", "radiology", "lora", "qlora", "gemma"} <= set(data.tags)  # ours + the base card's
    assert data.license_name == "health-ai-developer-foundations" and data.license_link.startswith("https://")
    by_type = {r.metric_type: r.metric_value for r in data.eval_results}
    assert by_type["cohen_kappa"] == round(FT["kappa"], 4) and by_type["rsna_lumbar_metric"] == FT["rsna_score"]
    # The numbers in the tables are those of the files.
    assert "| Cohen's κ (overall) | 0.000 | 0.912 |" in text
    assert "| Official RSNA 2024 score (weighted log-loss, lower is better) | 1.200 | 0.234 |" in text
    assert "| Spinal Canal Stenosis | 0.00 | 0.97 |" in text
    assert "| Parse failure rate | 0.0% | 0.0% |" in text
    assert 'pipeline("lumbar-classify", model="me/medgemma-lumbar")' in text
    assert "not for diagnostic use" in text.lower()
    assert "| Spinal Canal Stenosis | 90 (90.0%)" in text  # label table from the dataset's manifest
    # the build's facts, read from the manifest the run recorded, never re-defaulted
    assert "picked with `geometry` by `hubkit build-dataset`, stored at 160×160" in text
    assert "reads\n  them at 160×160" in text and "(896×896)" in text
    assert "picked with `coords` at 160×160); consumers' DICOM folders are picked with\n`geometry`" in text
    assert "![Confusion matrix (all conditions)](card_assets/confusion_matrix.png)" in text
    assert "**synthetic**" in text
    assert "`learning_rate` | `0.003` | `0.0002`" in text
    _assert_well_formed(text)


def test_missing_fields_are_omitted_not_invented(tmp_path):
    run, _ = _run_dir(tmp_path, with_eval=False, with_manifest=False)
    text = render_model_card(run, None, None)
    data = ModelCard(text).data
    assert not data.eval_results
    assert data.license == "unknown" and "declares no licence" in text  # never guessed from the base's name
    assert "## Evaluation" not in text and "Label distribution" not in text and "**synthetic**" not in text
    assert "448" not in text and "stored at" not in text  # no slice size invented when the dataset recorded none
    _assert_well_formed(text)
    assert "None" not in re.sub(r"`[^`]*`", "", text.split("---", 2)[2])


def test_missing_run_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        render_model_card(tmp_path)


def test_push_updates_only_card_files(tmp_path, local_hub):
    from huggingface_hub import HfApi

    run, ev = _run_dir(tmp_path)
    write_model_card(run, ev, "owner/card-only", push=True)
    api = HfApi(token=local_hub.owner_token)
    files = set(api.list_repo_files("owner/card-only")) - {".gitattributes"}  # the repo's initial commit
    assert files == {"README.md", "card_assets/confusion_matrix.png", "card_assets/confusion_matrix_canal.png",
                     "hubkit_evaluation.json"}  # the card, its figures and the evaluation it shows
    assert api.repo_info("owner/card-only").private
    readme = api.hf_hub_download("owner/card-only", "README.md", cache_dir=str(tmp_path / "cache"))
    assert Path(readme).read_text() == (run / "README.md").read_text()


def test_card_install_line_and_snippet_without_hubkit(tmp_path, monkeypatch):
    """The card's transformers + peft snippet, run as written, generates exactly what hubkit's seed path does."""
    import shutil

    from hubkit.inference.generate import free_generate
    from hubkit.inference.loading import load_model
    from hubkit.slots import VIEWS
    from tests.fixtures.tiny_run import _images, trained_tiny_run

    run, base = trained_tiny_run()
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    text = render_model_card(copy, None, str(copy))
    assert "OWNER/NAME" not in text and str(base) not in text  # a local base is named by its folder only
    monkeypatch.chdir(base.parent)  # where that name leads
    snippet = re.search(r"Without hubkit.*?```python\n(.*?)```", text, flags=re.S).group(1)
    assert "import hubkit" not in snippet and "images = [...]" in snippet
    images = _images(len(VIEWS), 7)
    printed = []
    exec(snippet.replace("images = [...]", "images = __images__"),  # noqa: S102 - the card's own code
         {"__images__": images, "print": printed.append})
    from transformers import AutoProcessor

    model, processor = load_model(copy), AutoProcessor.from_pretrained(copy)
    seed = free_generate(model, processor, [{"images": images, "views": list(VIEWS)}], max_new_tokens=200)[0]
    assert printed == [seed.text]


def test_calibration_shows_raw_and_calibrated_scores_only_when_present(tmp_path):
    from hubkit.eval_record import write_results
    from hubkit.inference.calibration import Calibration
    from hubkit.run_record import write_calibration

    run, ev = _run_dir(tmp_path)
    plain = render_model_card(run, ev, "me/m")
    assert "## Calibration" not in plain and "calibrated" not in plain
    write_calibration(run, Calibration(t_spinal=1.2, t_foraminal=0.9, t_subarticular=1.1, severe_spinal_scale=1.3,
                                       split="validation", dataset="me/lumbar-ds", n_studies=30, score_raw=0.61,
                                       score_calibrated=0.55))
    only_fit = render_model_card(run, ev, "me/m")  # an evaluation made before calibrating: its single row stays
    assert "| `validation` of `me/lumbar-ds` (fitted here) | 30 | 0.610 | 0.550 |" in only_fit
    assert "(evaluated)" not in only_fit and "| Official RSNA 2024 score (weighted log-loss" in only_fit
    assert "(spinal 1.2, foraminal 0.9, subarticular 1.1) and a scale of 1.3" in only_fit
    write_results(ev, "finetuned", {**FT, "calibrated": True, "rsna_score_raw": 0.31, "split": "test",
                                    "dataset_id": "me/held-out"})
    text = render_model_card(run, ev, "me/m")
    assert "| Official RSNA 2024 score, raw probabilities (lower is better) | 1.200 | 0.310 |" in text
    assert "| Official RSNA 2024 score, calibrated (`calibration.json`) | – | 0.234 |" in text
    assert "| `test` of `me/held-out` (evaluated) | 12 | 0.310 | 0.234 |" in text
    _assert_well_formed(text)


def test_cards_define_their_words_and_cite_as_the_base_and_dataset_cards_do(tmp_path):
    from hubkit.cards.citation import HUBKIT, RSNA, citation_of
    from hubkit.cards.dataset import render_dataset_card

    base_cite = "@article{sellergren2025medgemma,\n  title={MedGemma Technical Report}\n}"
    ds_cite = "@misc{someds, title={Some lumbar dataset}}"
    assert citation_of(f"# Base\n\n## Citation\n\n```bibtex\n{base_cite}\n```\n\n## Next\n") == base_cite
    assert citation_of("# Card\n\n## Use\n\n```python\nx = 1\n```\n") is None
    run = run_folder(tmp_path / "run", "google/medgemma-1.5-4b-it", adapter=True,
                     base_model_card={"license": "other", "citation": base_cite},
                     dataset={"repo_id": "me/ds", "manifest": MANIFEST, "citation": ds_cite})
    text = render_model_card(run, None, "me/m")
    cites = text.split("## Citation", 1)[1]
    assert base_cite in cites and ds_cite in cites and HUBKIT in cites  # as their own cards give them
    manifest = {**MANIFEST, "views": ["Sagittal T2"], "splits": {"train": 9}, "images": {"train": 9}}
    for synthetic in (True, False):
        card = render_dataset_card({**manifest, "synthetic": synthetic}, "me/lumbar-ds")
        for section in ("## Limitations", "## De-identification", "## Citation"):
            assert section in card, section
        assert (RSNA[0] in card) is (not synthetic) and card.startswith("---") and "\n# lumbar-ds\n" in card
        _assert_well_formed(card)
    for card in (text, render_dataset_card(manifest, "me/lumbar-ds")):  # no jargon a Hub reader cannot look up
        assert not re.search(r"\bthe seed\b|\bseed's\b|\bseed (recipe|proxy|prompt)\b", card, re.I)
