"""`hubkit card`: the adapter's README.md, a pure function of files: the run record (`hubkit.run_record`), the
evaluation it shows (`hubkit.eval_record`: an evaluation folder, or the summary of one the run folder keeps) and
the calibration.

    >>> from hubkit.cards.model import write_model_card
    >>> write_model_card("runs/a", eval_dir="runs/a/eval", repo_id="me/medgemma-lumbar")

Unknown facts are left out (a section whose inputs are missing is skipped), never invented; a local path is named
by its folder only.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from hubkit import eval_record, run_record
from hubkit._imports import DISTRIBUTION, SOURCE_URL
from hubkit.cards.citation import HUBKIT, unique
from hubkit.schema import CONDITION_TITLES, CONDITIONS, GROUPS, build_prompt
from hubkit.slots import VIEWS
from hubkit.sources import display_name

ASSETS = "card_assets"
# (key in the results, row name in the table, format)
METRIC_ROWS = (
    ("kappa", "Cohen's κ (overall)", "{:.3f}"),
    ("qwk", "Quadratic-weighted κ", "{:.3f}"),
    ("weighted_accuracy", "Weighted accuracy ([1,2,4] weights)", "{:.3f}"),
    ("f1_weighted", "F1 (weighted)", "{:.3f}"),
    ("accuracy", "Raw accuracy", "{:.3f}"),
    ("rsna_score", "Official RSNA 2024 score (weighted log-loss, lower is better)", "{:.3f}"),
    ("rsna_proxy", "Hard-label RSNA proxy, the reference recipe's metric (lower is better)", "{:.3f}"),
    ("parse_failure_rate", "Parse failure rate", "{:.1%}"),
)
# With calibration applied, the official score's row splits in two.
RAW_SCORE_ROW = "Official RSNA 2024 score, raw probabilities (lower is better)"
CALIBRATED_SCORE_ROW = "Official RSNA 2024 score, calibrated (`calibration.json`)"
# model-index entries: (key, metric type, metric name)
INDEX_METRICS = (("kappa", "cohen_kappa", "Cohen's kappa"), ("qwk", "quadratic_weighted_kappa", "QWK"),
                 ("weighted_accuracy", "weighted_accuracy", "Weighted accuracy"),
                 ("f1_weighted", "f1", "F1 (weighted)"), ("accuracy", "accuracy", "Accuracy"),
                 ("rsna_score", "rsna_lumbar_metric", "RSNA 2024 weighted log-loss"))


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _label_section(manifest: dict) -> list[dict] | None:
    """The label table's rows from the dataset's manifest (its counts; percentages of the graded labels)."""
    counts = manifest.get("label_counts")
    if not counts:
        return None
    rows = []
    for c in CONDITIONS:
        n, m, s, miss = counts[c]
        tot = n + m + s
        pct = [f"{100.0 * v / tot:.1f}%" if tot else "–" for v in (n, m, s)]
        rows.append({"name": CONDITION_TITLES[c], "n": n, "m": m, "s": s, "missing": miss, "pn": pct[0],
                     "pm": pct[1], "ps": pct[2]})
    return rows


def _non_default(train_config: dict) -> list[dict]:
    from hubkit.config import TrainConfig, config_to_dict

    defaults = config_to_dict(TrainConfig())
    return [{"name": k, "value": v, "default": defaults.get(k)} for k, v in train_config.items()
            if k in defaults and v != defaults[k]]


# The card's own tags; the base model's tags (from its card) are added, and "qlora" only for a 4-bit base.
TAGS = ["medical", "radiology", "mri", "lumbar-spine", "rsna-2024", "lora", "hubkit"]


def _license(base_card: dict | None) -> dict:
    """The adapter inherits its base model's terms: the licence its card declares, else "unknown" (never guessed)."""
    if not base_card or not base_card.get("license"):
        return {"license": "unknown"}
    return {k: base_card[k] for k in ("license", "license_name", "license_link") if base_card.get(k)}


def _tags(base_card: dict | None, quantized: bool) -> list[str]:
    extra = [t for t in (base_card or {}).get("tags") or [] if isinstance(t, str)]
    return list(dict.fromkeys(TAGS + (["qlora"] if quantized else []) + extra))


def _hub_repo(base_model: str) -> str | None:
    """`base_model` when it names a Hub repo (a local folder cannot be linked from a card)."""
    from hubkit.sources import locate

    try:
        return locate(base_model, "base model").repo_id if base_model else None
    except FileNotFoundError:  # neither a folder nor a repo id: nothing to link
        return None


