"""The study's table: one row per model (its size, its speed, its scores), as JSON and Markdown."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capt.errors import CaptError
from capt.files import write_json
from capt.models.saved import Captioner, count_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latency:
    """Milliseconds to caption one image, one image at a time, on ``threads`` CPU threads: the
    median over ``repeats`` timed passes of each pass's mean over ``images`` images, and the
    spread of those passes (``p25_ms``, ``p75_ms``). A wall-clock time: it varies from run to run
    and machine to machine, so it is kept out of the deterministic metrics."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int
    images: int
    threads: int

    def to_json(self) -> dict:
        return {"median_ms": round(self.median_ms, 2), "p25_ms": round(self.p25_ms, 2),
                "p75_ms": round(self.p75_ms, 2)}


def time_per_image(models: dict[str, Callable[[torch.Tensor], object]], images: torch.Tensor, *, warmup: int = 2,
                   repeats: int = 5, threads: int = 1, clock: Callable[[], float] = time.perf_counter,
                   ) -> dict[str, Latency]:
    """Each model's :class:`Latency` on uint8 ``images`` (N, 3, S, S), captioned one (1, 3, S, S)
    at a time by ``models[name]`` (whatever the model does to caption it: the latency a user sees).

    Every model first captions ``warmup`` images untimed (lazy allocations, caches); then each of
    the ``repeats`` passes times every model in turn over all N images, so a slow phase of the
    machine (another process, a frequency change) falls on every model's same pass and the median
    over passes drops it. torch runs on ``threads`` threads meanwhile (restored after): the same
    number on every machine, and no thread pool contending with the other model's leftovers.
    ``clock``: seconds (a test passes a fake one)."""
    if repeats < 1 or len(images) < 1 or threads < 1 or warmup < 0:
        raise CaptError(f"timing needs at least one image, repeat and thread and no negative warm-up; got "
                        f"{len(images)} images, {repeats} repeats, {threads} threads, {warmup} warm-up")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for caption in models.values():
            for image in images[:warmup]:
                caption(image[None])
        passes: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats):
            for name, caption in models.items():
                start = clock()
                for image in images:
                    caption(image[None])
                passes[name].append(1000.0 * (clock() - start) / len(images))
    finally:
        torch.set_num_threads(previous)
    return {name: Latency(float(np.median(ms)), float(np.percentile(ms, 25)), float(np.percentile(ms, 75)),
                          repeats, len(images), threads) for name, ms in passes.items()}


def write_latency(captioners: dict[str, Callable[[torch.Tensor], object]], images: torch.Tensor, path: Path, *,
                  dataset: str, repeats: int, threads: int, beam_size: int) -> dict[str, Latency]:
    """Time every model (:func:`time_per_image`) and write ``path``: the settings (``dataset``, the
    test set ``images`` come from; ``beam_size``, the captioners') and, per model, ``median_ms``,
    ``p25_ms``, ``p75_ms``. Returns model -> Latency."""
    latency = time_per_image(captioners, images, repeats=repeats, threads=threads)
    write_json(path, {
        "what": "wall-clock CPU milliseconds to caption one image, one at a time (not a deterministic metric)",
        "test_set": dataset, "images": len(images), "repeats": repeats, "threads": threads,
        "beam_size": beam_size, "models": {m: t.to_json() for m, t in latency.items()}}, sort_keys=False)
    for m, t in latency.items():
        log.info("%s: %.1f ms per image on the CPU (quartiles %.1f-%.1f over %d passes, %d thread(s))",
                 m, t.median_ms, t.p25_ms, t.p75_ms, t.repeats, t.threads)
    return latency


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
