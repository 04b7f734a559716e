"""`python -m esi.train --config params/....yaml [--set train_<setting>=value ...]` (also under torchrun and srun;
see cli.py)."""

from esi.train.cli import main

if __name__ == "__main__":
    main()
