"""The training metrics logger: one CSV row per logged step (+ TensorBoard).

The CSV is the source of truth that notebooks plot from; it is appended row by row and flushed, so a live
plot can read it while training runs. On resume, rows newer than the resumed step (written by the killed run
after its last checkpoint) are dropped so that every step appears once.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping


class MetricsLogger:
    """Append metric rows to `<run>/metrics.csv` and, when available, TensorBoard under `<run>/tb/`.

    Each row has a `split` ('train', 'val'), the optimizer `step`, the `epoch`, and any metric values; columns are
    the union of all keys seen (the file is rewritten when a new key appears, which happens rarely).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.enabled = enabled
        self.rows: list[dict] = []
        self.columns: list[str] = ["split", "step", "epoch"]
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                old = list(reader)
                for c in reader.fieldnames or []:
                    if c not in self.columns:
                        self.columns.append(c)
            if resume_step is None:
                old = []
            else:
                old = [r for r in old if r.get("step") not in (None, "") and int(float(r["step"])) <= resume_step]
            self.rows = old
            self._rewrite()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step)
            except Exception:   # tensorboard is optional at run time; the CSV is always written
                self.writer = None

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def log(self, split: str, step: int, epoch: float, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"split": split, "step": step, "epoch": round(float(epoch), 4)}
        for k, v in values.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else float("nan")
        self.rows.append(row)
        new_cols = [k for k in row if k not in self.columns]
        if new_cols:
            self.columns.extend(new_cols)
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