def _evaluation(run: Path, eval_dir: str | Path | None) -> tuple[dict, dict[str, dict]]:
    """(how the evaluation was made, {variant: metrics}) of EVAL_DIR, else of the summary the run folder keeps."""
    if eval_dir is not None:
        record = eval_record.read_eval(eval_dir)
        made = {"split": record.split, "slices": record.slices} if record is not None else {}
        return made, eval_record.read_results(eval_dir)
    return eval_record.read_snapshot(run) or ({}, {})


def build_card_context(run_dir: str | Path, eval_dir: str | Path | None = None,
                       repo_id: str | None = None) -> dict[str, Any]:
    """Plain values for the template (no Markdown layout here) + `card_data` for the YAML front matter.

    Without `repo_id` the card says where it goes as `OWNER/NAME`: a push always renders it again for its repo.
    """
    from hubkit.hub import repo_url

    run = Path(run_dir)
    rec = run_record.read_run(run)
    if rec is None:
        raise FileNotFoundError(f"{run}: not a run folder (no run record); is it a `hubkit train` output?")
    ds, base_model = rec.dataset, rec.base_model
    dataset_id = ds.repo_id or (Path(ds.path).name if ds.path else None)
    manifest = rec.manifest  # the build's facts, copied into the run by `hubkit train`
    views = list(manifest.get("views") or VIEWS)
    made, results = _evaluation(run, eval_dir)
    ft, base = results.get("finetuned"), results.get("base")
    repo = repo_id or "OWNER/NAME"
    base_repo = _hub_repo(base_model)
    ctx: dict[str, Any] = {
        "title": repo.split("/")[-1], "repo_id": repo,
        "base_model": base_model if base_repo else display_name(base_model),
        "base_model_url": repo_url(base_model) if base_repo else None,
        "dataset_id": dataset_id, "dataset_url": repo_url(ds.repo_id, "dataset") if ds.repo_id else None,
        "dataset_revision": ds.revision,
        "dataset_fingerprint": ds.fingerprint if isinstance(ds.fingerprint, str) else None,
        "train_rows": ds.train_rows, "validation_rows": ds.validation_rows,
        "oversample": ds.oversample or None, "label_rows": _label_section(manifest),
        "synthetic": bool(manifest.get("synthetic")),
        "picker": manifest.get("picker"), "slice_size": manifest.get("slice_size"),
        "n_images": len(views), "crop": _crop(manifest), "localizer": _localizer(manifest, run),
        "vision_input_size": rec.vision_input_size,
        "eval_picker": (made.get("slices") or {}).get("picker"),
        "eval_slice_size": (made.get("slices") or {}).get("slice_size"),
        "backend": rec.backend, "global_step": rec.global_step,
        "planned_steps": rec.planned_steps, "stopped_early": rec.stopped_early,
        "max_length": rec.max_length,
        "train_runtime": f"{rec.train_runtime_s / 60:.1f} min" if rec.train_runtime_s else None,
        "first_eval_loss": _fmt(rec.first_eval_loss, "{:.4f}"),
        "best_eval_loss": None if rec.best_eval_loss is None else f"{rec.best_eval_loss:.4f}",
        "best_checkpoint": rec.best_checkpoint,
        "hyperparameters": _non_default(rec.train_config),
        "versions": ", ".join(f"{k} {v}" for k, v in rec.versions.items() if v),
        "has_eval": ft is not None, "has_base": base is not None,
        "install_name": DISTRIBUTION, "source_url": SOURCE_URL, "wheel": _wheel(run),
        "citations": _citations(rec, base_model, repo_url(base_model) if base_repo else None),
        "views_literal": json.dumps(views),
        "prompt_literal": json.dumps(build_prompt(views)),
    }
    if ft is not None:
        ctx["eval_split"] = ft.get("split", made.get("split"))
        ctx["eval_studies"] = ft.get("n_studies", ft.get("rsna_n_studies", "–"))
        ctx["metric_rows"] = _metric_rows(ft, base)
        ctx["condition_rows"] = [{"name": CONDITION_TITLES[c], "finetuned": _fmt(ft.get(f"kappa_{c}"), "{:.2f}"),
                                  "base": _fmt((base or {}).get(f"kappa_{c}"), "{:.2f}")} for c in CONDITIONS]
        ctx["confusion_images"] = [{"alt": f"Confusion matrix ({_which(p)})", "path": f"{ASSETS}/{p.name}"}
                                   for p in _confusion_pngs(run, eval_dir)]
    cal = run_record.read_calibration(run)
    ctx.update(_calibration_context(cal.to_dict() if cal is not None else None, ft))
    ctx["card_data"] = _card_data(ctx, base_model, ds, ft, rec)
    ctx["license_note"] = None if (rec.base_model_card or {}).get("license") else (
        "the base model's card declares no licence, so this card cannot state one")
    return ctx


