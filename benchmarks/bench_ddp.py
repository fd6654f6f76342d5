"""Training throughput of 1 process against N DistributedDataParallel processes (Gloo on the CPU).

The same `fit` (capt.train.loop) on the same synthetic data and global batch: one process with
torch's default threads, then N processes under torchrun (one thread each, as torchrun sets it).
Two workloads: the teacher's (decoder on cached features) and a student's (a ResNet-18 trunk
whose layer2 learns, on 64 px images, + decoder). Prints images/s and the ratio N/1.

    python benchmarks/bench_ddp.py                       # 1 vs 2 processes
    python benchmarks/bench_ddp.py --processes 4 --images 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capt.data.vocab import SPECIALS, Vocabulary  # noqa: E402
from capt.models.decoder import AttentionDecoder, DecoderConfig  # noqa: E402
from capt.models.encoder import Encoder, EncoderConfig  # noqa: E402
from capt.train.captioner import CaptionerTask  # noqa: E402
from capt.train.loop import TrainConfig, fit  # noqa: E402

VOCAB = Vocabulary([*SPECIALS, *(f"w{i}" for i in range(60))])


class Synthetic(Dataset):
    """n items of 5 captions of 12 words, with 64 px images or (64, 256) features."""

    def __init__(self, n: int, images: bool):
        g = torch.Generator().manual_seed(0)
        self.n, self.images = n, images
        self.data = (torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8) if images
                     else torch.randn(n, 64, 256, generator=g))
        self.captions = torch.randint(4, len(VOCAB), (n, 5, 14), generator=g)
        self.captions[:, :, 0], self.captions[:, :, 13] = VOCAB.start, VOCAB.end
        self.refs = {i: ["w1 w2 w3"] for i in range(n)}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image" if self.images else "features": self.data[i], "captions": self.captions[i],
                "lengths": torch.full((5,), 14), "image_id": torch.tensor(i), "index": torch.tensor(i)}


def make_task(workload: str, n: int, cfg: TrainConfig) -> tuple[CaptionerTask, Dataset]:
    torch.manual_seed(0)
    train = Synthetic(n, images=workload == "student")
    val = Synthetic(8, images=workload == "student")
    if workload == "student":
        encoder = Encoder(EncoderConfig(name="resnet18", weights=None, stages=2, encoded_size=8, fine_tune=True))
        decoder = AttentionDecoder(DecoderConfig(embed_dim=64, attention_dim=64, decoder_dim=128, dropout=0.3),
                                   len(VOCAB), encoder.feature_dim)
        return CaptionerTask(decoder, VOCAB, val, val.refs, cfg, encoder=encoder), train
    decoder = AttentionDecoder(DecoderConfig(embed_dim=128, attention_dim=128, decoder_dim=256, dropout=0.3),
                               len(VOCAB), 256)
    return CaptionerTask(decoder, VOCAB, val, val.refs, cfg), train


def run(workload: str, n: int, batch_size: int, epochs: int, out: Path) -> None:
    """Train and write images/s (rank 0); under torchrun each process runs this."""
    from capt.train.distributed import start_runtime, stop_runtime

    rt = start_runtime("cpu")
    # The student's fine-tuned BatchNorms: CPU processes cannot synchronise them (capt.train.distributed),
    # so both sides of the comparison keep their running statistics.
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, early_stop=epochs + 1, max_decode_len=5,
                      processes=rt.world_size, device="cpu", batchnorm="frozen")
    task, train = make_task(workload, n, cfg)
    ckpt = out.with_suffix(".ckpt")         # one folder for every process: rank 0 writes, all read
    t0 = time.perf_counter()
    fit(task, train, cfg, ckpt, progress=False, runtime=rt)
    seconds = time.perf_counter() - t0
    if rt.is_main:
        out.write_text(json.dumps({"seconds": seconds, "images_per_s": n * epochs / seconds,
                                   "threads": torch.get_num_threads()}))
    stop_runtime()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--images", type=int, default=512, help="training images an epoch")
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run(args.worker[0], args.images, args.batch_size, args.epochs, Path(args.worker[1]))
        return
    print(f"{os.cpu_count()} CPUs; {args.images} images x {args.epochs} epochs, global batch {args.batch_size}")
    print(f"| workload | 1 process (images/s) | {args.processes} Gloo processes (images/s) | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for workload in ("teacher", "student"):
            one = Path(tmp) / f"{workload}-1.json"
            run(workload, args.images, args.batch_size, args.epochs, one)
            many = Path(tmp) / f"{workload}-{args.processes}.json"
            common = [__file__, "--images", str(args.images), "--batch-size", str(args.batch_size),
                      "--epochs", str(args.epochs), "--worker", workload, str(many)]
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            f"--nproc-per-node={args.processes}", *common], check=True, cwd=ROOT)
            a, b = (json.loads(p.read_text())["images_per_s"] for p in (one, many))
            print(f"| {workload} | {a:.1f} | {b:.1f} | x{b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
