"""Evaluation speed: frozen-feature extraction throughput and the wall time of each protocol on PTB-XL.

1. Feature extraction (ECGs/s) of random-init ConvNeXt V2 atto and xresnet1d101 over every record of a PTB-XL
   folder at 100 Hz, the way esi.evaluate does it (converted store, batches, inference mode), against a baseline
   measured in the same run: the straightforward loop that reads each WFDB record with `read_ecg`, normalises it
   and runs the encoder on it alone (on the first --baseline-records records). A second call shows the cache.
2. Wall time of each protocol on the same records, with the small settings printed: linear probe, PTB-XL
   benchmark (supervised xresnet1d101), zero-shot (a random small ESI model), identification.

    .venv/bin/python bench/bench_evaluate.py                           # the 500 records of ../shared (CPU)
    .venv/bin/python bench/bench_evaluate.py --ptbxl /data/ptb-xl --device cuda --batch 256 --skip-protocols

The whole evaluation on a real download is `python -m esi.evaluate --config params/ptbxl_benchmark.yaml`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SHARED_PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl"


def baseline_throughput(encoder, ptbxl_root: Path, n_records: int, device: str) -> float:
    """ECGs/s of reading each record with read_ecg and encoding it alone (batch of one)."""
    import torch

    from esi.data.ptbxl import load_database
    from esi.data.reader import read_ecg
    from esi.data.transforms import normalize

    database = load_database(ptbxl_root).head(n_records)
    paths = [str(ptbxl_root / name) for name in database["filename_lr"]]
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = normalize(read_ecg(path).signal, encoder.normalize)
            encoder.module.encode(torch.from_numpy(x)[None].to(device)).cpu()
    return len(paths) / (time.perf_counter() - start)


def extraction(args, workspace) -> list[dict]:
    """Throughput of our extraction vs the baseline, and of a cached second call, for each encoder."""
    import torch

    from esi.evaluate import EncoderSpec, load_encoder

    rows = []
    for architecture in args.encoders:
        spec = EncoderSpec(kind="random", architecture=architecture, fs=100, normalize="per_lead")
        encoder = load_encoder(spec, args.device)
        store = workspace.dataset.store(100)
        with torch.inference_mode():
            encoder.module.encode(torch.zeros(2, 12, 1000, device=args.device))  # warm-up: allocator, kernels
        start = time.perf_counter()
        features = workspace.features(encoder)
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = workspace.features(encoder)
        cached = time.perf_counter() - start
        assert not features.from_cache and again.from_cache
        base = baseline_throughput(encoder, workspace.dataset.root, args.baseline_records, args.device)
        ours = len(store) / first
        rows.append({"encoder": architecture, "records": len(store), "ours_ecg_per_s": ours,
                     "baseline_ecg_per_s": base, "ratio": ours / base, "cached_s": cached,
                     "cache_speedup": first / cached})
    return rows


def protocols(args, workspace) -> list[dict]:
    """Wall time of each protocol with small settings (printed with the result)."""
    import torch

    from esi.evaluate import (BenchmarkSettings, EncoderSpec, run_identification, run_linear_probe, run_benchmark,
                              run_zero_shot)
    from esi.models.esi_model import ESIConfig, ESIModel

    atto = EncoderSpec(kind="random", architecture="convnextv2_atto", fs=100, normalize="per_lead")
    torch.manual_seed(1)
    config = ESIConfig(ecg_encoder="convnextv2_atto", text_encoder="minilm", max_text_length=128, latent_dim=64,
                       n_queries=8, decoder_depth=1, decoder_heads=4)
    esi_dir = ESIModel(config).save_pretrained(workspace.run_dir / "esi_random")
    (esi_dir / "preprocessing.json").write_text(json.dumps({"fs": 100.0, "normalize": "per_lead"}))
    esi = EncoderSpec(kind="esi", path=str(esi_dir))

    plans = [
        ("linear probe", f"atto (cached features), superdiagnostic, fractions 1/10/100 %, {args.probe_epochs} epochs",
         lambda: run_linear_probe([atto], workspace, tasks=["superdiagnostic"], fractions=[0.01, 0.1, 1.0],
                                  epochs=args.probe_epochs, random_baselines=False)),
        ("PTB-XL benchmark", f"xresnet1d101 from scratch, superdiagnostic, {args.benchmark_epochs} epoch(s), "
                             f"batch {args.benchmark_batch}",
         lambda: run_benchmark([], workspace, BenchmarkSettings(
             tasks=["superdiagnostic"], epochs=args.benchmark_epochs, batch_size=args.benchmark_batch,
             save_models=False))),
        ("zero-shot", "random small ESI (atto + MiniLM) and its random twin, superdiagnostic, class names only",
         lambda: run_zero_shot([esi], workspace, tasks=["superdiagnostic"])),
        ("identification", "atto (cached features), all patients with >= 2 records",
         lambda: run_identification([atto], workspace, random_baselines=False)),
    ]
    rows = []
    for name, settings, run in plans:
        start = time.perf_counter()
        result = run()
        rows.append({"protocol": name, "seconds": time.perf_counter() - start, "results": len(result.table),
                     "settings": settings})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl", type=Path, default=SHARED_PTBXL, help="PTB-XL folder (default: ../shared's 500)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--batch", type=int, default=32, help="records per forward pass when extracting")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--encoders", nargs="+", default=["convnextv2_atto", "xresnet1d101"])
    parser.add_argument("--baseline-records", type=int, default=64, help="records the per-record baseline reads")
    parser.add_argument("--probe-epochs", type=int, default=20)
    parser.add_argument("--benchmark-epochs", type=int, default=1)
    parser.add_argument("--benchmark-batch", type=int, default=64)
    parser.add_argument("--skip-protocols", action="store_true", help="only measure feature extraction")
    args = parser.parse_args()

    import torch

    from esi.evaluate import Workspace

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        workspace = Workspace(Path(tmp), args.ptbxl, device=args.device, batch_size=args.batch, progress=False)
        start = time.perf_counter()
        store = workspace.dataset.store(100)
        print(f"PTB-XL at 100 Hz: {len(store)} records converted in {time.perf_counter() - start:.1f} s "
              f"(device {args.device}, {torch.get_num_threads()} torch threads, batch {args.batch})")
        print("\nfeature extraction, whole 10 s records (ours: store + batches; baseline: read_ecg + one record "
              "per forward pass)")
        print(f"{'encoder':<18}{'records':>8}{'ours ECG/s':>12}{'baseline':>10}{'ratio':>8}"
              f"{'cached call':>13}{'cache x':>9}")
        for row in extraction(args, workspace):
            print(f"{row['encoder']:<18}{row['records']:>8}{row['ours_ecg_per_s']:>12.1f}"
                  f"{row['baseline_ecg_per_s']:>10.1f}{row['ratio']:>8.2f}{row['cached_s']:>12.3f}s"
                  f"{row['cache_speedup']:>9.0f}")
        if not args.skip_protocols:
            print("\nprotocol wall time on these records")
            for row in protocols(args, workspace):
                print(f"{row['protocol']:<18}{row['seconds']:>8.1f} s  {row['results']} result rows  "
                      f"({row['settings']})")


if __name__ == "__main__":
    main()
