"""Loading throughput: ECGDataset + DataLoader vs a raw read of the same memory-mapped records.

    python bench/bench_loader.py                       # 20,000 records of 500 Hz x 10 s, batches of 256
    python bench/bench_loader.py --records 5000 --workers 2 --store /tmp/bench_store   # keep/reuse a store

The store is built with the store writer from the real PTB-XL 500 Hz records of ../shared (repeated to reach
--records; 20,000 records are 2.4 GB on disk) and read once before timing, so that every contender reads from
the page cache. Every contender reads the same shuffled batches:
- raw int16: `store.read_raw(batch)`, the bare copy of the records out of the memory maps (one process);
- raw float32: `store.read(batch)`, the same decoded to float32 millivolts (one process);
- ECGDataset through `dataset.loader(...)`: in the main process with 1 and --workers fetch threads, and with
  --workers worker processes, for a few settings.
Goal: >= 20,000 ECGs/s with 2 workers on 2 cores, within 2x of the raw read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from esi.data.datasets import ECGDataset  # noqa: E402
from esi.data.quality import quality_flags  # noqa: E402
from esi.data.reader import read_ecg  # noqa: E402
from esi.data.sources import ptbxl_records  # noqa: E402
from esi.data.store import ChunkWriter, ECGStore, StoreSettings, assemble, prepare_store  # noqa: E402


def build_store(data: Path, out: Path, n_records: int, chunk_size: int = 1000) -> ECGStore:
    """A store of `n_records` 500 Hz x 10 s records: the real PTB-XL records, written again and again."""
    if (out / "index.csv").exists():
        store = ECGStore(out)
        if len(store) == n_records:
            return store
        raise SystemExit(f"{out} holds a store of {len(store)} records, not {n_records}; choose another --store")
    table = ptbxl_records(data, fs=500)
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    ecgs = [read_ecg(r["path"]) for r in records]
    flags = [quality_flags(e) for e in ecgs]
    settings = StoreSettings(fs=500.0, length=5000, source="bench", input=str(data), chunk_size=chunk_size)
    prepare_store(out, settings)
    chunks = []
    for chunk, start in enumerate(range(0, n_records, chunk_size)):
        writer = ChunkWriter(out, settings, chunk, start, min(start + chunk_size, n_records))
        for i in range(start, min(start + chunk_size, n_records)):
            k = i % len(records)
            writer.add({**records[k], "record_id": f"{records[k]['record_id']}-{i // len(records)}"}, ecgs[k], flags[k])
        writer.commit()
        chunks.append(chunk)
    assemble(out, chunks)
    return ECGStore(out)


def batches_of(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def rate(fn, n_records: int) -> float:
    start = time.perf_counter()
    fn()
    return n_records / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl",
                        help="PTB-XL folder (default: ../shared/data/ptbxl)")
    parser.add_argument("--records", type=int, default=20_000, help="records in the store (default 20,000)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--store", type=Path, default=None,
                        help="build (or reuse) the store here and keep it; default: a temporary folder")
    args = parser.parse_args()

    folder = args.store or Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        started = time.perf_counter()
        store = build_store(args.data, folder, args.records)
        print(f"store: {store} (ready in {time.perf_counter() - started:.1f} s)")
        for shard in sorted((folder / "shards").glob("*.bin")):  # into the page cache
            shard.read_bytes()

        n = len(store)
        batches = batches_of(n, args.batch_size, seed=0)
        def read_all(read):
            for batch in batches:
                read(batch)  # each batch is dropped at once, as a training step would

        rows = [("raw int16 read (store.read_raw), 1 process", rate(lambda: read_all(store.read_raw), n)),
                ("raw float32 read (store.read), 1 process", rate(lambda: read_all(store.read), n))]

        settings = [("no normalisation", {}), ("normalize='global' (ESI)", {"normalize": "global"}),
                    ("global + random 2.5 s crop", {"normalize": "global", "crop": 1250})]
        # In-process loading with fetch threads, and loading by worker processes (which hand each batch over
        # in shared memory: fresh pages for every batch).
        modes = [(0, 1), (0, args.workers), (args.workers, 1)]
        for label, options in settings:
            for workers, threads in modes:
                dataset = ECGDataset(store, threads=threads, **options)
                loader = dataset.loader(batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
                next(iter(loader))  # start the workers before timing

                def epoch():
                    for batch in loader:
                        assert batch["ecg"].dtype == torch.float32

                how = f"{workers} worker processes" if workers else f"in process, {threads} thread(s)"
                rows.append((f"DataLoader {label}, {how}", rate(epoch, n)))
                del loader
    finally:
        if args.store is None:
            shutil.rmtree(folder, ignore_errors=True)

    print(f"\nloading {n} records of 12 x 5000 samples (500 Hz x 10 s), batches of {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'contender':<70}{'ECGs/s':>10}{'vs raw f32':>12}")
    raw = rows[1][1]
    for label, value in rows:
        print(f"{label:<70}{value:>10.0f}{value / raw:>11.2f}x")
    loaders = [(label, v) for label, v in rows if label.startswith("DataLoader no normalisation")]
    label, best = max(loaders, key=lambda item: item[1])
    print(f"\nbest: {label}: {best:.0f} ECGs/s = {best / raw:.2f}x the raw float32 read, {best / rows[0][1]:.2f}x "
          f"the raw int16 read (goal >= 20,000 ECGs/s and within 2x of the raw read)")


if __name__ == "__main__":
    main()
