"""Prepare's throughput and peak memory, streamed (capt) vs a naive load-everything baseline.

    python benchmarks/bench_prepare.py                     # 2,000 and 20,000 generated images
    python benchmarks/bench_prepare.py --sizes 500 2000    # quicker
    python benchmarks/bench_prepare.py --images 2000 --image-size 256 --workers 2
                                                           # capt in 1 vs 2 decoding processes
    python benchmarks/bench_prepare.py --images 2000 --image-size 256 --source-size 640 --workers 2
                                                           # COCO-like: 640 px JPEGs resized to 256

Each measurement runs in a fresh child process so its peak RSS (VmHWM) is its own. The
naive baseline loads the annotation JSON whole and decodes every image of a split into one
array before writing it, as a first attempt would; capt streams the JSON, joins captions
through SQLite and writes a block of images at a time. The claim to check: capt's peak RSS
stays flat (within 20%) from 2,000 to 20,000 images, the baseline's grows with N.

With ``--workers N`` it compares capt with itself instead: one process against N decoding
processes (``prepare.workers``), checks that both wrote byte-identical files, and prints the
speed-up. Peak RSS is then the main process's and the largest decoding process's.
``--source-size`` draws the JPEGs larger than they are prepared (COCO's are ~640 x 480), so
decoding and resizing weigh what they weigh on COCO rather than a fraction of it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def naive_prepare(raw_dir: Path, out_dir: Path, image_size: int) -> int:
    """A first attempt: whole JSON files loaded, every image of a split in one array, one write."""
    import json
    import zipfile
    from collections import defaultdict

    import h5py
    import numpy as np

    from capt.data.readers import decode_image

    manifest = json.loads((raw_dir / "manifest.json").read_text())
    karpathy = json.loads((raw_dir / manifest["splits"]["file"]).read_text())
    captions = defaultdict(list)
    for ref in manifest["captions"]["files"]:
        for ann in json.loads((raw_dir / ref["file"]).read_text())["annotations"]:
            captions[ann["image_id"]].append(ann["caption"])
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with zipfile.ZipFile(raw_dir / manifest["images"][0]) as zf:
        for split in ("train", "val", "test"):
            imgs = [im for im in karpathy["images"] if im["split"] == split]
            images = np.stack([decode_image(zf.read(f"{im['filepath']}/{im['filename']}"), image_size)
                               for im in imgs])
            with h5py.File(out_dir / f"{split}.h5", "w") as f:
                f["images"] = images
                f["image_ids"] = np.array([im["cocoid"] for im in imgs], np.int64)
                f["references"] = [c for im in imgs for c in captions[im["cocoid"]]]
            n += len(imgs)
    return n


def peak_rss_mb() -> float:
    """This process's peak RSS since it was exec'd: VmHWM. (ru_maxrss would also count the
    forked copy of the parent before exec, i.e. the parent's size.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most


def child(mode: str, raw_dir: Path, out_dir: Path, image_size: int, workers: int) -> None:
    from capt.data.prepare import PrepareConfig, prepare_dataset

    t0 = time.perf_counter()
    if mode == "capt":
        cfg = PrepareConfig(image_size=image_size, workers=workers)
        summary = prepare_dataset(raw_dir, out_dir, cfg, progress=False)
        n = sum(s["images"] for s in summary["splits"].values())
    else:
        n = naive_prepare(raw_dir, out_dir, image_size)
    seconds = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    # The decoding processes are reaped by now: ru_maxrss of children is the largest one's peak (KiB).
    worker_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else 0.0
    print(json.dumps({"images": n, "seconds": seconds, "peak_rss_mb": rss_mb, "worker_rss_mb": worker_rss_mb}))


def measure(mode: str, raw_dir: Path, out_dir: Path, image_size: int, workers: int = 0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(raw_dir), str(out_dir), str(image_size),
                          str(workers)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def same_outputs(a: Path, b: Path) -> bool:
    """prepare's files byte for byte (h5py writes the same bytes for the same writes)."""
    names = ("train.h5", "val.h5", "test.h5", "word_map.json", "summary.json")
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def print_workers_table(rows: list[dict], source_size: int, image_size: int, workers: int) -> None:
    print(f"prepare (capt), {source_size}px JPEGs from a zip -> {image_size}px HDF5: "
          f"1 process vs {workers} decoding processes")
    print(f"{'images':>8} | {'1 proc img/s':>12} {'RSS MB':>6} | {f'{workers} proc img/s':>12} {'RSS MB':>6} "
          f"{'worker MB':>9} | {'speed-up':>8} | identical")
    for row in rows:
        one, many = row["one"], row["many"]
        s1, sn = one["images"] / one["seconds"], many["images"] / many["seconds"]
        print(f"{row['n']:>8} | {s1:>12.0f} {one['peak_rss_mb']:>6.0f} | {sn:>12.0f} {many['peak_rss_mb']:>6.0f} "
              f"{many['worker_rss_mb']:>9.0f} | {sn / s1:>7.2f}x | {'yes' if row['identical'] else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", "--images", type=int, nargs="+", default=[2000, 20000],
                    help="how many images to generate and prepare, one run per count")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--source-size", type=int, default=None,
                    help="size the JPEGs are drawn at (default: --image-size, no resize)")
    ap.add_argument("--workers", type=int, default=0,
                    help="N > 1: compare capt in 1 process with N decoding processes (no naive baseline)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/capt-bench-prepare"))
    ap.add_argument("--child", nargs=5, metavar=("MODE", "RAW", "OUT", "S", "W"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, raw, out, s, w = args.child
        return child(mode, Path(raw), Path(out), int(s), int(w))

    from capt.data.shapes import ShapesConfig, generate_shapes

    rows = []
    for n in args.sizes:
        source = args.source_size or args.image_size
        raw = args.workdir / f"raw-{n}-{source}px"
        if not (raw / "manifest.json").exists():
            t0 = time.perf_counter()
            n_held = max(1, n // 20)
            generate_shapes(ShapesConfig(n_train=n - 2 * n_held, n_val=n_held, n_test=n_held,
                                         image_size=source), raw, progress=False)
            print(f"generated {n} images in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        row = {"n": n}
        if args.workers > 1:
            outs = {w: args.workdir / f"out-capt-{n}-{source}to{args.image_size}px-w{w}" for w in (1, args.workers)}
            row["one"] = measure("capt", raw, outs[1], args.image_size, 1)
            row["many"] = measure("capt", raw, outs[args.workers], args.image_size, args.workers)
            row["identical"] = same_outputs(outs[1], outs[args.workers])
            rows.append(row)
            continue
        for mode in ("capt", "naive"):
            r = measure(mode, raw, args.workdir / f"out-{mode}-{n}-{args.image_size}px", args.image_size)
            row[mode] = r
        rows.append(row)
    if args.workers > 1:
        return print_workers_table(rows, args.source_size or args.image_size, args.image_size, args.workers)

    print(f"prepare, {args.image_size}px JPEGs from a zip -> HDF5, one process")
    print(f"{'images':>8} | {'capt img/s':>10} {'capt RSS MB':>11} | {'naive img/s':>11} {'naive RSS MB':>12} "
          f"| {'speed capt/naive':>16} {'RSS capt/naive':>14}")
    for row in rows:
        c, b = row["capt"], row["naive"]
        cs, bs = c["images"] / c["seconds"], b["images"] / b["seconds"]
        print(f"{row['n']:>8} | {cs:>10.0f} {c['peak_rss_mb']:>11.0f} | {bs:>11.0f} {b['peak_rss_mb']:>12.0f} "
              f"| {cs / bs:>16.2f} {c['peak_rss_mb'] / b['peak_rss_mb']:>14.2f}")
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        grow_c = hi["capt"]["peak_rss_mb"] / lo["capt"]["peak_rss_mb"]
        grow_b = hi["naive"]["peak_rss_mb"] / lo["naive"]["peak_rss_mb"]
        print(f"peak RSS growth {lo['n']} -> {hi['n']} images: capt x{grow_c:.2f} "
              f"({'within' if grow_c <= 1.2 else 'NOT within'} 20%), naive x{grow_b:.2f}")


if __name__ == "__main__":
    main()
