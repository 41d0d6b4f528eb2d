"""`pipeline("lumbar-classify")` on the trained tiny adapter: DICOM folder, images + views, dataset rows, batching."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hubkit import schema
from hubkit.slots import VIEWS
from tests.fixtures.tiny_run import flat, make_study, trained_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones


@pytest.fixture(scope="module")
def pipe():
    import hubkit  # noqa: F401
    import hubkit.inference.registration

    hubkit.inference.registration.install_lazy_registration()  # what `import hubkit` does
    from transformers import pipeline

    run, _ = trained_tiny_run()
    return pipeline("lumbar-classify", model=str(run))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from hubkit.devkit.synth import synth_cohort

    return synth_cohort(tmp_path_factory.mktemp("cohort"), 2, seed=3, progress=False)


def _check_output(out: dict) -> None:
    assert set(out) >= {"study_id", "levels", "json", "views"}
    assert list(out["levels"]) == list(schema.LEVELS)
    parsed = schema.parse_target(out["json"])
    for lv in schema.LEVELS:
        assert list(out["levels"][lv]) == list(schema.CONDITIONS)
        for c in schema.CONDITIONS:
            field = out["levels"][lv][c]
            assert field["label"] == parsed[lv][c]
            assert field["severity"] == schema.SEVERITY_NAMES[schema.CODES.index(field["label"])]
            assert list(field["probs"]) == list(schema.CODES)
            assert abs(sum(field["probs"].values()) - 1) < 1e-5
            assert field["label"] == max(field["probs"], key=field["probs"].get)


def test_pipeline_loads_adapter_with_processor_from_run_folder(pipe):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from hubkit.inference.pipeline import LumbarClassificationPipeline

    run, base = trained_tiny_run()
    assert isinstance(pipe, LumbarClassificationPipeline)
    assert pipe.facts.source == str(run) and pipe.facts.slice_size == 64  # the run record's facts, as parameters
    assert pipe.model.config.hubkit["source"] == str(run)  # carried by the model, for pipelines built from it
    assert pipe.device.type == "cpu" and pipe.model.dtype == torch.float32
    # merged LoRA + the trained projector (modules_to_save) == PEFT's own reference model
    ref = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), run).eval()
    study = make_study(2, 11)
    from hubkit.inference.decoding import constrained_decode

    a = constrained_decode(pipe.model, pipe.processor, [study])[0]
    b = constrained_decode(ref, pipe.processor, [study])[0]
    assert a.labels == b.labels
    # Merging changes the float rounding of every LoRA layer: ~1e-5 on a near-tie field on some CPUs.
    np.testing.assert_allclose(flat(a, "probs"), flat(b, "probs"), atol=1e-4)
    untrained = AutoModelForImageTextToText.from_pretrained(base)
    proj = "model.multi_modal_projector.mm_input_projection_weight"
    assert not torch.equal(pipe.model.state_dict()[proj], untrained.state_dict()[proj])


def test_images_and_views_input(pipe):
    study = make_study(3, 21)
    out = pipe({"images": study.images, "views": study.views, "study_id": "x1"})
    _check_output(out)
    assert out["study_id"] == "x1" and out["views"] == study.views


def test_dicom_study_folder(pipe, cohort):
    study_dir = next(p for p in sorted((cohort / "train_images").iterdir()) if p.is_dir())
    out = pipe(str(study_dir))
    _check_output(out)
    assert out["study_id"] == study_dir.name and out["views"]
    from hubkit.dataset_builder.study import load_study

    ref = load_study(study_dir, picker="geometry", slice_size=64)  # the builder's picker and pixels
    assert out["views"] == ref.views
    # read at the run's slice size (its dataset manifest says 64), not at a default
    read = pipe.preprocess(str(study_dir))["studies"][0]
    assert [im.size for im in read.images] == [(64, 64)] * len(ref.images)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(read.images, ref.images))
    with pytest.raises(ValueError, match="pass slice_size"):  # a model that recorded no slice size: say so
        from hubkit.inference.inputs import study_from_input

        study_from_input(str(study_dir), slice_size=None)


def test_batch_size_gives_same_results(pipe):
    studies = [make_study(n, 31 + n) for n in (3, 1, 2)]
    rows = [{"images": s.images, "views": s.views, "study_id": s.study_id} for s in studies]
    one = [pipe(r) for r in rows]
    batched = pipe(rows, batch_size=2)
    assert [o["study_id"] for o in batched] == [s.study_id for s in studies]
    for a, b in zip(one, batched):
        assert a["json"] == b["json"]
        for lv, c in schema.ANSWER_FIELDS:
            pa, pb = a["levels"][lv][c]["probs"], b["levels"][lv][c]["probs"]
            np.testing.assert_allclose(list(pa.values()), list(pb.values()), atol=1e-5)
    spec = pipe(rows, batch_size=3, method="speculative")
    assert [o["json"] for o in spec] == [o["json"] for o in one]


def test_dataset_rows_stream(pipe):
    from datasets import Dataset, Features, Image, List, Value

    studies = [make_study(n, 41 + n) for n in (1, 2, 3)]
    ds = Dataset.from_dict({"study_id": [s.study_id for s in studies], "images": [s.images for s in studies],
                            "views": [s.views for s in studies]},
                           features=Features({"study_id": Value("string"), "images": List(Image()),
                                              "views": List(Value("string"))}))
    outs = list(pipe(ds, batch_size=2))
    assert [o["study_id"] for o in outs] == ds["study_id"]
    assert outs[1]["json"] == pipe(ds[1])["json"]


def test_streamed_dataset_generator_and_list_of_folders(pipe, cohort):
    from datasets import Dataset, Features, Image, List, Value

    studies = [make_study(n, 61 + n) for n in (3, 1, 2)]
    ds = Dataset.from_dict({"study_id": [s.study_id for s in studies], "images": [s.images for s in studies],
                            "views": [s.views for s in studies]},
                           features=Features({"study_id": Value("string"), "images": List(Image()),
                                              "views": List(Value("string"))}))
    want = [pipe(row)["json"] for row in ds]
    assert [o["json"] for o in pipe(ds.to_iterable_dataset(), batch_size=2)] == want  # streamed: no len()
    assert [o["json"] for o in pipe((row for row in ds), batch_size=2)] == want  # a generator
    folders = [str(p) for p in sorted((cohort / "train_images").iterdir())]
    assert [o["json"] for o in pipe(folders, batch_size=2)] == [pipe(f)["json"] for f in folders]


def test_worker_processes_give_the_same_results(pipe, cohort):
    folders = [str(p) for p in sorted((cohort / "train_images").iterdir())]
    rows = [{"images": s.images, "views": s.views, "study_id": s.study_id} for s in
            (make_study(n, 71 + n) for n in (1, 2, 3))]
    for inputs in (folders, rows):
        here = pipe(inputs, batch_size=2, num_workers=0)
        forked = pipe(inputs, batch_size=2, num_workers=2)
        assert [o["json"] for o in forked] == [o["json"] for o in here]
        np.testing.assert_allclose([list(o["probs"].values()) for o in forked],
                                   [list(o["probs"].values()) for o in here], atol=1e-6)


def test_default_path_equals_the_old_one(pipe):
    """Default arguments (method 'auto': speculative for one study) give the old path's labels (stepwise)."""
    rows = [{"images": s.images, "views": s.views} for s in (make_study(n, 81 + n) for n in (1, 2, 3))]
    for row in rows:
        new, old = pipe(row), pipe(row, method="stepwise")
        assert new["json"] == old["json"]
        np.testing.assert_allclose(list(new["probs"].values()), list(old["probs"].values()), atol=1e-3)


