"""The demo Space's app: upload a zipped DICOM study, see what the model says and what it saw.

    python -m hubkit.space.app --model me/lumbar-medgemma      # http://127.0.0.1:7860
    from hubkit.space.app import build_app; build_app("me/lumbar-medgemma").launch()

The work is `report` (no Gradio in it, so it is tested without a browser): the zip is unpacked safely, its one study
found, and `pipeline("lumbar-classify")` run on it with `return_images=True`; out come the 25 fields as table rows
(grade and probabilities, calibrated when the model ships a calibration), the images the model was given labelled by
slot, the sagittal slices with the points the model's localiser placed, and the notes in words. Anything it cannot
read is one sentence (`StudyError`), shown as such, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

from hubkit.schema import CODES, CONDITION_TITLES, CONDITIONS, LEVEL_TITLES, LEVELS

HEADERS = ("Condition", "Level", "Grade", "P(normal/mild)", "P(moderate)", "P(severe)")
MAX_UNPACKED = 2 * 1024 ** 3  # a study is tens of MB; refuse a zip that would unpack beyond this
log = logging.getLogger("hubkit")
SAGITTAL = {"Spinal Canal Stenosis": "canal", "Left Neural Foraminal Narrowing": "left foramen",
            "Right Neural Foraminal Narrowing": "right foramen"}


class StudyError(ValueError):
    """A study the app cannot read: its message is one sentence for the user."""


def study_folder(upload: str | os.PathLike, work: str | os.PathLike) -> Path:
    """Unpack UPLOAD (a zip) under WORK and return its one study folder: the folder whose sub-folders (the series)
    hold the DICOM files. Raises StudyError saying what is wrong with the zip."""
    upload, work = Path(upload), Path(work)
    if not zipfile.is_zipfile(upload):
        raise StudyError(f"{upload.name} is not a zip file: zip the study's folder (one sub-folder per series).")
    with zipfile.ZipFile(upload) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_UNPACKED:
            raise StudyError(f"{upload.name} unpacks to more than {MAX_UNPACKED // 1024 ** 3} GB: upload one study.")
        root = (work / upload.stem).resolve()  # a zip of the series themselves: the study is named after the zip
        for m in members:  # never outside WORK, whatever the names in the zip say
            target = (root / m.filename).resolve()
            if root not in target.parents:
                raise StudyError(f"{upload.name} names a file outside its own folder ({m.filename}): not a study.")
        zf.extractall(root, members)
    from hubkit.dataset_builder.dicom import is_dicom_file

    series = {p.parent for p in root.rglob("*") if p.is_file() and is_dicom_file(p)}
    if not series:
        raise StudyError(f"{upload.name} holds no DICOM files: zip the study's folder of series folders.")
    if root in series:
        raise StudyError(f"{upload.name} holds DICOM files without series folders: zip the study's folder, with "
                         "one sub-folder per series.")
    studies = {s.parent for s in series}
    if len(studies) > 1:
        raise StudyError(f"{upload.name} holds {len(studies)} studies ({', '.join(sorted(s.name for s in studies))})"
                         ": upload one at a time.")
    return studies.pop()


def table_rows(out: dict) -> list[list[Any]]:
    """The 25 fields of a pipeline output, condition by condition (the competition's row order): title, level,
    grade, and the three probabilities to three decimals."""
    rows = []
    for c in CONDITIONS:
        for lv in LEVELS:
            field = out["levels"][lv][c]
            rows.append([CONDITION_TITLES[c], LEVEL_TITLES[lv], field["severity"],
                         *(round(float(field["probs"][code]), 3) for code in CODES)])
    return rows


def notes_markdown(out: dict) -> str:
    """What the user should know beside the grades, in words."""
    lines = [f"**Study {out['study_id']}**: {len(out['views'])} images given to the model; probabilities "
             + ("calibrated as the model ships them." if out.get("calibrated") else "as the model gives them "
                "(it ships no calibration).")]
    if out.get("missing_views"):
        lines.append(f"- Missing views: {', '.join(out['missing_views'])}. The grades that depend on them are less "
                     "reliable.")
    if out.get("unplaced_levels"):
        lines.append(f"- The localiser could not place {', '.join(out['unplaced_levels'])}: those levels' grades are "
                     "the training data's priors, not a reading of the images.")
    lines += [f"- {n}" for n in out.get("notes") or []]
    return "\n".join(lines)


def point_pictures(folder: Path, points: list[dict]) -> list[tuple[Any, str]]:
    """Each sagittal slice the localiser put points on, with them drawn and labelled by level: (PIL image,
    caption), canal first."""
    from PIL import Image, ImageDraw

    from hubkit.dataset_builder.dicom import read_series
    from hubkit.dataset_builder.pixels import decode_picked, shown

    groups: dict[tuple[str, int], list[dict]] = {}
    for r in points:
        if r["condition"] in SAGITTAL:
            groups.setdefault((str(r["series_id"]), int(r["instance_number"])), []).append(r)
    order = list(SAGITTAL)
    out = []
    for (sid, inst), rows in sorted(groups.items(), key=lambda g: (order.index(g[1][0]["condition"]), g[0])):
        series = read_series(folder / sid)
        header = series.by_instance(inst)
        if header is None:
            continue
        img = Image.fromarray(shown(decode_picked(series, header), header)).convert("RGB")
        scale = max(1, round(384 / max(img.size)))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        for r in rows:
            x, y, d = float(r["x"]) * scale, float(r["y"]) * scale, 4 * scale
            draw.line((x - d, y, x + d, y), fill=(230, 40, 40), width=2)
            draw.line((x, y - d, x, y + d), fill=(230, 40, 40), width=2)
            draw.text((x + d + 2, y - d - 2), str(r["level"]), fill=(255, 220, 0))
        out.append((img, f"{SAGITTAL[rows[0]['condition']]}: series {sid}, instance {inst}"))
    return out


def _sentence(text: str) -> str:
    """The first line of a message, ending as a sentence."""
    line = (text.strip().splitlines() or ["no reason given"])[0].rstrip()
    return line if line.endswith((".", "!", "?")) else line + "."


def report(classify: Callable, upload: str | os.PathLike, progress: Callable | None = None) -> dict:
    """Everything the app shows for one uploaded zip: {"rows", "images", "points", "notes", "output"}.
    `classify` is the pipeline; `progress(fraction, desc)` is told each step. Raises StudyError."""
    step = progress or (lambda *a, **k: None)
    with tempfile.TemporaryDirectory(prefix="hubkit-space-") as work:
        step(0.05, desc="Unpacking the zip")
        folder = study_folder(upload, work)
        step(0.15, desc="Reading the DICOM series, placing the levels, grading the 25 fields")
        with warnings.catch_warnings():  # their content is in the output, shown as notes
            warnings.simplefilter("ignore")
            try:
                out = classify(str(folder), return_images=True)
            except ValueError as e:  # the pipeline's own one-line reasons (unreadable series, no slice size, ...)
                raise StudyError(_sentence(str(e))) from e
            except Exception as e:  # noqa: BLE001 - the user gets a sentence; the Space's log the traceback
                log.exception("grading %s failed", Path(upload).name)
                raise StudyError(f"The model could not grade this study ({type(e).__name__}: "
                                 f"{_sentence(str(e))})") from e
        step(0.9, desc="Drawing the points")
        try:
            points = point_pictures(folder, out["points"]) if out.get("points") else []
        except ValueError as e:  # the grades stand without the pictures
            points = []
            out.setdefault("notes", []).append(f"The points could not be drawn: {_sentence(str(e))}")
    images = [(img, view) for view, img in out.pop("images", {}).items()]
    return {"rows": table_rows(out), "images": images, "points": points, "notes": notes_markdown(out),
            "output": out}


def build_app(model: str, classify: Callable | None = None):
    """The Gradio Blocks app for `model` (a Hub repo id or a run folder); `classify`: a pipeline already loaded."""
    from hubkit._imports import require

    require("gradio", extra="space", purpose="the demo Space's app")
    import gradio as gr

    if classify is None:
        import hubkit  # noqa: F401 - registers "lumbar-classify"
        from transformers import pipeline

        classify = pipeline("lumbar-classify", model=model)

    def analyse(upload, progress=gr.Progress()):
        if upload is None:
            raise gr.Error("Upload a zipped DICOM study first.", print_exception=False)
        try:
            r = report(classify, upload, progress)
        except StudyError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return r["rows"], r["images"], r["points"], r["notes"]

    with gr.Blocks(title=f"{model}: lumbar spine grades", analytics_enabled=False) as app:
        gr.Markdown(f"# Lumbar spine MRI grades\nModel: `{model}`. Upload a zipped DICOM study (one folder per "
                    "series): the model grades 5 conditions at 5 levels. Research use only, not a medical device.")
        with gr.Row():
            upload = gr.File(label="DICOM study (.zip)", file_types=[".zip"], type="filepath", elem_id="study-zip")
            run = gr.Button("Grade the study", variant="primary", elem_id="grade")
        table = gr.Dataframe(headers=list(HEADERS), label="The 25 fields", interactive=False, max_height=2000,
                             elem_id="grades")
        shown = gr.Gallery(label="What the model was given (by slot)", columns=5, height="auto", object_fit="contain",
                           elem_id="images")
        placed = gr.Gallery(label="Where the model's localiser placed each level", columns=3, height="auto",
                            object_fit="contain", elem_id="points")
        notes = gr.Markdown(elem_id="notes")
        outputs = [table, shown, placed, notes]
        run.click(analyse, inputs=upload, outputs=outputs)
        # another study (or none): the last one's answer must not stay beside it
        upload.change(lambda _: (None, None, None, ""), inputs=upload, outputs=outputs)
    return app


def launch(model: str, host: str | None = None, port: int | None = None, block: bool = True):
    """Build and serve the app (on a Space, Gradio's environment says where); returns the app."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(model)
    app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a Hub repo id or a run folder")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    args = ap.parse_args(argv)
    launch(args.model, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
