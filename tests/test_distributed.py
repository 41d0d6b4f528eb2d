"""hubkit.distributed (rank, relaunch), and hubkit train under torchrun (2 CPU processes, gloo): ranks read disjoint
studies; only rank 0 writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubkit.distributed import World, launch_command, world
from hubkit.run_record import read_run

REPO = Path(__file__).resolve().parents[1]

# Runs in each rank: records a digest of the first image of every example its collator batches (training and
# evaluation), then trains as `hubkit train` would.
RANK_SCRIPT = """
import hashlib, os, sys
from pathlib import Path
from hubkit.training import backends as train_backends
from hubkit.training import train
from hubkit.config import TrainConfig

ds, base, out, yaml = sys.argv[1:5]
seen = Path(out).parent / f"seen-rank{os.environ['RANK']}.txt"
make_collator = train_backends.make_collator

def recording_collator(*args, **kwargs):
    inner = make_collator(*args, **kwargs)
    def collate(examples):
        with seen.open("a") as f:
            f.writelines(hashlib.sha1(ex["images"][0].tobytes()).hexdigest() + "\\n" for ex in examples)
        return inner(examples)
    return collate

train_backends.make_collator = recording_collator
cfg = TrainConfig.from_yaml(yaml).with_overrides(max_steps=3, per_device_train_batch_size=2, eval_steps=3,
                                                 save_steps=3, logging_steps=1, oversample="", eval_on_start=False,
                                                 augment="none")  # the digests name the stored images
train(ds, base, out, cfg)
"""


def test_world_from_environment(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert world() == World(0, 0, 1) and world().main and not world().distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world() == World(3, 1, 4) and not world().main and world().distributed


def test_num_gpus_without_gpus_points_to_torchrun():
    with pytest.raises(ValueError, match="only 0 CUDA GPU.*torchrun --standalone --nproc-per-node 2"):
        launch_command(2, ["--dataset", "d", "--num-gpus", "2"])


def test_two_ranks_see_disjoint_studies_and_one_run_folder_is_written(tmp_path):
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.synth import synth_cohort

    synth_cohort(tmp_path / "cohort", 20, seed=2, progress=False)
    ds = tmp_path / "ds"
    build_dataset(BuildConfig(data_dir=str(tmp_path / "cohort"), slice_size=64, validation_fraction=0.2), ds)
    base = write_tiny_base(tmp_path / "base", image_size=64, patch_size=8)
    out = tmp_path / "run"
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           str(ds), str(base), str(out), str(REPO / "configs" / "tiny-cpu.yaml")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    import hashlib

    import datasets

    train_split = datasets.load_from_disk(str(ds))["train"]
    digest = {hashlib.sha1(row["images"][0].tobytes()).hexdigest(): row["study_id"] for row in train_split}
    seen = [[digest[h] for h in (tmp_path / f"seen-rank{r}.txt").read_text().split() if h in digest]
            for r in (0, 1)]
    # 3 steps x batch 2 per rank (+ the one batch accelerate's loader fetches ahead to detect the end)
    assert all(len(s) in (6, 8) for s in seen), seen
    assert not set(seen[0]) & set(seen[1]), seen  # sharded stream: no study on both ranks
    assert len(set(seen[0] + seen[1])) == len(seen[0] + seen[1])  # nor twice on one rank (16 train studies)

    meta = read_run(out)
    assert meta.world_size == 2 and meta.global_step == 3
    assert sorted(p.name for p in out.glob("adapter_model*")) == ["adapter_model.safetensors"]
    train_lines = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [x["step"] for x in train_lines] == [1, 2, 3]  # one writer: each step logged once
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]


def test_launch_command_relaunches_the_same_train_flags(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cmd = launch_command(2, ["--dataset", "me/ds", "--num-gpus", "2", "--output", "run", "--num-gpus=2"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "hubkit.cli",
                       "train", "--dataset", "me/ds", "--output", "run"]
