"""What the COCO profile needs, projected from the rehearsal's measurements.

`make rehearsal` runs the `coco` profile end to end on a miniature mirror and writes
`rehearsal.json`: for each DVC stage, the bytes of its outputs (from dvc.lock), its wall seconds
and peak resident memory (recorded by every stage, stages/_common.py), and the images of each
split of each dataset. This script scales each stage's disk by the images it processes:

    prepare@<d>       every image of <d>            (uint8 S x S x 3 per image, + its captions), and
                      its test images again at BLIP's size (test_blip.h5)
    features          the train + val images of the teacher's dataset (fp16 cells per image)
    teacher_captions  the train images (x students.train_fraction)
    evaluate*, baselines  per output file, the test images of the test set it names (<...>-<d>.json/.h5:
                      captions, per-image scores, per-word maps; one stage covers both test sets)
    download@<d>      the real archives' published sizes where known
    anything else     unchanged (model weights and checkpoints have the real architectures' sizes;
                      the rehearsal's BLIP is a miniature, the real base model's weights are ~1 GB)

Model files (.pt, .safetensors) never scale. Per-split files give bytes per image as the slope of
their sizes over their image counts, so a file's fixed overhead is counted once.

Memory is reported as measured: every stage streams its data (prepare, the feature cache, the
HDF5 loaders with preload off), so it does not grow with the dataset, except where the table
says. Seconds are the rehearsal's, on its CPU: they are not a projection of GPU time.

    python benchmarks/project_coco.py rehearsal.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.data.sources import REMOTE_DATASETS  # noqa: E402

# Karpathy's splits (restval in train) and Flickr8k's.
REAL_IMAGES = {"coco": {"train": 113_287, "val": 5_000, "test": 5_000},
               "flickr8k": {"train": 6_000, "val": 1_000, "test": 1_000}}


def images_of(stage: str, datasets: dict[str, dict[str, int]], teacher_dataset: str) -> tuple[str, str | None]:
    """(which images a stage's outputs scale with, dataset) or ("fixed", None)."""
    name, _, item = stage.partition("@")
    if name == "prepare":
        return "all", item
    if name == "features":
        return "train+val", teacher_dataset
    if name == "teacher_captions":
        return "train", teacher_dataset
    if name in PER_TEST_SET:
        return "test", None          # each output file by its own test set: dataset_of
    return "fixed", None


# Stages whose outputs are per test set, <name>-<dataset>.<ext>, for both test sets in one stage.
PER_TEST_SET = ("evaluate", "evaluate_blip", "evaluate_replicate", "baselines")


def dataset_of(path: str, datasets) -> str | None:
    """The test set an output file belongs to (``results/captions/teacher-coco.json`` -> coco), the
    longest name that ends its stem after a dash (shapes-shift, not shapes); None for a shared file."""
    stem = Path(path).stem
    names = [d for d in datasets if stem.endswith(f"-{d}")]
    return max(names, key=len) if names else None


def per_test_set_bytes(files: dict[str, int], images: dict[str, dict[str, int]]) -> tuple[float | None, float, str]:
    """(bytes per test image, projected bytes, what it scales with) of a stage's non-weight files,
    each scaled by the test images of its own test set; a shared file (a summary) as it is."""
    by_set: dict[str, int] = {}
    shared = 0
    for f, b in files.items():
        if f.endswith(WEIGHTS):
            continue
        d = dataset_of(f, images)
        if d is None:
            shared += b
        else:
            by_set[d] = by_set.get(d, 0) + b
    if not by_set:
        return None, shared, "fixed"
    projected = shared + sum(b * REAL_IMAGES[d]["test"] / images[d]["test"] for d, b in by_set.items())
    per_image = sum(by_set.values()) / sum(images[d]["test"] for d in by_set)
    return per_image, projected, "test images of " + ", ".join(
        f"{d}: {images[d]['test']} -> {REAL_IMAGES[d]['test']:,}" for d in sorted(by_set))


def count(images: dict[str, int], which: str) -> int:
    if which == "all":
        return sum(images.values())
    return sum(images[s] for s in which.split("+"))


WEIGHTS = (".pt", ".safetensors", ".bin")     # model files: the real architectures' sizes whatever the data


def split_of(path: str) -> str | None:
    """``train`` for data/prepared/coco/train.h5 and the like (a per-split data file), else None."""
    stem = Path(path).stem
    return stem if Path(path).suffix == ".h5" and stem in ("train", "val", "test") else None


def is_blip_test(path: str) -> bool:
    """prepare's test split at BLIP's input size: it scales with the test images alone."""
    return Path(path).name == "test_blip.h5"


def scaled_bytes(files: dict[str, int], images: dict[str, int], real: dict[str, int], which: str) -> tuple[float, float]:
    """(bytes per image, projected bytes) of a stage's data files (its weights aside).

    Per-split files (prepare's and the feature cache's train/val/test.h5) give a line
    bytes = overhead + per_image * images through their points, so a file's fixed overhead is not
    multiplied by 100,000; other files (captions, maps, seq-KD targets) scale as a whole by the
    stage's images (an upper bound where they have a fixed part); BLIP's test cache by the test
    images, its overhead (that of the split files, which hold the same datasets) counted once."""
    splits = {split_of(f): b for f, b in files.items() if split_of(f) and not f.endswith(WEIGHTS)}
    blip_test = sum(b for f, b in files.items() if is_blip_test(f))
    rest = sum(b for f, b in files.items() if not split_of(f) and not is_blip_test(f) and not f.endswith(WEIGHTS))
    n_mirror, n_real = count(images, which), count(real, which)
    if len({images[s] for s in splits}) >= 2:
        xs, ys = [images[s] for s in splits], list(splits.values())
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        per_image = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        overhead = my - per_image * mx
        blip_projected = overhead + (blip_test - overhead) * real["test"] / images["test"] if blip_test else 0.0
        return per_image, (overhead * len(splits) + per_image * sum(real[s] for s in splits) + rest * n_real / n_mirror
                           + blip_projected)
    total = sum(splits.values()) + rest
    return total / n_mirror, total * n_real / n_mirror + blip_test * real["test"] / images["test"]


def project(report: dict) -> list[dict]:
    rows = []
    teacher = report.get("teacher_dataset", "coco")
    for stage, m in sorted(report["stages"].items()):
        which, dataset = images_of(stage, report["images"], teacher)
        files = m.get("files") or {stage: m["out_bytes"]}
        weights = sum(b for f, b in files.items() if f.endswith(WEIGHTS))
        row = {"stage": stage, "bytes": m["out_bytes"], "seconds": m.get("seconds"),
               "peak_rss_mb": max(m.get("peak_rss_mb") or 0, m.get("peak_rss_child_mb") or 0) or None}
        if stage.startswith("download@"):
            files_ = REMOTE_DATASETS[stage.split("@")[1]].files
            unknown = [f.name for f in files_ if f.size is None]
            row["projected"] = sum(f.size for f in files_ if f.size is not None) or None
            row["scales_with"] = "published archive sizes" + (f" (not {', '.join(unknown)}: unpublished)" if unknown else "")
        elif which == "fixed":
            row["projected"], row["scales_with"] = m["out_bytes"], "fixed (weights, figures)"
        elif dataset is None:
            per_image, data, row["scales_with"] = per_test_set_bytes(files, report["images"])
            row["per_image"], row["projected"] = per_image, weights + data
        else:
            per_image, data = scaled_bytes(files, report["images"][dataset], REAL_IMAGES[dataset], which)
            row["per_image"], row["projected"] = per_image, weights + data
            row["scales_with"] = (f"{which} images of {dataset}: {count(report['images'][dataset], which)} -> "
                                  f"{count(REAL_IMAGES[dataset], which):,}" + (" (+ weights)" if weights else ""))
        rows.append(row)
    return rows


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    args = ap.parse_args()
    rows = project(json.loads(args.report.read_text()))
    print("| stage | rehearsal output | per image | COCO-scale disk | scales with | peak RSS (measured) | seconds (rehearsal CPU) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['stage']}` | {human(r['bytes'])} | {human(r.get('per_image'))} | {human(r['projected'])} | "
              f"{r['scales_with']} | {r['peak_rss_mb'] or '?'} MB | {r['seconds'] if r['seconds'] is not None else '?'} |")
    total = sum(r["projected"] or 0 for r in rows)
    print(f"\nCOCO-scale disk in the workspace, all stages: {human(total)} "
          f"(DVC's cache doubles it unless cache.type is hardlink/symlink); "
          f"largest peak RSS: {max(r['peak_rss_mb'] or 0 for r in rows):.0f} MB")


if __name__ == "__main__":
    main()