def _crop(manifest: dict) -> dict | None:
    """A crops dataset's crop facts, for the card's input section (None for whole slices)."""
    crop = manifest.get("crop")
    if not crop:
        return None
    cells = "as one 2×2 mosaic image per level" if crop.get("layout") == "mosaic" else "each its own image"
    return {"layout": crop.get("layout"), "rule": str(crop.get("rule", "")).capitalize(),
            "what": f"the canal on the sagittal T2, each foramen on the sagittal T1, both recesses on the axial T2, "
                    f"{cells} ({crop.get('crop_px')} px a crop)"}


def _localizer(manifest: dict, run: Path) -> dict | None:
    """The localiser a crops dataset was cut with and the run ships: its name, hash, out-of-fold errors and the
    picture of one study (None for crops at the annotators' points, or whole slices)."""
    from hubkit.cards.localizer import error_rows
    from hubkit.localizer import EXAMPLE_FILE, FOLDER, picture_to_publish

    loc = manifest.get("localizer")
    if not loc:
        return None
    m = loc.get("metrics") or {}
    # the picture is a training image: shown (and pushed: `publish`) only where it may be published
    picture = (run / FOLDER / EXAMPLE_FILE).is_file()
    shown = picture_to_publish(run / FOLDER, bool(manifest.get("synthetic"))) is not None
    return {"source": loc.get("source"), "digest": str(loc.get("digest", ""))[:12], "folder": FOLDER,
            "rows": [{"name": k, "value": v} for k, v in error_rows(m)], "points": m.get("points"),
            "picture": f"{FOLDER}/{EXAMPLE_FILE}" if shown else None,
            "picture_kept": f"{FOLDER}/{EXAMPLE_FILE}" if picture and not shown else None}


def _wheel(run: Path) -> str | None:
    """The hubkit wheel a push put beside the adapter (`hubkit.packaging`), which the card then installs."""
    from hubkit.run_record import WHEEL_PATTERN

    found = sorted(run.glob(WHEEL_PATTERN))
    return found[-1].name if found else None


def _citations(rec, base_model: str, base_url: str | None) -> list[str]:
    """hubkit's, the base model's and the dataset's citations, as their own cards give them; a base model whose
    card gives none is cited by its Hub page."""
    base = (rec.base_model_card or {}).get("citation")
    if base is None and base_url:
        base = f"@misc{{base_model,\n  title = {{{base_model}}},\n  url   = {{{base_url}}}\n}}"
    return unique([HUBKIT, base, rec.dataset.citation])


def _metric_rows(ft: dict, base: dict | None) -> list[dict]:
    """The metrics table; with calibration applied, the official score shows twice: raw and calibrated."""
    rows = []
    for k, name, f in METRIC_ROWS:
        if ft.get(k) is None:
            continue
        if k == "rsna_score" and ft.get("calibrated") and ft.get("rsna_score_raw") is not None:
            raw_base = (base or {}).get("rsna_score_raw", (base or {}).get("rsna_score"))
            rows.append({"name": RAW_SCORE_ROW, "finetuned": _fmt(ft["rsna_score_raw"], f), "base": _fmt(raw_base, f)})
            rows.append({"name": CALIBRATED_SCORE_ROW, "finetuned": _fmt(ft[k], f), "base": "–"})
            continue
        rows.append({"name": name, "finetuned": _fmt(ft.get(k), f), "base": _fmt((base or {}).get(k), f)})
    return rows


