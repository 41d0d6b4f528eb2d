"""GPU benchmark: QLoRA training throughput and peak memory on MedGemma 1.5 4B's architecture (random weights).

Three ways, each in its own process (Unsloth patches transformers globally), same data, same LoRA recipe (r16,
alpha 32, dropout 0.05, q/k/v/o/gate/up/down of both towers), 4-bit base, gradient checkpointing, batch 1,
8 images of 448x448 + prompt + answer per example (~2.3k tokens):
  (a) plain  transformers + PEFT + bitsandbytes nf4 + TRL SFTTrainer (prepare_model_for_kbit_training, SDPA)
  (b) unsloth  a minimal hand-written Unsloth FastVisionModel + SFTTrainer + UnslothVisionDataCollator script
  (c) hubkit  `hubkit.training.train(..., backend="unsloth")`, i.e. `hubkit train` itself
Warm-up steps then >= 10 timed steps each; prints one JSON line per measurement (median s/step, tokens/s, peak
GPU memory) and a summary with the ratios.

    python bench/train_throughput.py --work /tmp/bench --out $OUT/train.jsonl            # all three
    python bench/train_throughput.py --work /tmp/bench --only hubkit --steps 20
    python bench/train_throughput.py --work /tmp/bench --only hubkit --layout mosaic   # crops: 5 images a study

`--layout`: the images per example as each picker layout gives them (`hubkit.slots`): slices (8 whole slices, the
default), mosaic (5 per-level 2x2 crop mosaics) or separate (20 per-level crops); same side, same recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYOUTS = {"slices": ("geometry", None), "mosaic": ("crops", "mosaic"), "separate": ("crops", "separate")}


def paths(work: Path, layout: str) -> tuple[Path, Path]:
    """The model and the layout's dataset (whole slices keep the folder name earlier results used)."""
    return work / "medgemma-arch", work / ("dataset" if layout == "slices" else f"dataset-{layout}")


def prepare(work: Path, rows: int = 48, layout: str = "slices") -> tuple[Path, Path]:
    """The medgemma-arch model and a 448px dataset of the layout's images (saved with save_to_disk)."""
    import numpy as np
    from datasets import DatasetDict

    from hubkit.devkit.base_models import write_medgemma_arch_base
    from hubkit.dataset_builder.features import lumbar_features
    from hubkit.schema import LABEL_COLUMNS, build_prompt, build_target

    model_dir, data_dir = paths(work, layout)
    if not (model_dir / "config.json").is_file():
        write_medgemma_arch_base(model_dir, device="cuda")
    if not (data_dir / "dataset_dict.json").is_file():
        from datasets import Dataset
        from PIL import Image

        from hubkit.slots import views_of

        views = views_of(*LAYOUTS[layout])
        rng = np.random.default_rng(0)

        def gen(n):
            for i in range(n):
                labels = {c: int(rng.choice(3, p=[0.85, 0.12, 0.03])) for c in LABEL_COLUMNS}
                imgs = [Image.fromarray(rng.integers(0, 255, (448, 448), dtype=np.uint8), mode="L") for _ in views]
                yield {"study_id": str(1000 + i), "images": imgs, "views": views, "prompt": build_prompt(views),
                       "target": build_target(labels), **labels}

        feats = lumbar_features()
        DatasetDict({"train": Dataset.from_generator(gen, features=feats, gen_kwargs={"n": rows}),
                     "validation": Dataset.from_generator(gen, features=feats, gen_kwargs={"n": 2})}
                    ).save_to_disk(str(data_dir))
    return model_dir, data_dir


