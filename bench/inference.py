"""Benchmark: the seed's free generation vs hubkit's schema-constrained decoding, on one GPU, in one run.

Model: random weights with MedGemma 1.5 4B's exact geometry (`hubkit.devkit.base_models.write_medgemma_arch_base`), bf16,
8 images per study (a ~2.2k-token prompt). Measured, each as the median of several repeats after a
warm-up, one JSON line printed as soon as it is measured:

- seed:        batch 1 (and 8), greedy `generate`; random weights never stop, so the answer length is forced with
               min_new_tokens = max_new_tokens = the answer's token count + <end_of_turn> (the seed's real answer
               length; `--seed-new-tokens 200` gives the seed's max_new_tokens=200 ceiling instead).
- constrained: `hubkit.inference.decoding.constrained_decode` stepwise (1 prefill + 24 cached steps) at batch 1, 8, 32, and
               speculative at batch 1 with a draft that is 85% right (4 of 25 fields wrong, ~ the all-"N" draft on
               real data) and with an exact draft (the floor: prefill + one verification pass).
- streamed:    `hubkit.inference.decoding.decode_batches` (the pipeline's batching loop, images already in memory):
               --stream-batches batches of the largest size back to back, the processor work of the next batch on a
               thread meanwhile.
- split:       vision tower alone (`get_image_features`) per batch size; prefill (vision + text) and decode times
               come from the decoder's own CUDA-synchronised timings.
Ends with a summary line: studies/s and speed-ups over the seed at batch 1. Keep it under ~6 min on an H100.

    PYTHONUNBUFFERED=1 python bench/inference.py --out /tmp/bench.jsonl          # GPU (builds the model, ~40 s)
    python bench/inference.py --device cpu --tiny --repeats 1                    # CPU smoke test, tiny model
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing (the GPU machine)
    sys.path.insert(0, str(REPO))

from hubkit import schema  # noqa: E402
from hubkit.slots import VIEWS  # noqa: E402

_OUT = None


def emit(record: dict) -> None:
    line = json.dumps(record, separators=(",", ":"))
    print(line, flush=True)
    if _OUT is not None:
        with open(_OUT, "a") as fh:
            fh.write(line + "\n")


def make_studies(n: int, size: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    from hubkit.inference.decoding import StudyInput

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        imgs = [Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L")
                for _ in VIEWS]
        out.append(StudyInput(imgs, list(VIEWS), study_id=f"bench{i}"))
    return out


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device):
    """Warm-up once, then `repeats` runs; returns (median seconds, the last result, list of per-run extras)."""
    fn()
    times, extras, res = [], [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        res, extra = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        extras.append(extra)
    return statistics.median(times), res, extras


def med(extras: list[dict], key: str):
    vals = [e[key] for e in extras if key in e]
    return round(statistics.median(vals), 4) if vals else None


def main(argv=None) -> int:
    global _OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (CPU smoke test) instead of MedGemma-arch")
    ap.add_argument("--model-dir", default=None, help="reuse/write the model here (default: a temp folder)")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--seed-batch-sizes", default="1,8")
    ap.add_argument("--seed-new-tokens", type=int, default=0, help="0 = the answer's token count + 1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-batches", type=int, default=3,
                    help="also decode this many batches of the largest size back to back with `decode_batches` "
                         "(the pipeline's path: the next batch's preprocessing overlaps the device); 0 = skip")
    ap.add_argument("--image-size", type=int, default=448, help="side of the input slices (the builder's 448)")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    _OUT = args.out

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hubkit.devkit import base_models
    from hubkit.inference.answer_plan import answer_plan
    from hubkit.inference.decoding import constrained_decode, decode_batches, prepare_inputs
    from hubkit.inference.generate import free_generate

    device = torch.device(args.device)
    t0 = time.perf_counter()
    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="hubkit-bench-"))
    if not (model_dir / "config.json").exists():
        if args.tiny:
            base_models.write_tiny_base(model_dir)
        else:
            base_models.write_medgemma_arch_base(model_dir, device=args.device)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    plan = answer_plan(processor.tokenizer)
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.empty_cache()
    n_answer = len(processor.tokenizer(schema.build_target({}), add_special_tokens=False)["input_ids"]) + 1
    new_tokens = args.seed_new_tokens or n_answer
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    seed_sizes = [int(b) for b in args.seed_batch_sizes.split(",") if b]
    studies = make_studies(max(sizes + seed_sizes + [max(sizes) * args.stream_batches]), args.image_size)
    prompt_tokens = int(prepare_inputs(processor, studies[:1])["input_ids"].shape[1])
    emit({"what": "setup", "model": "tiny" if args.tiny else "medgemma-arch", "device": str(device),
          "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "dtype": str(dtype),
          "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 4), "prompt_tokens": prompt_tokens,
          "images_per_study": len(VIEWS), "answer_tokens": n_answer - 1, "answer_plan": plan.kind,
          "setup_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__})
    results: dict[str, float] = {}

    # vision tower alone
    for b in sizes:
        pv = prepare_inputs(processor, studies[:b])["pixel_values"].to(device, dtype)

        def vision(pv=pv):
            with torch.inference_mode():
                model.get_image_features(pv)
            return None, {}

        s, _, _ = timed(vision, args.repeats, device)
        emit({"what": "vision_tower", "batch": b, "images": int(pv.shape[0]), "s": round(s, 4),
              "s_per_study": round(s / b, 4)})
        del pv

    # the seed's way
    for b in seed_sizes:
        def seed():
            t: dict = {}
            out = free_generate(model, processor, studies[:b], max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, timings=t)
            return out, t

        s, out, ex = timed(seed, max(1, args.repeats - (1 if b > 1 else 0)), device)
        results[f"seed_b{b}"] = b / s
        emit({"what": "seed_generate", "batch": b, "new_tokens": ex[-1]["new_tokens"], "s": round(s, 3),
              "studies_per_s": round(b / s, 3), "ms_per_token": round(1000 * med(ex, "generate_s") / new_tokens, 2),
              "preprocess_s": med(ex, "preprocess_s"),
              "parse_failures": sum(o.parse_failed for o in out)})

    # constrained, stepwise
    last = {}
    for b in sizes:
        def constrained():
            t: dict = {}
            return constrained_decode(model, processor, studies[:b], timings=t), t

        s, out, ex = timed(constrained, args.repeats, device)
        last[b] = out
        results[f"constrained_b{b}"] = b / s
        emit({"what": "constrained_stepwise", "batch": b, "s": round(s, 3), "studies_per_s": round(b / s, 3),
              "preprocess_s": med(ex, "preprocess_s"), "prefill_s": med(ex, "prefill_s"),
              "decode_s": med(ex, "decode_s"), "forward_passes": ex[-1]["passes"],
              "decode_ms_per_step": round(1000 * med(ex, "decode_s") / 24, 2)})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # constrained, streamed: several batches back to back, preprocessing of batch k+1 overlapping batch k
    if args.stream_batches:
        b = max(sizes)
        n = b * args.stream_batches

        def streamed():
            return list(decode_batches(model, processor, studies[:n], batch_size=b, plan=plan)), {}

        s, out, _ = timed(streamed, args.repeats, device)
        results[f"streamed_b{b}"] = n / s
        emit({"what": "constrained_streamed", "batch": b, "studies": n, "s": round(s, 3),
              "studies_per_s": round(n / s, 3), "same_labels_as_one_batch": [p.labels for p in out[:b]]
              == [p.labels for p in last[b]]})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # constrained, speculative (batch 1): realistic draft (4 wrong fields) and exact draft (the floor)
    truth = [last[sizes[0]][0].labels[lv][c] for lv, c in schema.ANSWER_FIELDS]
    rng = random.Random(0)
    wrong = set(rng.sample(range(25), 4))
    drafts = {"85pct": [schema.CODES[(schema.CODES.index(c) + 1) % 3] if i in wrong else c
                        for i, c in enumerate(truth)], "exact": truth}
    for name, draft in drafts.items():
        def spec():
            t: dict = {}
            return constrained_decode(model, processor, studies[:1], method="speculative", draft=draft, timings=t), t

        s, out, ex = timed(spec, args.repeats, device)
        results[f"speculative_{name}_b1"] = 1 / s
        emit({"what": "constrained_speculative", "draft": name, "batch": 1, "s": round(s, 3),
              "studies_per_s": round(1 / s, 3), "prefill_s": med(ex, "prefill_s"), "decode_s": med(ex, "decode_s"),
              "forward_passes": ex[-1]["passes"], "same_labels_as_stepwise": out[0].labels == last[sizes[0]][0].labels})

    base = results.get("seed_b1")
    emit({"what": "summary", "studies_per_s": {k: round(v, 3) for k, v in results.items()},
          "speedup_vs_seed_b1": {k: round(v / base, 1) for k, v in results.items() if base and k != "seed_b1"},
          "total_s": round(time.perf_counter() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
