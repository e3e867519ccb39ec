"""What the machine can do, for the FLOP/s lines every benchmark prints next to its own.

The measurements live in `rewardjax.machine` (every training run reports them in its summary
too); this module re-exports them for the benchmark scripts next to it.

  python benchmarks/machine.py   # prints the CPU, its ISA class and float32 matmul GFLOP/s
"""

import os
import sys

# The repo root, so that rewardjax imports without being installed (as in the other scripts).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rewardjax.machine import cpu_model, describe, matmul_flops_per_s, median_seconds  # noqa: E402

__all__ = ["cpu_model", "describe", "matmul_flops_per_s", "median_seconds"]

if __name__ == "__main__":
  print(describe())
