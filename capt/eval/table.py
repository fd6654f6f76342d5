"""The study's table: one row per model (its size, its speed, its scores), as JSON and Markdown."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from capt.models.saved import Captioner, count_parameters


def cpu_ms_per_image(caption_batch: Callable[[torch.Tensor], object], images: torch.Tensor, warmup: int = 2) -> float:
    """Mean wall-clock milliseconds of ``caption_batch`` on one uint8 image (1, 3, S, S) at a time
    (whatever the model does to caption it, on whatever threads torch has): the latency a user of
    the model sees."""
    for image in images[:warmup]:
        caption_batch(image[None])
    start = time.perf_counter()
    for image in images:
        caption_batch(image[None])
    return 1000.0 * (time.perf_counter() - start) / len(images)


def folder_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2 ** 20


def model_size(captioner: Captioner, checkpoint: Path) -> dict[str, float | int | str]:
    enc, dec = captioner.encoder, captioner.decoder
    return {"encoder": f"{enc.cfg.name}" + ("" if enc.cfg.stages == 4 else f" (to layer{enc.cfg.stages})"),
            "fine_tuned": bool(enc.cfg.fine_tune), "hidden": dec.cfg.decoder_dim,
            "parameters": count_parameters(enc) + count_parameters(dec),
            "checkpoint_mb": folder_mb(checkpoint)}


def format_cell(value, fmt: str | None = None) -> str:
    """A table cell: ``-`` for a missing value, thousands separators for ints, ``fmt`` (e.g.
    ``"{:.2f}"``) or 4 decimals below 10 and 1 above for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if fmt is not None and isinstance(value, (int, float)):
        return fmt.format(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, ...]]) -> str:
    """``columns`` are (key, header) or (key, header, format) tuples; a missing value prints as
    ``-``; columns holding text are left-aligned, numbers right-aligned."""
    def is_text(key: str) -> bool:
        return any(isinstance(r.get(key), str) for r in rows)

    lines = ["| " + " | ".join(c[1] for c in columns) + " |",
             "|" + "|".join("---" if i == 0 or is_text(c[0]) else "---:" for i, c in enumerate(columns)) + "|"]
    lines += ["| " + " | ".join(format_cell(row.get(c[0]), *c[2:]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
