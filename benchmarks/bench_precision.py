"""Why `precision` stays fp32 on a CPU without bf16 instructions: one training step (forward and
backward) of the COCO profile's student trunk, a ResNet-50 on 256 px images, in fp32 and under
bf16 autocast, in the same process. Prints seconds per step (median of --repeats after a warm-up)
and the bf16/fp32 ratio, and whether oneDNN sees native bf16 on this CPU.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --batch 16 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.train.loop import cpu_has_native_bf16  # noqa: E402


def step_seconds(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype | None, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):                      # the first is a warm-up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = model(images).float().logsumexp(1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50().train()
    images = torch.randn(args.batch, 3, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    medians = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        times = step_seconds(model, images, dtype, args.repeats)
        medians[name] = statistics.median(times)
        print(f"{name}: {medians[name]:.2f} s/step (min {min(times):.2f}, max {max(times):.2f}; "
              f"ResNet-50, batch {args.batch}, {args.size} px)")
    print(f"bf16 / fp32 time: x{medians['bf16'] / medians['fp32']:.1f}")


if __name__ == "__main__":
    main()
