"""`make demo`: the whole chain offline, on CPU, in minutes: `python -m esi.demo --config params/demo.yaml`.

Runs the four notebooks with papermill on the embedded default parameters (params/demo.yaml):

  01 Cardio Query Assistant  generates the demo corpus, builds the knowledge index, describes every machine
                             statement of the corpus (extractive backend) -> outputs/demo/cqa/waveform_dict.json
  02 data exploration        converts the corpus into an ECG store, tables, text lengths, ECGs on paper, beats
  03 pretraining             esi.train: convnextv2_atto + the bundled MiniLM -> outputs/demo/pretrain/model
  04 PTB-XL evaluation       esi.evaluate on the demo's PTB-XL-layout set -> outputs/demo/results.csv, figures

then renders each executed notebook to HTML and writes outputs/demo/index.html linking them and the figures.
Options are those of `python -m esi.report` (--set key=value, --out DIR, --only 03 04, --kernel NAME);
a failing cell stops the run with exit status 1 and leaves the executed notebook, error visible, in place.
"""

from __future__ import annotations

import sys
from typing import Sequence

from esi.report import main as report_main

DEFAULT_PARAMS = "params/demo.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `make demo`; returns the exit status."""
    return report_main(argv, prog="python -m esi.demo", default_config=[DEFAULT_PARAMS])


if __name__ == "__main__":
    sys.exit(main())