class StepTimer:
    """A TrainerCallback recording the wall time of each optimiser step (CUDA synchronised)."""

    def __new__(cls):
        import torch
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times, self._t = [], None
                self.prof = None

            def on_train_begin(self, args, state, control, model=None, **kw):
                base = model.get_base_model() if hasattr(model, "get_base_model") else model
                cfg = getattr(base, "config", None)
                impl = {k: getattr(getattr(cfg, k, None), "_attn_implementation", None)
                        for k in ("text_config", "vision_config")}
                print("ATTN " + json.dumps({"model": getattr(cfg, "_attn_implementation", None), **impl}), flush=True)

            def on_step_begin(self, args, state, control, **kw):
                torch.cuda.synchronize()
                # HUBKIT_BENCH_PROFILE=file: torch.profiler over steps 5-6 (after warm-up), a kernel table to file.
                if os.environ.get("HUBKIT_BENCH_PROFILE") and len(self.times) == 4:
                    self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                                   torch.profiler.ProfilerActivity.CUDA])
                    self.prof.__enter__()
                self._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                torch.cuda.synchronize()
                self.times.append(time.perf_counter() - self._t)
                if self.prof is not None and len(self.times) == 6:
                    self.prof.__exit__(None, None, None)
                    ka = self.prof.key_averages()
                    with open(os.environ["HUBKIT_BENCH_PROFILE"], "w") as f:
                        f.write(ka.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=90))
                        f.write("\n\n" + ka.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90))
                    self.prof = None

        return _Timer()


def _rows(data_dir: Path):
    from datasets import load_from_disk

    from hubkit.chat import build_chat_row

    ds = load_from_disk(str(data_dir))["train"]
    cols = ds.column_names
    # A lazily mapped stream (as hubkit trains): chat rows stay Python objects, never re-encoded to Arrow.
    return ds.to_iterable_dataset().map(lambda r: build_chat_row(r["images"], r["views"], r["prompt"], r["target"]),
                                        remove_columns=cols).repeat(None)


def _lora_kwargs():
    return dict(r=16, lora_alpha=32, lora_dropout=0.05, bias="none")


def _sft_args(out: Path, steps: int, batch: int = 1, **extra):
    from trl import SFTConfig

    return SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                     gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="cosine",
                     warmup_steps=1, weight_decay=0.01, bf16=True, logging_steps=1000, save_strategy="no",
                     eval_strategy="no", report_to=[], gradient_checkpointing=True,
                     gradient_checkpointing_kwargs={"use_reentrant": False}, remove_unused_columns=False,
                     dataset_text_field="", dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
                     completion_only_loss=True, **extra)


def run_plain(model_dir: Path, data_dir: Path, steps: int, work: Path, batch: int = 1) -> list[float]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, quantization_config=q, dtype=torch.bfloat16,
                                                        device_map={"": 0}, attn_implementation="sdpa")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = r".*(?:vision_tower|language_model).*\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|out_proj|fc1|fc2)"
    model = get_peft_model(model, LoraConfig(target_modules=targets, task_type="CAUSAL_LM", **_lora_kwargs()))
    processor = AutoProcessor.from_pretrained(model_dir)
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=_sft_args(work / "plain", steps, batch), train_dataset=_rows(data_dir),
                         data_collator=DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True),
                         processing_class=processor, callbacks=[timer])
    trainer.train()
    return timer.times


def run_unsloth(model_dir: Path, data_dir: Path, steps: int, work: Path, batch: int = 1) -> list[float]:
    import unsloth  # noqa: F401  first, before trl/transformers/peft
    from trl import SFTTrainer
    from unsloth import FastVisionModel
    from unsloth.trainer import UnslothVisionDataCollator

    model, processor = FastVisionModel.from_pretrained(str(model_dir), load_in_4bit=True, use_exact_model_name=True,
                                                       max_seq_length=4096, use_gradient_checkpointing="unsloth")
    model = FastVisionModel.get_peft_model(model, finetune_vision_layers=True, finetune_language_layers=True,
                                           finetune_attention_modules=True, finetune_mlp_modules=True,
                                           use_gradient_checkpointing="unsloth", **_lora_kwargs())
    FastVisionModel.for_training(model)
    timer = StepTimer()
    args = _sft_args(work / "unsloth", steps, batch)
    trainer = SFTTrainer(model=model, args=args, train_dataset=_rows(data_dir), processing_class=processor,
                         data_collator=UnslothVisionDataCollator(model, processor, completion_only_loss=True,
                                                                 resize=processor.image_processor.size["height"]),
                         callbacks=[timer])
    trainer.train()
    return timer.times


