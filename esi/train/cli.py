"""The command line: `python -m esi.train --config params/....yaml [--set train_<setting>=value ...]`.

The same command runs as one process, under `torchrun --nproc-per-node N` (one or many nodes) and under SLURM
(`srun python -m esi.train ...`): the distributed context is read from the environment (esi.train.distributed).
A setting, file or model the run cannot use ends it with one line on stderr (`error: ...`) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from esi.config import ConfigError, load_config
from esi.models.text_encoder import TextEncoderNotAvailable
from esi.paths import resolve
from esi.train.checkpoint import CheckpointError
from esi.train.config import TrainConfig
from esi.train.distributed import destroy_distributed
from esi.train.loop import TrainResult, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esi.train",
        description="ESI pretraining. Runs alone, under torchrun, or under SLURM (srun). Settings are the "
                    "train_* keys of the params files; see TrainConfig in esi/train/config.py for every one.")
    parser.add_argument("--config", "-f", action="append", default=[], metavar="YAML",
                        help="params file(s); later files override earlier ones")
    parser.add_argument("--set", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting with its params key and a YAML value, e.g. --set train_epochs=3 "
                             "(--set train_model.latent_dim=256 for one entry of a mapping); repeatable")
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (YAML errors and the text encoder's fix span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """The command line (`argv`: its arguments; default sys.argv). Exits with status 2 on a bad config or input."""
    args = build_parser().parse_args(argv)
    try:
        files = [resolve(f) for f in args.config]
        cfg = load_config(TrainConfig, files, args.set, section="train")
        try:
            return train(cfg)
        finally:
            destroy_distributed()
    except TextEncoderNotAvailable as error:
        print(f"error: train_text_encoder: {one_line(error)}", file=sys.stderr)
    except (ConfigError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
    raise SystemExit(2)
