"""`python -m esi.evaluate --config params/ptbxl_benchmark.yaml [--set evaluate_<setting>=value ...]` (see esi.evaluate.run)."""

from esi.evaluate.run import main

if __name__ == "__main__":
    main()
