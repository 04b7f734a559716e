"""ESI pretraining: `python -m esi.train --config params/....yaml [--set train_<setting>=value ...]`, or
`train(TrainConfig(...))`.

One run, start to end:
  params YAML + --set  -> TrainConfig (config.py)                   -> <out_dir>/config.yaml
  dataset folder       -> ECG store + texts -> token ids (data.py)  -> <out_dir>/store, cache/
  PairDataset batches  -> ESIModel forward/backward, AdamW step (loop.py: train_one_epoch)
                       -> metrics.csv + tb/ (logger.py), checkpoints/step_*.pt (checkpoint.py)
  after each epoch     -> validation loss and ECG->text recall@k (validation.py)
  at the end           -> <out_dir>/model (save_pretrained) and captions.jsonl
distributed.py joins torchrun/SLURM process groups; launch.py starts torchrun from a notebook.
"""

from esi.train.cli import main
from esi.train.config import TrainConfig
from esi.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "main", "train"]