def timed_hubkit_train(data_dir: Path, model_dir: Path, run_dir: Path, backend: str, batch: int, steps: int,
                       workers: int, attn: str = "auto") -> list[float]:
    """`hubkit.training.train` with a bench recipe (no eval/save inside the timed steps); returns each step's time."""
    import hubkit.training.recipe as ht
    from hubkit.config import TrainConfig

    timers = []
    callbacks = ht._callbacks

    def with_timer(*a, **kw):  # measure hubkit's own loop from inside; built after train() imported unsloth
        timers.append(StepTimer())
        return callbacks(*a, **kw) + timers

    ht._callbacks = with_timer
    cfg = TrainConfig(backend=backend, max_steps=steps, per_device_train_batch_size=batch,
                      gradient_accumulation_steps=1, eval_steps=10_000, save_steps=10_000, logging_steps=5,
                      early_stopping_patience=0, eval_on_start=False, load_best_model_at_end=False,
                      dataloader_num_workers=workers,  # PNG decode + processor overlap the GPU step
                      # this dataset has no manifest to size the budget from (hubkit's builds do): its own count
                      max_length=json.loads((data_dir.parent / f"tokens-{_layout(data_dir)}.json").read_text())[
                          "tokens_per_example"] + 16,
                      **({"vision_attn_implementation": attn[len("vision:"):]} if attn.startswith("vision:")
                         else {"attn_implementation": attn}))
    ht.train(str(data_dir), str(model_dir), run_dir, cfg)
    return timers[0].times


def _layout(data_dir: Path) -> str:
    return "slices" if data_dir.name == "dataset" else data_dir.name.removeprefix("dataset-")


def run_hubkit(model_dir: Path, data_dir: Path, steps: int, work: Path, batch: int = 1,
               workers: int = 2, attn: str = "auto") -> list[float]:
    return timed_hubkit_train(data_dir, model_dir, work / f"hubkit-{data_dir.name}-b{batch}", "unsloth", batch, steps,
                              workers, attn)


