"""hubkit.train on CPU: a tiny random Gemma 3 learns from a streamed synthetic dataset; adapter reloads; resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hubkit import schema
from hubkit.config import TrainConfig
from hubkit.run_record import read_run

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from hubkit.devkit.base_models import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("base") / "tiny", seed=0)


@pytest.fixture(scope="module")
def synth_ds(tmp_path_factory):
    """40 synthetic studies (hubkit synth) built by the real dataset builder into a save_to_disk folder."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.synth import synth_cohort

    root = tmp_path_factory.mktemp("synth")
    synth_cohort(root / "cohort", 40, seed=0, progress=False)
    build_dataset(BuildConfig(data_dir=str(root / "cohort"), num_proc=2), root / "ds")
    return root / "ds"


@pytest.fixture(scope="module")
def image_processor(tiny_base):
    """The tiny base's image processor: training resizes to the tower's input with its filter."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_base).image_processor


def _tiny(**overrides) -> TrainConfig:
    return TrainConfig.from_yaml(TINY_YAML).with_overrides(**overrides)


def _eval_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "training_log.jsonl").read_text().splitlines()]
    return [e["eval_loss"] for e in lines if "eval_loss" in e]


def _example_inputs(run_dir: Path, ds_dir: Path):
    import datasets
    from transformers import AutoProcessor

    from hubkit.chat import build_chat_row

    processor = AutoProcessor.from_pretrained(run_dir)
    ex = datasets.load_from_disk(str(ds_dir))["validation"][0]
    row = build_chat_row(ex["images"], ex["views"], ex["prompt"], ex["target"])
    text = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    return processor(text=[text], images=[row["images"]], add_special_tokens=False, return_tensors="pt")


def test_trains_from_hub_stream_then_adapter_reloads_and_is_pushed(tiny_base, synth_ds, tmp_path, local_hub):
    import datasets
    import torch
    from huggingface_hub import HfApi
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, TrainerCallback

    from hubkit.hub import push_dataset
    from hubkit.training import train

    push_dataset(synth_ds, "owner/synth40")
    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            seen["train_data"] = train_dataloader.base_dataloader.dataset

        def on_train_end(self, args, state, control, model=None, **kw):
            seen["model"] = model

    cfg = _tiny(max_steps=40, eval_steps=10, save_steps=20, oversample="moderate=2,severe=4")
    run = train("owner/synth40", str(tiny_base), tmp_path / "run", cfg, push="owner/tiny-lumbar", callbacks=[Spy()])

    assert isinstance(seen["train_data"], datasets.IterableDataset)  # streamed, never materialised
    losses = _eval_losses(run)
    assert len(losses) == 5 and min(losses) <= 0.5 * losses[0], losses  # eval at steps 0 (untrained), 10, ..., 40
    meta = read_run(run)
    assert meta.backend == "trl" and meta.global_step == meta.planned_steps == 40
    assert meta.dataset.kind == "hub" and meta.dataset.revision
    labels = datasets.load_from_disk(str(synth_ds))["train"].select_columns(list(schema.LABEL_COLUMNS))
    expected_rows = sum({-1: 1, 0: 1, 1: 2, 2: 4}[max(r.values())] for r in labels)  # oversampled by worst grade
    assert meta.dataset.train_rows == expected_rows > 36 and meta.best_eval_loss == min(losses)
    assert meta.max_length > 8 * (16 + 4)
    assert meta.versions["transformers"] and meta.train_config["learning_rate"] == cfg.learning_rate

    adapter_cfg = json.loads((run / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_base)
    with safe_open(str(run / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("multi_modal_projector" in k for k in keys) and any("language_model.norm" in k for k in keys)

    inputs = _example_inputs(run, synth_ds)
    with torch.no_grad():
        trained = seen["model"].eval()(**inputs).logits
        base = AutoModelForImageTextToText.from_pretrained(tiny_base).eval()
        assert not torch.allclose(base(**inputs).logits, trained, atol=1e-3)
        peft = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_base), run).eval()
        torch.testing.assert_close(peft(**inputs).logits, trained, atol=1e-5, rtol=1e-5)
        hf = AutoModelForImageTextToText.from_pretrained(adapter_cfg["base_model_name_or_path"])
        hf.load_adapter(str(run))
        torch.testing.assert_close(hf.eval()(**inputs).logits, trained, atol=1e-5, rtol=1e-5)

    api = HfApi(token=local_hub.owner_token)
    assert api.repo_info("owner/tiny-lumbar").private
    files = set(api.list_repo_files("owner/tiny-lumbar"))
    assert {"adapter_model.safetensors", "adapter_config.json", "hubkit_config.json", "training_log.jsonl",
            "tokenizer.json", "processor_config.json", "chat_template.jinja"} <= files
    assert not any(f.startswith(("checkpoints/", "logs/")) for f in files)
    # A download of the pushed adapter is byte-identical to the run folder.
    from hubkit.hub import download_snapshot

    snap = Path(download_snapshot("owner/tiny-lumbar", cache_dir=str(tmp_path / "dl-cache")))
    for f in files - {".gitattributes"}:
        assert (snap / f).read_bytes() == (run / f).read_bytes(), f
    # The token used to pull and push is written nowhere in the run folder (checkpoints and logs included).
    for p in run.rglob("*"):
        assert not p.is_file() or local_hub.owner_token.encode() not in p.read_bytes(), p


def test_killed_run_resumes_from_last_checkpoint_without_repeating_steps(tiny_base, synth_ds, tmp_path):
    """SIGKILL a training process after its step-8 checkpoint; `--resume` runs steps 9..12 only."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from transformers import TrainerCallback

    from hubkit.training import train

    run_dir = tmp_path / "run"
    overrides = dict(max_steps=12, eval_steps=4, save_steps=4)
    code = f"""
import time
from transformers import TrainerCallback
from hubkit.training import train
from hubkit.config import TrainConfig
class SlowAfter8(TrainerCallback):  # gives the parent time to kill between checkpoint 8 and step 12
    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= 8:
            time.sleep(30)
cfg = TrainConfig.from_yaml({str(TINY_YAML)!r}).with_overrides(**{overrides!r})
train({str(synth_ds)!r}, {str(tiny_base)!r}, {str(run_dir)!r}, cfg, callbacks=[SlowAfter8()])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    done = run_dir / "checkpoints" / "checkpoint-8" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not done.is_file():
        time.sleep(0.05)
    assert done.is_file(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint-8"
    time.sleep(0.5)  # the kill lands inside step 9's 30 s sleep
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not (run_dir / "adapter_model.safetensors").exists()

    steps: list[int] = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append(state.global_step)

    cfg = _tiny(**overrides)
    with pytest.raises(ValueError, match="--resume"):  # a fresh start would mix two runs in one folder
        train(str(synth_ds), str(tiny_base), run_dir, cfg)
    run = train(str(synth_ds), str(tiny_base), run_dir, cfg, resume=True, callbacks=[Steps()])
    assert steps == [9, 10, 11, 12]
    meta = read_run(run)
    assert meta.global_step == meta.planned_steps == 12 and meta.dataset.kind == "save_to_disk"
    logged = [json.loads(x)["step"] for x in (run / "training_log.jsonl").read_text().splitlines()]
    assert logged == sorted(logged) and max(logged) == 12  # one log across the interruption, steps never go back


@pytest.fixture
def broken_ds(synth_ds, tmp_path):
    import datasets

    def make(name, fn):
        out = tmp_path / name
        fn(datasets.load_from_disk(str(synth_ds))).save_to_disk(str(out))
        return str(out)

    return make


def test_bad_inputs_fail_with_clear_errors(tiny_base, synth_ds, broken_ds, tmp_path):
    import torch
    from transformers import Gemma3TextConfig

    from hubkit.training import train

    cfg = _tiny(max_steps=2)
    ds = broken_ds("no-target", lambda dd: dd.remove_columns("target"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['target'\]"):
        train(ds, str(tiny_base), tmp_path / "a", cfg)
    ds = broken_ds("no-labels", lambda dd: dd.remove_columns(schema.LABEL_COLUMNS[0]))
    with pytest.raises(ValueError, match=f"{schema.LABEL_COLUMNS[0]}.*oversampling"):
        train(ds, str(tiny_base), tmp_path / "b", cfg.with_overrides(oversample="moderate=2,severe=4"))
    ds = broken_ds("no-val", lambda dd: type(dd)(train=dd["train"]))
    with pytest.raises(ValueError, match="validation"):
        train(ds, str(tiny_base), tmp_path / "c", cfg)
    with pytest.raises(FileNotFoundError):
        train(str(tmp_path / "nowhere"), str(tiny_base), tmp_path / "d", cfg)

    text_only = tmp_path / "text-only"
    Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1,
                     num_key_value_heads=1, head_dim=16).save_pretrained(text_only)
    with pytest.raises(ValueError, match="no vision tower"):
        train(str(synth_ds), str(text_only), tmp_path / "e", cfg)
    with pytest.raises(ValueError, match=r"max_length 100 is too small: a study with 8 images needs \d+ tokens"):
        train(str(synth_ds), str(tiny_base), tmp_path / "f", cfg.with_overrides(max_length=100))
    with pytest.raises(ValueError, match="no checkpoint"):
        train(str(synth_ds), str(tiny_base), tmp_path / "g", cfg, resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA GPU.*NotImplementedError"):
            train(str(synth_ds), str(tiny_base), tmp_path / "h", cfg.with_overrides(backend="unsloth"))


def test_oversampling_repeats_studies_by_worst_grade(synth_ds, image_processor):
    import datasets

    from hubkit.training.data import open_streams

    cfg = _tiny(oversample="moderate=2,severe=4")
    streams = open_streams(str(synth_ds), cfg, vision_size=128, image_processor=image_processor)
    train = datasets.load_from_disk(str(synth_ds))["train"]
    worst = [max(row[c] for c in schema.LABEL_COLUMNS) for row in train.select_columns(list(schema.LABEL_COLUMNS))]
    expected = sum({-1: 1, 0: 1, 1: 2, 2: 4}[w] for w in worst)
    assert streams["train_rows"] == expected > len(train)
    rows = list(streams["train"])
    assert len(rows) == expected
    assert set(rows[0]) == {"images", "prompt", "completion"} and rows[0]["images"][0].size == (128, 128)
    assert cfg.steps_for(expected) == cfg.num_train_epochs * -(-expected // 8)  # epochs x ceil(rows / batch 8)


def test_sequence_budget_counts_image_tokens(tiny_base):
    from transformers import AutoProcessor

    from hubkit.training.data import sequence_budget

    processor = AutoProcessor.from_pretrained(tiny_base)
    needed = sequence_budget(processor, TrainConfig())
    assert 8 * (16 + 4) < needed < 8 * (16 + 4) + 400  # 8 images x (16 soft tokens + 4 markers) + prompt + answer
    assert sequence_budget(processor, TrainConfig(max_length=needed + 10)) == needed + 10


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_train_config_loads_and_shows_its_command(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    if not any("hubkit train" in line for line in header):
        pytest.skip("not a training config")
    cfg = TrainConfig.from_yaml(path)
    command = next(line for line in header if "hubkit train" in line)
    assert re.search(rf"--dataset \S+ --base-model \S+ --output \S+ --config configs/{path.name}", command)
    assert cfg.private is True


def test_config_overrides_and_validation():
    cfg = TrainConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate, cfg.effective_batch_size) == (16, 32, 2e-4, 8)
    assert cfg.with_overrides(max_steps=None, backend="trl").backend == "trl"  # None = flag not given
    assert cfg.with_overrides(max_steps=7).max_steps == 7
    assert cfg.steps_for(1777) == 3 * 223  # seed: 1,777 studies, batch 1 x 8, 3 epochs
    with pytest.raises(ValueError, match="unknown"):
        cfg.with_overrides(learning_rat=1)
    with pytest.raises(ValueError, match="backend"):
        TrainConfig(backend="deepspeed")
    with pytest.raises(ValueError, match="oversample"):
        TrainConfig(oversample="moderate:2")
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        TrainConfig(eval_steps=30, save_steps=50)
    assert TrainConfig(oversample="moderate=2, severe=4").oversample_factors() == {0: 1, 1: 2, 2: 4}


def test_loss_weights_parse_like_oversample_and_need_the_trl_backend():
    assert TrainConfig().loss_weight_factors() is None  # "" = the plain loss
    assert TrainConfig(loss_weights="moderate=2, severe=4").loss_weight_factors() == {0: 1.0, 1: 2.0, 2: 4.0}
    assert TrainConfig(loss_weights="s=2.5").loss_weight_factors() == {0: 1.0, 1: 1.0, 2: 2.5}
    for bad in ("moderate:2", "severe=0", "mild=2", "severe=inf"):
        with pytest.raises(ValueError, match=f"loss_weights: cannot read '{bad}'"):
            TrainConfig(loss_weights=bad)
    with pytest.raises(ValueError, match="TRL backend only .*pass --backend trl"):
        TrainConfig(backend="unsloth").with_overrides(loss_weights="severe=4")


def test_augment_jitters_training_images_only(synth_ds):
    import datasets
    import numpy as np

    from hubkit.training.data import open_streams

    dd = datasets.load_from_disk(str(synth_ds))
    originals = {s: {np.asarray(r["images"][0]).tobytes() for r in dd[s]} for s in ("train", "validation")}
    streams = open_streams(str(synth_ds), _tiny(augment=True, oversample=""))
    train_rows = [r for _, r in zip(range(6), streams["train"])]
    assert all(np.asarray(r["images"][0]).tobytes() not in originals["train"] for r in train_rows)
    assert all(np.asarray(r["images"][0]).tobytes() in originals["validation"] for r in streams["validation"])


def test_lr_flip_mirrors_training_studies_with_their_labels_only(synth_ds, image_processor):
    from hubkit.training.augment import mirror_study
    from hubkit.training.data import open_streams

    plain = open_streams(str(synth_ds), _tiny(oversample="", augment="none", lr_flip=0.0), vision_size=128,
                         image_processor=image_processor)
    flipped = open_streams(str(synth_ds), _tiny(oversample="", augment="none", lr_flip=1.0), vision_size=128,
                           image_processor=image_processor)
    text = lambda r: r["completion"][0]["content"][0]["text"]  # noqa: E731
    for a, b in zip(plain["train"], flipped["train"]):  # same seed: same shuffle order
        views = [c["text"] for c in a["prompt"][0]["content"][0:-1:2]]  # [view, image, view, image, ..., prompt]
        ims, _, _, target = mirror_study(a["images"], views, "", text(a))
        assert text(b) == target
        assert [im.tobytes() for im in b["images"]] == [im.tobytes() for im in ims]
    assert [text(r) for r in flipped["validation"]] == [text(r) for r in plain["validation"]]


def test_image_cache_gives_the_same_rows_and_decodes_each_image_once(synth_ds, image_processor):
    import numpy as np

    from hubkit.training.data import open_streams

    def pixels(rows):
        return [[np.asarray(im).tobytes() for im in r["images"]] for r in rows]

    cached = open_streams(str(synth_ds), _tiny(oversample="", augment="none"), vision_size=128,
                          image_processor=image_processor)
    plain = open_streams(str(synth_ds), _tiny(oversample="", augment="none", image_cache_mb=0), vision_size=128,
                         image_processor=image_processor)
    for split in ("train", "validation"):
        a, b = list(cached[split]), list(plain[split])
        assert pixels(a) == pixels(b) and [r["completion"] for r in a] == [r["completion"] for r in b]
        assert all(im.size == (128, 128) for r in a for im in r["images"])
    cache = cached["image_cache"]
    n_images = {s: sum(len(r["images"]) for r in plain[s]) for s in ("train", "validation")}
    assert (cache.misses, cache.hits) == (n_images["train"] + n_images["validation"], 0)
    again = list(cached["validation"])  # a second epoch: every image comes from the cache
    assert pixels(again) == pixels(list(plain["validation"])) and cache.hits == n_images["validation"]
    with pytest.raises(ValueError, match="image_cache_mb"):
        _tiny(image_cache_mb=-1)


def test_vision_tower_attention_is_set_without_touching_the_text_model(tiny_base):
    from transformers import AutoModelForImageTextToText

    from hubkit.training.backends import load_trl_model, set_vision_attention

    assert TrainConfig().vision_attn_implementation == "sdpa"  # GPU default (BENCHMARKS.md 2)
    model = load_trl_model(str(tiny_base), TrainConfig(backend="trl", load_in_4bit=False, precision="fp32",
                                                      attn_implementation="eager"))
    cfg = model.get_base_model().config
    assert (cfg.vision_config._attn_implementation, cfg.text_config._attn_implementation) == ("sdpa", "eager")
    plain = AutoModelForImageTextToText.from_pretrained(tiny_base, attn_implementation="eager")
    set_vision_attention(plain, "auto")  # leaves the backend's choice alone
    assert plain.config.vision_config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="vision_config"):
        set_vision_attention(plain.model.language_model, "sdpa")


def test_a_single_saved_dataset_is_only_the_train_split(tmp_path):
    import datasets

    from hubkit.sources import open_split, split_names

    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "one"))
    assert split_names(tmp_path / "one") == ["train"]
    assert open_split(tmp_path / "one", "train")["x"] == [1, 2]
    with pytest.raises(ValueError, match="has no split 'validation'"):
        open_split(tmp_path / "one", "validation")
