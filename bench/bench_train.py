"""Pretraining step on CPU: ECG-text pairs per second and peak resident memory, ConvNeXt V2 atto and base.

One step is what `esi.train` does per optimizer step: forward (contrastive + caption losses), backward, gradient
clipping, AdamW. The batch is synthetic ECGs of 500 Hz x 10 s and real-length texts: the ESI paper's MIMIC
texts (demographics, machine statements, their waveform descriptions from the paper's dictionary in ../shared),
tokenised by the bundled MiniLM and cut at 256 tokens.

Recipes, each measured in its own fresh process (so that its peak memory is its own):
  original   the original ESI settings: per-rank negatives (local_loss=True), eager, fp32;
  esi        this project's settings on CPU: global negatives (the same as local on one process), fp32
             ("auto" precision is fp32 on CPU), torch.compile;
  esi-bf16   the same with bf16 autocast (only with --recipes: fast only on CPUs with bf16 matrix units, e.g.
             AMX; elsewhere bf16 is emulated and many times slower).
The ratio column is pairs/s over the original recipe's, for the same encoder, measured in the same run.

    .venv/bin/python bench/bench_train.py                       # batch 4, 3 timed steps after 2 warm-up steps
    .venv/bin/python bench/bench_train.py --models convnextv2_atto --recipes original esi esi-bf16 --threads 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import in_fresh_process, time_steps  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = REPO.parent / "shared"
RECIPES = {
    "original": {"local_loss": True, "compile": False, "amp": None},
    "esi": {"local_loss": False, "compile": True, "amp": None},
    "esi-bf16": {"local_loss": False, "compile": True, "amp": "bf16"},
}


def real_length_texts(n: int, seed: int = 0) -> list[str]:
    """n pretraining texts composed as for MIMIC-IV-ECG: 1-4 statements of the ESI dictionary + descriptions."""
    import json
    import random

    from esi.data.text import compose_text

    path = SHARED / "data" / "esi_mimic_waveform_dict.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: the bench composes its texts from the ESI paper's dictionary in "
                         "../shared (beside the checkout)")
    descriptions = json.loads(path.read_text())
    statements = sorted(descriptions)
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        chosen = rng.sample(statements, rng.randint(1, 4))
        texts.append(compose_text(chosen, descriptions, gender=rng.choice("MF"), age=rng.randint(20, 90)).text)
    return texts


def measure(encoder: str, recipe: str, batch: int, length: int, max_text_length: int, warmup: int, steps: int,
            threads: int) -> dict:
    """Build the model and a batch, run `warmup` + `steps` training steps; pairs/s and memory of the timed ones."""
    import psutil
    import torch

    from esi.models.esi_model import ESIConfig, ESIModel

    if threads:
        torch.set_num_threads(threads)
    settings = RECIPES[recipe]
    torch.manual_seed(0)
    model = ESIModel(ESIConfig(ecg_encoder=encoder, text_encoder="minilm", max_text_length=max_text_length,
                               local_loss=settings["local_loss"])).train()
    tokens = model.tokenize(real_length_texts(batch))
    ecg = torch.randn(batch, 12, length)
    optimizer = torch.optim.AdamW(model.param_groups(1e-4, 1e-5, 0.05), betas=(0.9, 0.98), eps=1e-6)
    net = torch.compile(model) if settings["compile"] else model
    amp = {"bf16": torch.bfloat16, None: None}[settings["amp"]]

    def step() -> None:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = net(ecg, tokens["input_ids"], tokens["attention_mask"])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    resident_before = psutil.Process().memory_info().rss
    warmup_s, step_s = time_steps(step, warmup, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # bytes (ru_maxrss is KiB on Linux)
    return {"pairs_per_s": batch / step_s, "peak_mib": peak / 2**20,
            "step_mib": (peak - resident_before) / 2**20, "warmup_s": warmup_s,
            "text_tokens": int(tokens["input_ids"].shape[1])}


def main() -> None:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["convnextv2_atto", "convnextv2_base"])
    parser.add_argument("--recipes", nargs="+", default=["original", "esi"], choices=list(RECIPES))
    parser.add_argument("--batch", type=int, default=4, help="ECG-text pairs per step")
    parser.add_argument("--length", type=int, default=5000, help="samples per ECG (500 Hz x 10 s)")
    parser.add_argument("--max-text-length", type=int, default=256, help="tokens per text (the paper's 256)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if "original" not in args.recipes:
        args.recipes = ["original", *args.recipes]     # the baseline of the ratio column

    results = {}
    configs = [(m, r) for m in args.models for r in args.recipes]
    for model, recipe in tqdm(configs, desc="configurations", unit="config"):
        results[model, recipe] = in_fresh_process(measure, model, recipe, args.batch, args.length,
                                                  args.max_text_length, args.warmup, args.steps, args.threads)

    tokens = next(iter(results.values()))["text_tokens"]
    print(f"\ntraining step on CPU (threads: {args.threads or 'default'}), batch {args.batch} x 12 x {args.length} "
          f"ECG samples + {tokens}-token texts, MiniLM; {args.steps} timed steps after {args.warmup} warm-up")
    header = (f"{'encoder':<17} {'recipe':<9} {'pairs/s':>8} {'vs original':>12} {'peak RSS MiB':>13} "
              f"{'step MiB':>9} {'warm-up s':>10}")
    print(header)
    print("-" * len(header))
    for (model, recipe), r in results.items():
        ratio = r["pairs_per_s"] / results[model, "original"]["pairs_per_s"]
        print(f"{model:<17} {recipe:<9} {r['pairs_per_s']:>8.2f} {ratio:>11.2f}x {r['peak_mib']:>13.0f} "
              f"{r['step_mib']:>9.0f} {r['warmup_s']:>10.1f}")
    print("peak RSS: the whole process; step MiB: its growth over the resident memory once the model and batch "
          "existed (activations, gradients, AdamW state, compiled kernels).")


if __name__ == "__main__":
    main()
