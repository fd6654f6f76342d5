"""Start a training stage in one process, or in N under torchrun: ``python -m stages.launch N MODULE [ARGS]``.

dvc.yaml's training commands read N from their section's ``train.processes`` (``processes`` for
pretrain@), so a param switches a stage between one process and DistributedDataParallel; DVC has
no conditionals, this does it. N = 1 replaces this process with ``python -m MODULE ARGS`` (no
torch import here, no launcher overhead); N > 1 is ``torchrun --standalone --nproc-per-node N -m
MODULE ARGS`` through torch.distributed.run, torchrun's own entry point: one machine, a free
port, every process's output on this terminal.
"""

from __future__ import annotations

import os
import sys

USAGE = "usage: python -m stages.launch PROCESSES MODULE [ARGS...]"


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(f"error: {USAGE}")
    module, args = argv[1], argv[2:]
    try:
        n = int(argv[0])
    except ValueError:
        n = 0
    # dvc.yaml passes a params value (teacher.train.processes, ...): one that is no count (2.5, abc,
    # 0) runs the stage in one process, whose own params check refuses it naming its full path.
    if n <= 1:
        os.execv(sys.executable, [sys.executable, "-m", module, *args])
    from torch.distributed.run import main as torchrun

    # One CPU thread pool per process would oversubscribe the cores: torchrun sets
    # OMP_NUM_THREADS=1 unless it is set; leave that to the user's environment.
    torchrun(["--standalone", f"--nproc-per-node={n}", "-m", module, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
