"""Benchmark what consumers run: `pipeline("lumbar-classify", model=run)` with default arguments on DICOM study
folders, beside the engine figure and the seed's way, in one run on one machine.

Phases (one JSON line per figure, appended to --out as soon as it is measured):

- prepare: a base (random weights with MedGemma 1.5 4B's geometry; `--tiny` for a CPU smoke test), a random LoRA
           adapter saved the way `hubkit train` saves it (PEFT, both towers, r16; a run record with the
           dataset manifest's slice size), and --studies synthetic DICOM study folders (`hubkit synth`).
- product: `import hubkit; pipeline("lumbar-classify", model=RUN)` exactly as a consumer calls it: the load, warm
           batch-1 latency (one study folder per call; median of --repeats) and throughput over all the folders at
           each of --batch-sizes. Run it with another hubkit on PYTHONPATH to measure that version (--label).
- engine:  the same model with `decode_batches` on the studies' slices already in memory (bench/inference.py's
           streamed figure): what the decoder alone reaches.
- seed:    the seed's way: the base in 4-bit + the adapter unmerged, greedy `generate` at batch 1 on the same
           studies' slices, `max_new_tokens=200` (the answer's length forced, as random weights never stop).
- cpu:     the CPU side of the product path, one study at a time on one thread (what the pipeline's default
           background reader does for each batch while the device works): reading the DICOM folder and picking
           slices (`study_from_input`, the run's slice size), then MedGemma's inputs (896 px, 256 tokens per image)
           made by `prepare_inputs` (the default) and by the processor itself (the earlier path). Needs no GPU:
           the product throughput with the default reader cannot exceed 1 / (read + inputs) studies/s on that CPU.

    PYTHONUNBUFFERED=1 python bench/pipeline.py --work /tmp/pb --out /tmp/pb.jsonl --phases prepare product engine seed
    python bench/pipeline.py --work /tmp/pbt --tiny --device cpu --studies 4 --batch-sizes 2 --repeats 1   # smoke
    python bench/pipeline.py --work /tmp/pbc --tiny --device cpu --studies 24 --phases prepare cpu      # CPU side
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_OUT: Path | None = None


def emit(record: dict) -> None:
    line = json.dumps(record, separators=(",", ":"))
    print(line, flush=True)
    if _OUT is not None:
        with _OUT.open("a") as fh:
            fh.write(line + "\n")


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def prepare(work: Path, tiny: bool, device: str, studies: int) -> None:
    """Base, adapter (run folder) and study folders under `work` (each skipped when already there)."""
    import torch

    from hubkit.devkit import base_models
    from hubkit.devkit.synth import synth_cohort

    base, run, cohort = work / "base", work / "run", work / "cohort"
    t0 = time.perf_counter()
    if not (base / "config.json").exists():
        base_models.write_tiny_base(base) if tiny else base_models.write_medgemma_arch_base(base, device=device)
    if not (run / "adapter_config.json").exists():
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from hubkit.config import TrainConfig
        from hubkit.training.backends import lora_target_regex

        cfg = TrainConfig()
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32 if tiny else torch.bfloat16)
        torch.manual_seed(0)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=lora_target_regex(cfg),
                          task_type="CAUSAL_LM", init_lora_weights=False)  # random B: the merge is not a no-op
        peft_model = get_peft_model(model, lora)
        peft_model.peft_config["default"].base_model_name_or_path = str(base)
        peft_model.save_pretrained(run)
        AutoProcessor.from_pretrained(base).save_pretrained(run)
        from hubkit.run_record import DatasetRef, RunRecord, write_run

        manifest = {"schema_version": 1, "slice_size": 448, "picker": "geometry"}
        write_run(run, RunRecord(base_model=str(base), dataset=DatasetRef(manifest=manifest)))
        del model, peft_model
    if not (cohort / "train_images").is_dir():
        import os

        synth_cohort(cohort, studies, seed=11, progress=False, num_proc=max(1, (os.cpu_count() or 2) - 1))
    emit({"what": "prepare", "seconds": round(time.perf_counter() - t0, 1), "studies": studies, "tiny": tiny})


def _load_note(model) -> str:
    """How the base was loaded (what `loading.choose_4bit` chose), from the model itself."""
    return "4-bit nf4 base, LoRA unmerged" if getattr(model, "is_loaded_in_4bit", False) else \
        f"{str(getattr(model, 'dtype', '')).replace('torch.', '')}, LoRA merged"


def _folders(work: Path) -> list[str]:
    return [str(p) for p in sorted((work / "cohort" / "train_images").iterdir()) if p.is_dir()]


def product(work: Path, label: str, batch_sizes: list[int], repeats: int) -> None:
    """The consumer's call, default arguments (whatever hubkit is importable)."""
    import hubkit  # noqa: F401  (registers the task, as the model card says)
    from transformers import pipeline

    folders = _folders(work)
    t0 = time.perf_counter()
    clf = pipeline("lumbar-classify", model=str(work / "run"))
    load_s = time.perf_counter() - t0
    model = clf.model
    emit({"what": "product_load", "code": label, "seconds": round(load_s, 2), "device": str(clf.device),
          "dtype": str(getattr(model, "dtype", "")), "quantized_4bit": bool(getattr(model, "is_loaded_in_4bit", 0)),
          "note": _load_note(model), "num_workers": getattr(clf, "_num_workers", None)})
    for f in folders[:2]:  # warm-up: first CUDA kernels, the DICOM reader's imports
        clf(f)
    times = []
    for f in folders[2:2 + repeats]:
        _sync()
        t = time.perf_counter()
        clf(f)
        _sync()
        times.append(time.perf_counter() - t)
    emit({"what": "product_batch1_latency", "code": label, "median_s": round(statistics.median(times), 4),
          "all_s": [round(x, 4) for x in times]})
    clf(folders[:max(batch_sizes)], batch_size=max(batch_sizes))  # warm-up of the batched path
    for b in batch_sizes:
        _sync()
        t = time.perf_counter()
        outs = clf(folders, batch_size=b)
        _sync()
        dt = time.perf_counter() - t
        assert len(outs) == len(folders)
        emit({"what": "product_throughput", "code": label, "batch_size": b, "studies": len(folders),
              "seconds": round(dt, 2), "studies_per_s": round(len(folders) / dt, 3)})