def test_missing_views_warn_once_and_are_in_the_output(pipe):
    import warnings

    from hubkit.inference.pipeline import MissingViewsWarning

    study = make_study(2, 91, study_id="two-views")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipe({"images": study.images, "views": study.views, "study_id": "two-views"})
    hits = [w for w in caught if issubclass(w.category, MissingViewsWarning)]
    assert len(hits) == 1 and "two-views: 6 of 8 views missing" in str(hits[0].message)
    assert out["missing_views"] == list(VIEWS[2:])
    full = make_study(8, 92)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingViewsWarning)
        assert pipe({"images": full.images, "views": full.views})["missing_views"] == []


@pytest.mark.parametrize("free_gib,asked,bnb,want_4bit", [
    (80, None, True, False),  # room: bf16, merged
    (9, None, True, True),  # weight_bytes below + headroom do not fit: 4-bit
    (9, None, False, False),  # ... unless bitsandbytes is missing (then bf16 is tried, and said)
    (80, True, True, True),  # asked for
    (2, False, True, False),  # refused
])
def test_bf16_or_4bit_by_free_memory(free_gib, asked, bnb, want_4bit):
    from hubkit.inference.loading import GiB, choose_4bit

    four, why = choose_4bit(asked, cuda=True, has_bnb=bnb, free_bytes=free_gib * GiB, weight_bytes=8 * GiB)
    assert four is want_4bit and why and "\n" not in why
    assert choose_4bit(None, cuda=False, has_bnb=True, free_bytes=None, weight_bytes=None)[0] is False


