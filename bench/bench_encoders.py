"""Encoder training-step throughput and peak memory: ConvNeXt V2 atto and base at 500 Hz x 10 s.

Each configuration runs forward + backward on random ECGs in its own fresh process, so that its peak memory
is its own. The baseline column is the original ESI's "time" downsampling norm measured in the same run:
the cost of our default "channel" norm relative to it (time per ECG, channel / time).

    .venv/bin/python bench/bench_encoders.py                 # CPU, batch 2
    .venv/bin/python bench/bench_encoders.py --device cuda --batch 64 --steps 10

Peak memory: on CUDA the allocator's peak; on CPU the growth of the process's peak resident memory during
the steps over its value once the model and the batch exist (activations, gradients, workspace).
"""

from __future__ import annotations

import argparse
import resource

from tqdm import tqdm

from _timing import in_fresh_process, time_steps


def measure(name: str, norm: str, batch: int, length: int, steps: int, device: str, threads: int) -> dict:
    """Time `steps` forward+backward passes (after one warm-up) of encoder `name`; return ECG/s and peak MiB."""
    import torch

    from esi.models import create_encoder

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = create_encoder(name, downsample_norm=norm).to(device).train()
    x = torch.randn(batch, 12, length, device=device)
    projection = torch.randn(encoder.dim, device=device)  # a scalar loss that depends on every feature

    def step():
        encoder.zero_grad(set_to_none=True)
        loss = (encoder.encode(x) @ projection).sum()
        loss.backward()

    _, step_s = time_steps(step, warmup=1, steps=steps, device=device)
    if device == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        # The process's peak resident memory (ru_maxrss, KiB on Linux); main() subtracts the peak of a
        # process that only builds the model and the batch.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ecg_per_s": batch / step_s, "peak_mib": peak_mib}


def resident_baseline(name: str, norm: str, batch: int, length: int, device: str) -> float:
    """Peak resident MiB of a process that builds the model and the batch but runs no step."""
    import torch

    from esi.models import create_encoder

    encoder = create_encoder(name, downsample_norm=norm).to(device)
    x = torch.randn(batch, 12, length, device=device)
    del encoder, x
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["convnextv2_atto", "convnextv2_base"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=5000, help="samples per ECG (500 Hz x 10 s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()

    configs = [(name, norm) for name in args.models for norm in ("time", "channel")]
    results = {}
    for name, norm in tqdm(configs, desc="encoders", unit="config"):
        result = in_fresh_process(measure, name, norm, args.batch, args.length, args.steps, args.device,
                                  args.threads)
        if args.device == "cpu":
            result["peak_mib"] -= in_fresh_process(resident_baseline, name, norm, args.batch, args.length, "cpu")
        results[name, norm] = result

    threads = args.threads or "default"
    print(f"\nforward+backward, batch {args.batch} x 12 x {args.length}, {args.steps} steps, {args.device}, "
          f"threads: {threads}")
    header = f"{'encoder':<18} {'norm':<8} {'ECG/s':>8} {'peak MiB':>9} {'cost vs time norm':>18}"
    print(header)
    print("-" * len(header))
    for (name, norm), r in results.items():
        cost = results[name, "time"]["ecg_per_s"] / r["ecg_per_s"]  # time per ECG relative to the "time" norm
        print(f"{name:<18} {norm:<8} {r['ecg_per_s']:>8.1f} {r['peak_mib']:>9.0f} {cost:>17.2f}x")


if __name__ == "__main__":
    main()