def _read(folder: str):
    from hubkit.dataset_builder.study import load_study
    from hubkit.inference.studies import StudyInput

    s = load_study(folder, picker="geometry", slice_size=448)
    return StudyInput(s.images, s.views, study_id=s.study_id)


def _slices(work: Path, n: int):
    """The studies' slices as the pipeline reads them (geometry picker, the run's slice size), in memory: read by
    forked processes before anything touches the GPU."""
    import multiprocessing
    import os

    with multiprocessing.get_context("fork").Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        return pool.map(_read, _folders(work)[:n])


def engine(work: Path, batch_size: int) -> None:
    """`decode_batches` on slices in memory with the pipeline's own (bf16, merged) model."""
    from transformers import AutoProcessor

    from hubkit.inference.decoding import decode_batches
    from hubkit.inference.loading import load_model

    studies = _slices(work, 10**6)
    model = load_model(work / "run").to("cuda" if _cuda() else "cpu")
    processor = AutoProcessor.from_pretrained(work / "run")
    list(decode_batches(model, processor, studies[:batch_size], batch_size=batch_size))  # warm-up
    _sync()
    t = time.perf_counter()
    n = len(list(decode_batches(model, processor, studies, batch_size=batch_size)))
    _sync()
    dt = time.perf_counter() - t
    emit({"what": "engine_streamed", "batch_size": batch_size, "studies": n, "seconds": round(dt, 2),
          "studies_per_s": round(n / dt, 3), "note": _load_note(model)})