def test_adapter_repo_on_the_hub(local_hub, pipe, tmp_path):
    import shutil

    from transformers import pipeline

    from hubkit.inference.pipeline import load_pipeline
    from hubkit.publish import push_run_folder

    run = shutil.copytree(trained_tiny_run()[0], tmp_path / "run")  # the push writes the run's card into it
    push_run_folder(run, "owner/lumbar-tiny-adapter", token=local_hub.owner_token)  # what `hubkit push` does
    study = make_study(2, 51)
    row = {"images": study.images, "views": study.views}
    want = pipe(row)["json"]
    assert load_pipeline("owner/lumbar-tiny-adapter")(row)["json"] == want
    assert pipeline("lumbar-classify", model="owner/lumbar-tiny-adapter")(row)["json"] == want


def test_unreadable_inputs_give_clear_errors(pipe, tmp_path):
    empty = tmp_path / "12345"
    (empty / "999").mkdir(parents=True)
    (empty / "999" / "1.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match=r"cannot read study .*12345.*no usable slice"):
        pipe(str(empty))
    with pytest.raises(ValueError, match="study folder not found"):
        pipe(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"lacks \['views'\]"):
        pipe({"images": make_study(1, 1).images})
    with pytest.raises(ValueError, match="2 images and 1 views"):
        pipe({"images": make_study(2, 1).images, "views": ["Sagittal T2"]})


def test_load_errors_name_what_is_missing(tmp_path):
    import json

    from hubkit.inference.pipeline import LumbarLoadError, load_pipeline

    run, _ = trained_tiny_run()
    bad = tmp_path / "adapter"
    bad.mkdir()
    cfg = json.loads((run / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "no-such-base")
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="no-such-base"):
        load_pipeline(bad)
    with pytest.raises(LumbarLoadError, match="not a model folder"):
        load_pipeline(tmp_path / "nothing-here")


def test_import_hubkit_registers_lazily_without_importing_transformers(tmp_path):
    code = (
        "import sys, hubkit, hubkit.inference.pipeline as hp, hubkit.inference.registration as hr\n"
        "hr.install_lazy_registration()\n"
        "assert 'transformers' not in sys.modules, 'import hubkit must stay light'\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert 'lumbar-classify' in PIPELINE_REGISTRY.get_supported_tasks()\n"
        "assert PIPELINE_REGISTRY.supported_tasks['lumbar-classify']['impl'] is hp.LumbarClassificationPipeline\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]


def _png_header_only(width: int, height: int) -> bytes:
    """A ~100-byte PNG that declares width x height 8-bit gray pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bombs_and_broken_images_are_refused_before_decoding(tmp_path):
    import io
    import tracemalloc

    from PIL import Image

    from hubkit.inference.inputs import study_from_input

    ok = io.BytesIO()
    Image.new("L", (32, 32), 7).save(ok, format="PNG")
    views = ["Sagittal T2", "Axial T2 L4/L5"]
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(5000, 5000))  # 25 MP: over hubkit's limit, under PIL's own
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"image 1 \(.*bomb.png\): declares 5000x5000 pixels.*decompression bomb"):
        study_from_input({"images": [{"bytes": ok.getvalue()}, str(bomb)], "views": views})
    assert tracemalloc.get_traced_memory()[1] < 5_000_000  # refused from the header: nothing was decoded
    tracemalloc.stop()
    with pytest.raises(ValueError, match=r"image 0 \(bytes\): (declares 60000x60000|cannot decode)"):
        study_from_input({"images": [{"bytes": _png_header_only(60000, 60000)}, {"bytes": ok.getvalue()}],
                          "views": views})
    with pytest.raises(ValueError, match=r"image 1 \(bytes\): cannot decode"):
        study_from_input({"images": [{"bytes": ok.getvalue()}, {"bytes": ok.getvalue()[:-30]}], "views": views})
    with pytest.raises(ValueError, match="image 0: expected .* array of at most"):
        study_from_input({"images": [np.zeros((5000, 5000), np.uint8), ok], "views": views})
    study, _ = study_from_input({"images": [{"bytes": ok.getvalue()}, Image.new("L", (8, 8))], "views": views})
    assert [im.size for im in study.images] == [(32, 32), (8, 8)]


def test_only_safetensors_and_no_remote_code(tmp_path):
    """A pickled adapter or base is refused before loading, and so is trust_remote_code=True."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from hubkit.inference.loading import LumbarLoadError, load_model

    run, base = trained_tiny_run()
    with pytest.raises(LumbarLoadError, match="trust_remote_code=True is refused"):
        load_model(run, trust_remote_code=True)
    pickled = tmp_path / "pickled-adapter"
    shutil.copytree(run, pickled, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    with pytest.raises(LumbarLoadError, match="no adapter_model.safetensors; hubkit loads safetensors only"):
        load_model(pickled)
    pickled_base = tmp_path / "pickled-base"
    shutil.copytree(base, pickled_base)
    torch.save(load_file(pickled_base / "model.safetensors"), pickled_base / "pytorch_model.bin")
    (pickled_base / "model.safetensors").unlink()
    with pytest.raises(LumbarLoadError, match="could not load the model"):
        load_model(pickled_base)
