"""One sweep run: hubkit.training.train with teacher-forced kappa on validation + a held-out cohort at every eval.

    python sweep.py NAME DATASET BASE HELD OUT_JSONL '{"max_steps": 1800, ...}'

Overrides are TrainConfig fields over configs/tiny-cpu.yaml, plus `_aug_small` (augment "full" with a 2 % shift,
3 % scale, 2 degree rotation instead of hubkit.training.augment's defaults) and `_threads` (torch CPU threads, default 2).
Appends one JSON line per evaluation (and, unless SWEEP_NO_CONSTRAINED is set, one with the constrained-decoding
kappa of `hubkit evaluate` at the end) to OUT_JSONL. The run folder is /tmp/sweep-runs/NAME.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoProcessor, TrainerCallback
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from hubkit import schema
from hubkit.chat import build_chat_row
from hubkit.evaluation.metrics.lumbar_classification import confusion, kappa_from_confusion
from hubkit.training.data import resize_to

CONDITION_OF_SLOT = np.array([c for _, c in schema.ANSWER_FIELDS])


def cohen_kappa(y: np.ndarray, p: np.ndarray) -> float | None:
    """hubkit evaluate's Cohen's kappa, rounded (None when undefined: both raters constant)."""
    k = kappa_from_confusion(confusion(y, p))
    return None if k is None else round(k, 3)


def make_batches(proc, ds, size: int, bs: int = 20) -> list:
    """Collated batches (as hubkit train feeds them) + the 25 labels of each study, in answer order."""
    col = DataCollatorForVisionLanguageModeling(proc, completion_only_loss=True)
    rows = []
    for ex in ds:
        ims = [resize_to(im, size) for im in ex["images"]]
        rows.append((build_chat_row(ims, ex["views"], ex["prompt"], ex["target"]),
                     [ex[schema.label_column(c, lv)] for lv, c in schema.ANSWER_FIELDS]))
    return [(col(copy.deepcopy([r for r, _ in rows[i:i + bs]])), np.array([lab for _, lab in rows[i:i + bs]]))
            for i in range(0, len(rows), bs)]


def kappas(model, proc, batches) -> dict[str, float]:
    """Teacher-forced kappa: argmax over the N/M/S tokens at each answer slot, overall and per condition."""
    code_ids = proc.tokenizer.convert_tokens_to_ids(list(schema.CODES))
    dev = next(model.parameters()).device
    ys, ps = [], []
    with torch.no_grad():
        for batch, labels in batches:
            logits = model(**{k: v.to(dev) for k, v in batch.items() if k != "labels"}).logits.float().cpu()
            lab = batch["labels"]
            for i in range(lab.shape[0]):
                pos = [j for j in range(lab.shape[1]) if lab[i, j].item() in code_ids]
                assert len(pos) == 25, pos
                ps.append(logits[i, [p - 1 for p in pos]][:, code_ids].argmax(-1).numpy())
                ys.append(labels[i])
    y, p = np.array(ys), np.array(ps)
    out = {"all": cohen_kappa(y[y >= 0], p[y >= 0])}
    for c in schema.CONDITIONS:
        yc, pc = y[:, CONDITION_OF_SLOT == c], p[:, CONDITION_OF_SLOT == c]
        out[c] = cohen_kappa(yc[yc >= 0], pc[yc >= 0])
    return out


class KappaCallback(TrainerCallback):
    def __init__(self, proc, sets: dict, name: str, out: str, t0: float) -> None:
        self.proc, self.sets, self.name, self.out, self.t0 = proc, sets, name, out, t0

    def on_evaluate(self, args, state, control, model=None, **kw):
        was = model.training
        model.eval()
        res = {"name": self.name, "step": state.global_step, "t": round(time.time() - self.t0, 1)}
        res.update({k: kappas(model, self.proc, b) for k, b in self.sets.items()})
        print("KAPPA", json.dumps(res), flush=True)
        with open(self.out, "a") as f:
            f.write(json.dumps(res) + "\n")
        model.train(was)


def main(name: str, ds_path: str, base: str, held: str, out: str, overrides: str = "{}") -> None:
    from hubkit.training import train
    from hubkit.config import TrainConfig

    over = json.loads(overrides)
    torch.set_num_threads(int(over.pop("_threads", 2)))
    if over.pop("_aug_small", False):
        import hubkit.training.augment as aug

        aug.SHIFT, aug.SCALE, aug.ROTATE = 0.02, 0.03, 2.0
    proc = AutoProcessor.from_pretrained(base)
    size = proc.image_processor.size["height"]
    hd = datasets.load_from_disk(held)
    sets = {"val": make_batches(proc, datasets.load_from_disk(ds_path)["validation"], size),
            "held": make_batches(proc, datasets.concatenate_datasets([hd[s] for s in hd]), size)}
    here = Path(__file__).resolve().parent
    root = next(p for p in (here, *here.parents) if (p / "configs" / "tiny-cpu.yaml").is_file())
    cfg = TrainConfig.from_yaml(root / "configs" / "tiny-cpu.yaml").with_overrides(**over)
    run = f"/tmp/sweep-runs/{name}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    train(ds_path, base, run, cfg, callbacks=[KappaCallback(proc, sets, name, out, t0)])
    print("TOTAL", name, time.time() - t0, flush=True)
    if os.environ.get("SWEEP_NO_CONSTRAINED"):
        return
    from hubkit.evaluation import evaluate_model

    res: dict = {"name": name, "constrained": {}}
    for tag, path, split in (("val", ds_path, "validation"), ("held", held, "train")):
        try:
            r = evaluate_model(run, path, split, output=f"{run}/eval_{tag}", progress=False)["finetuned"]
            res["constrained"][tag] = {k: r.get(k) for k in ("kappa", "rsna_score", "parse_failure_rate")}
        except Exception as e:  # noqa: BLE001  (a sweep line should not lose the run's other results)
            res["constrained"][tag] = repr(e)[:300]
    print("CONSTRAINED", json.dumps(res), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
