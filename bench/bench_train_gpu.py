"""Pretraining step on one GPU: pairs per second and model FLOPs utilisation (MFU), ESI recipe vs the original.

The model is the paper's size: ConvNeXt V2 base on 500 Hz x 10 s ECGs and a BERT-base text encoder (built from
transformers' BertConfig() with random weights: nothing is downloaded; the tokenizer is the bundled MiniLM's,
which has BERT's uncased vocabulary), texts of 256 tokens composed as for MIMIC-IV-ECG, the caption decoder of
4 blocks. One step = forward (contrastive + caption losses), backward, gradient clipping, AdamW.

Recipes, each in its own fresh process, measured in the same run:
  original   the original ESI code's settings: fp16 autocast with a GradScaler, eager, per-GPU negatives
             (local_loss=True), AdamW (foreach);
  esi        what `esi.train` does on CUDA: bf16 autocast (no scaler), torch.compile, fused AdamW, global negatives.
Goals: esi >= 3x the original's pairs/s, and MFU >= 40 %.

MFU = (FLOPs of one step, counted once with torch.utils.flop_counter.FlopCounterMode on the eager model) /
(measured step time) / (the GPU's peak dense bf16 FLOP/s: from the table below by device name, or --peak-tflops).

    .venv/bin/python bench/bench_train_gpu.py                       # CUDA, batch 64
    .venv/bin/python bench/bench_train_gpu.py --batch 128 --peak-tflops 989
    .venv/bin/python bench/bench_train_gpu.py --device cpu --tiny   # smoke test of the script itself, no GPU
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import in_fresh_process, time_steps  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Peak dense (no sparsity) bf16 tensor-core throughput, TFLOP/s, from the vendors' data sheets. First match wins.
PEAK_BF16_TFLOPS = [
    (r"\bB200\b", 2250.0),
    (r"\bH200\b", 989.0),
    (r"\bGH200\b", 989.0),
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b", 989.0),          # SXM (HBM3)
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]

RECIPES = {
    "original": {"amp": "fp16", "compile": False, "fused_adamw": False, "local_loss": True},
    "esi": {"amp": "bf16", "compile": True, "fused_adamw": True, "local_loss": False},
}


def peak_tflops(device_name: str) -> float | None:
    """The table's peak dense bf16 TFLOP/s for a device name such as "NVIDIA H100 80GB HBM3", or None."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def build_model(tiny: bool, local_loss: bool, max_text_length: int):
    """ConvNeXt V2 base + BERT-base (random weights) with the paper's decoder; --tiny: atto + a 2-layer BERT."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from esi.models.esi_model import ESIConfig, ESIModel
    from esi.models.text_encoder import TextEncoder, bundled_minilm_path

    torch.manual_seed(0)
    if tiny:
        bert = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        config = ESIConfig(ecg_encoder="convnextv2_atto", max_text_length=max_text_length, latent_dim=64,
                           n_queries=8, decoder_depth=1, decoder_heads=2, local_loss=local_loss)
    else:
        bert = BertConfig()        # BERT-base: 12 layers, 768 wide, 30522-token vocabulary
        config = ESIConfig(ecg_encoder="convnextv2_base", max_text_length=max_text_length, local_loss=local_loss)
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    text_encoder = TextEncoder(BertModel(bert, add_pooling_layer=False), tokenizer, "cls", "bert-base (random init)")
    config.text_encoder = text_encoder.name
    return ESIModel(config, text_encoder=text_encoder)


def measure(recipe: str, device: str, tiny: bool, batch: int, length: int, max_text_length: int, warmup: int,
            steps: int, count_flops: bool, compile_mode: str) -> dict:
    """Run `warmup` + `steps` training steps of one recipe; pairs/s, step time, peak memory (and FLOPs/step)."""
    import torch

    from bench_train import real_length_texts

    settings = RECIPES[recipe]
    model = build_model(tiny, settings["local_loss"], max_text_length).to(device).train()
    tokens = model.tokenize(real_length_texts(batch))
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    ecg = torch.randn(batch, 12, length, device=device)
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}[settings["amp"]]
    scaler = torch.amp.GradScaler(device, enabled=amp == torch.float16)
    optimizer = torch.optim.AdamW(model.param_groups(1e-4, 1e-5, 0.05), betas=(0.9, 0.98), eps=1e-6,
                                  fused=settings["fused_adamw"])

    flops = None
    if count_flops:
        # Model FLOPs of one forward + backward, counted on the eager model (what the compiled one computes too).
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autocast(device, dtype=amp):
                loss = model(ecg, ids, mask)["loss"]
            loss.backward()
        flops = counter.get_total_flops()
        optimizer.zero_grad(set_to_none=True)

    net = torch.compile(model, mode=compile_mode) if settings["compile"] else model

    def step() -> None:
        with torch.autocast(device, dtype=amp):
            loss = net(ecg, ids, mask)["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    warmup_s, step_s = time_steps(step, warmup, steps, device)   # warm-up: compilation, autotuning, AdamW state
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"pairs_per_s": batch / step_s, "step_s": step_s, "warmup_s": warmup_s, "peak_gib": peak_gib,
            "flops": flops, "text_tokens": int(ids.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="atto + a 2-layer BERT on short inputs (smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="pairs per step (default 64; --tiny: 4)")
    parser.add_argument("--length", type=int, default=None, help="ECG samples (default 5000 = 500 Hz x 10 s)")
    parser.add_argument("--max-text-length", type=int, default=None, help="tokens per text (default 256)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense bf16 TFLOP/s (default: looked up by device name)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the esi recipe (default, max-autotune, ...)")
    args = parser.parse_args()
    batch = args.batch or (4 if args.tiny else 64)
    length = args.length or (500 if args.tiny else 5000)
    max_text_length = args.max_text_length or (64 if args.tiny else 256)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        # Not an error of the benchmark: there is nothing to measure here (make bench runs on CPU machines too).
        print("bench_train_gpu: no CUDA device is available, nothing measured. Run it on a GPU node, or smoke-test "
              "the script on CPU with: --device cpu --tiny", file=sys.stderr)
        return
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    peak = args.peak_tflops or (peak_tflops(device_name) if args.device == "cuda" else None)

    results = {}
    for k, recipe in enumerate(RECIPES):
        print(f"measuring {recipe} ...", flush=True)
        results[recipe] = in_fresh_process(measure, recipe, args.device, args.tiny, batch, length, max_text_length,
                                           args.warmup, args.steps, k == 0, args.compile_mode)
    flops = results["original"]["flops"]

    model = "atto + 2-layer BERT (tiny)" if args.tiny else "ConvNeXt V2 base + BERT-base"
    print(f"\n{model} on {device_name}: batch {batch} x 12 x {length} ECG samples + "
          f"{results['original']['text_tokens']}-token texts; {args.steps} timed steps after {args.warmup} warm-up; "
          f"{flops / 1e12:.3f} TFLOP per step")
    header = (f"{'recipe':<9} {'pairs/s':>9} {'vs original':>12} {'step ms':>9} {'MFU':>7} {'peak GiB':>9} "
              f"{'warm-up s':>10}")
    print(header)
    print("-" * len(header))
    for recipe, r in results.items():
        ratio = r["pairs_per_s"] / results["original"]["pairs_per_s"]
        mfu = f"{100 * flops / r['step_s'] / (peak * 1e12):6.1f}%" if peak else "    n/a"
        print(f"{recipe:<9} {r['pairs_per_s']:>9.1f} {ratio:>11.2f}x {1000 * r['step_s']:>9.1f} {mfu:>7} "
              f"{r['peak_gib']:>9.2f} {r['warmup_s']:>10.1f}")
    ratio = results["esi"]["pairs_per_s"] / results["original"]["pairs_per_s"]
    print(f"goals: esi / original >= 3x (measured {ratio:.2f}x); MFU >= 40 % "
          + (f"(measured {100 * flops / results['esi']['step_s'] / (peak * 1e12):.1f} % of {peak:g} TFLOP/s)"
             if peak else "(unknown peak: pass --peak-tflops)"))


if __name__ == "__main__":
    main()