def cpu_side(work: Path, repeats: int) -> None:
    """Seconds per study of the pipeline's CPU side on this machine's CPU, one thread (see the module docstring):
    reading + picking, then the inputs as `prepare_inputs` makes them (the default) and as the processor itself
    makes them (the path before `hubkit.processor_cache`), on the same studies in the same run."""
    import torch

    from hubkit import schema
    from hubkit.chat import build_chat_row
    from hubkit.devkit.base_models import medgemma_processor
    from hubkit.inference.inputs import study_from_input
    from hubkit.inference.studies import _processor_inputs, prepare_inputs

    def processor_way(study):
        row = build_chat_row(study.images, study.views, schema.build_prompt(study.views))
        text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        return _processor_inputs(processor, [text], [list(row["images"])])

    torch.set_num_threads(1)
    from hubkit.run_record import read_run

    size = read_run(work / "run").slice_size
    processor = medgemma_processor()
    folders = _folders(work)
    first = study_from_input(folders[0], slice_size=size)[0]
    prepare_inputs(processor, [first])  # warm-up: imports, first calls, the one check against the processor
    times: dict[str, list[float]] = {"read_pick_s": [], "prepare_inputs_s": [], "processor_s": []}
    for _ in range(repeats):
        for f in folders:
            t = time.perf_counter()
            study, _ = study_from_input(f, slice_size=size)
            t1 = time.perf_counter()
            prepare_inputs(processor, [study])
            t2 = time.perf_counter()
            processor_way(study)
            t3 = time.perf_counter()
            for k, dt in zip(times, (t1 - t, t2 - t1, t3 - t2)):
                times[k].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"what": "cpu_side_per_study", "studies": len(folders), "repeats": repeats, "slice_size": size,
          **{k: round(v, 4) for k, v in med.items()},
          "one_thread_cap_studies_per_s": round(1 / (med["read_pick_s"] + med["prepare_inputs_s"]), 2),
          "one_thread_cap_processor_way": round(1 / (med["read_pick_s"] + med["processor_s"]), 2),
          "threads": torch.get_num_threads()})


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def seed_way(work: Path, repeats: int, max_new_tokens: int = 200) -> None:
    """4-bit base + unmerged adapter, greedy generate at batch 1 (the seed's inference)."""
    from hubkit import schema
    from hubkit.inference.generate import free_generate
    from hubkit.inference.loading import load_model

    from transformers import AutoProcessor

    studies = _slices(work, repeats + 1)
    model = load_model(work / "run", load_in_4bit=_cuda() or None)
    processor = AutoProcessor.from_pretrained(work / "run")
    answer = len(processor.tokenizer(schema.build_target({}), add_special_tokens=False)["input_ids"]) + 1
    free_generate(model, processor, studies[:1], max_new_tokens=min(answer, max_new_tokens), min_new_tokens=answer)
    times = []
    for s in studies[1:]:
        _sync()
        t = time.perf_counter()
        free_generate(model, processor, [s], max_new_tokens=max_new_tokens, min_new_tokens=answer)
        _sync()
        times.append(time.perf_counter() - t)
    emit({"what": "seed_generate_batch1", "median_s": round(statistics.median(times), 4), "new_tokens": answer,
          "max_new_tokens": max_new_tokens, "note": _load_note(model)})


def main(argv=None) -> int:
    global _OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--phases", nargs="+", default=["prepare", "product", "engine", "seed"],
                    help="any of prepare product engine seed cpu")
    ap.add_argument("--label", default="hubkit", help="names the hubkit version the product phase measured")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--studies", type=int, default=64)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    _OUT = Path(args.out) if args.out else None
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    for phase in args.phases:
        if phase == "prepare":
            prepare(work, args.tiny, args.device, args.studies)
        elif phase == "product":
            product(work, args.label, sizes, args.repeats)
        elif phase == "engine":
            engine(work, max(sizes))
        elif phase == "seed":
            seed_way(work, min(args.repeats, 5))
        elif phase == "cpu":
            cpu_side(work, min(args.repeats, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