def run_measured(cmd: list[str], log: Path, timeout: int, ident: dict, env: dict | None = None) -> dict:
    """Run one measurement process; its last `RESULT {...}` line (or the error) + wall time; output kept in `log`."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        log.write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:])
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        rec = json.loads(lines[-1][7:]) if lines else {**ident, "error": proc.stderr[-1500:]}
    except subprocess.TimeoutExpired:
        rec = {**ident, "error": f"timed out after {timeout}s"}
    rec["wall_s"] = round(time.perf_counter() - t, 1)
    return rec


def emit(rec: dict, out: str | None) -> None:
    """Print one JSON line and append it to `out` when given."""
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def tokens_per_example(model_dir: Path, data_dir: Path) -> int:
    from datasets import load_from_disk
    from transformers import AutoProcessor

    from hubkit.chat import build_chat_row

    proc = AutoProcessor.from_pretrained(model_dir)
    r = load_from_disk(str(data_dir))["train"][0]
    row = build_chat_row(r["images"], r["views"], r["prompt"], r["target"])
    text = proc.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    return int(proc(text=[text], images=[row["images"]], return_tensors="pt")["input_ids"].shape[1])


def load_views(data_dir: Path) -> list[str]:
    from datasets import load_from_disk

    return load_from_disk(str(data_dir))["train"][0]["views"]


def child(args) -> None:
    work = Path(args.work)
    model_dir, data_dir = paths(work, args.layout)
    tokens = work / f"tokens-{args.layout}.json"
    if args.child == "prepare":  # own process: it imports transformers, which must not precede unsloth
        prepare(work, layout=args.layout)
        tokens.write_text(json.dumps({"tokens_per_example": tokens_per_example(model_dir, data_dir)}))
        return
    if args.child == "unsloth":
        import unsloth  # noqa: F401  before anything imports transformers
    import torch

    torch.cuda.reset_peak_memory_stats()
    fn = {"plain": run_plain, "unsloth": run_unsloth, "hubkit": run_hubkit}[args.child]
    extra = {"batch": args.batch, **({"workers": args.workers, "attn": args.attn} if args.child == "hubkit" else {})}
    times = fn(model_dir, data_dir, args.steps, work, **extra)
    timed = times[args.warmup:]
    tok = json.loads(tokens.read_text())["tokens_per_example"] * args.batch
    med = statistics.median(timed)
    print("RESULT " + json.dumps({
        "method": args.child, "layout": args.layout, "images": len(load_views(data_dir)), "batch": args.batch,
        **({"attn": args.attn} if args.child == "hubkit" else {}),
        "steps_timed": len(timed), "first_step_s": round(times[0], 2),
        "median_s_per_step": round(med, 4), "tokens_per_step": tok, "tokens_per_s": round(tok / med, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "device": torch.cuda.get_device_name(0)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/hubkit-bench")
    ap.add_argument("--out", default=None, help="append result lines to this JSONL file")
    ap.add_argument("--only", nargs="*", default=["hubkit", "plain", "unsloth"])
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="*", default=None,
                    help="also run hubkit at these batch sizes (same warm machine), e.g. 2 4")
    ap.add_argument("--workers", type=int, default=2, help="hubkit's dataloader workers")
    ap.add_argument("--timeout", type=int, default=420, help="seconds per method")
    ap.add_argument("--attn", default="auto", help="hubkit's attn_implementation (TrainConfig), e.g. sdpa; "
                    "vision:sdpa sets vision_attn_implementation only")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="slices", help="images per example (see above)")
    ap.add_argument("--child", choices=["prepare", "plain", "unsloth", "hubkit"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    results = {}
    env = dict(os.environ)  # hubkit must be installed (its dataset_builder/cards map into the package)
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: with several visible, Trainer would use DataParallel
    prep = subprocess.run([sys.executable, __file__, "--child", "prepare", "--work", args.work,
                           "--layout", args.layout], env=env,
                          capture_output=True, text=True)
    if prep.returncode:
        print(json.dumps({"prepare_error": prep.stderr[-2000:]}), flush=True)
        return
    runs = [(m, args.batch) for m in args.only] + [("hubkit", b) for b in (args.batches or [])]
    for method, batch in runs:
        cmd = [sys.executable, __file__, "--child", method, "--work", args.work, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(batch), "--workers", str(args.workers),
               "--attn", args.attn, "--layout", args.layout]
        rec = run_measured(cmd, Path(args.work, f"{method}-b{batch}.log"), args.timeout,
                           {"method": method, "layout": args.layout, "batch": batch}, env)
        if batch == args.batch:  # the ratios compare the three methods at the same batch
            results[method] = rec
        emit(rec, args.out)
    ok = {m: r for m, r in results.items() if "tokens_per_s" in r}
    summary = {"summary": True}
    if "plain" in ok and "hubkit" in ok:
        summary["hubkit_over_plain_tokens_per_s"] = round(ok["hubkit"]["tokens_per_s"] / ok["plain"]["tokens_per_s"], 3)
        summary["hubkit_over_plain_peak_mem"] = round(ok["hubkit"]["peak_gpu_gib"] / ok["plain"]["peak_gpu_gib"], 3)
    if "unsloth" in ok and "hubkit" in ok:
        summary["hubkit_over_unsloth_tokens_per_s"] = round(ok["hubkit"]["tokens_per_s"] / ok["unsloth"]["tokens_per_s"], 3)
    emit(summary, args.out)

if __name__ == "__main__":
    main()