def _calibration_context(cal: dict | None, ft: dict | None) -> dict[str, Any]:
    """The calibration section: its parameters and the official score raw / calibrated where it was fitted and on
    the evaluated split (when that evaluation applied it). Nothing when the run has no calibration.json."""
    if not cal or cal.get("score_raw") is None:
        return {"calibration": None}
    temps = ", ".join(f"{g} {cal[f't_{g}']:.3g}" for g in GROUPS if f"t_{g}" in cal)
    split = cal.get("split") or "validation"
    fitted_on = f"`{split}`" + (f" of `{display_name(cal['dataset'])}`" if cal.get("dataset") else "")
    rows = [{"set": f"{fitted_on} (fitted here)", "studies": cal.get("n_studies", "–"),
             "raw": _fmt(cal.get("score_raw"), "{:.3f}"), "calibrated": _fmt(cal.get("score_calibrated"), "{:.3f}")}]
    if ft is not None and ft.get("calibrated") and ft.get("rsna_score_raw") is not None:
        evaluated = f"`{ft.get('split', 'validation')}`" + (
            f" of `{display_name(ft['dataset_id'])}`" if ft.get("dataset_id") else "")
        rows.append({"set": f"{evaluated} (evaluated)", "studies": ft.get("n_studies", "–"),
                     "raw": _fmt(ft["rsna_score_raw"], "{:.3f}"), "calibrated": _fmt(ft.get("rsna_score"), "{:.3f}")})
    return {"calibration": {"temperatures": temps, "scale": f"{cal.get('severe_spinal_scale', 1.0):.3g}",
                            "fitted_on": fitted_on, "n_studies": cal.get("n_studies"), "rows": rows}}


def _confusion_pngs(run: Path, eval_dir: str | Path | None) -> list[Path]:
    """The fine-tuned model's confusion-matrix figures: the evaluation folder's, else the copies beside the card."""
    if eval_dir is not None:
        return eval_record.confusion_pngs(eval_dir, "finetuned")
    return sorted((run / ASSETS).glob("confusion_matrix*.png"))


def _which(p: Path) -> str:
    return p.stem.replace("confusion_matrix", "").strip("_") or "all conditions"


def _card_data(ctx: dict, base_model: str, ds, ft: dict | None, rec):
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = []
    if ft is not None:
        for key, mtype, mname in INDEX_METRICS:
            if ft.get(key) is None:
                continue
            eval_results.append(EvalResult(
                task_type="image-text-to-text", task_name="Lumbar spine degenerative classification",
                dataset_type=ds.repo_id or "local", dataset_name=ctx["dataset_id"] or "local dataset",
                dataset_split=ctx.get("eval_split") or "validation", dataset_revision=ds.revision,
                metric_type=mtype, metric_name=mname, metric_value=round(float(ft[key]), 4)))
    base_repo = _hub_repo(base_model)
    return ModelCardData(
        base_model=base_repo, datasets=[ds.repo_id] if ds.repo_id else None,
        library_name="peft", pipeline_tag="image-text-to-text",
        tags=_tags(rec.base_model_card, rec.quantized_4bit),
        model_name=ctx["repo_id"] if eval_results else None, eval_results=eval_results or None,
        base_model_relation="adapter" if base_repo else None, **_license(rec.base_model_card),
    )


def render_model_card(run_dir: str | Path, eval_dir: str | Path | None = None, repo_id: str | None = None) -> str:
    """README.md text of the adapter (YAML front matter with `model-index` + the template's sections)."""
    from huggingface_hub import ModelCard

    ctx = build_card_context(run_dir, eval_dir, repo_id)
    template = resources.files("hubkit.cards").joinpath("model_card.md").read_text()
    card_data = ctx.pop("card_data")
    text = str(ModelCard.from_template(card_data, template_str=template, **ctx))
    return re.sub(r"\n{3,}", "\n\n", text)


def write_model_card(run_dir: str | Path, eval_dir: str | Path | None = None, repo_id: str | None = None,
                     push: bool = False, private: bool = True) -> Path:
    """Write RUN_DIR/README.md; with `eval_dir`, the run folder keeps that evaluation's summary and figures (the
    card shows it from then on, also when a later push renders it again). With `push` (needs `repo_id`), publish
    only the card's files, in one commit (`hubkit.publish`)."""
    run = Path(run_dir)
    if push and not repo_id:
        raise ValueError("pushing the card requires a repo id (--push OWNER/NAME)")
    if eval_dir is not None:  # the figures and the summary travel with the card: copy them where it reads them
        eval_record.write_snapshot(run, eval_dir)
        pngs = eval_record.confusion_pngs(eval_dir, "finetuned")
        if pngs:
            (run / ASSETS).mkdir(exist_ok=True)
        for p in pngs:
            shutil.copy2(p, run / ASSETS / p.name)
    path = run / "README.md"
    path.write_text(render_model_card(run, eval_dir, repo_id))
    if push:
        from hubkit.publish import push_run_folder

        push_run_folder(run, repo_id, private=private, files="card")
    return path
