"""Checkpoints: plain dicts of state dicts and tensors, written atomically, read with
``weights_only=True`` (never a pickled module)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from capt.errors import CaptError
from capt.files import atomic_output


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary name, then rename (capt.files): a kill or a full disk mid-write leaves
    the previous file intact, and a failed write is one line naming the file."""
    path = Path(path)
    # torch names the archive's folder after the file it writes: "<name>.tmp" gives "<name>/..." in
    # every run (a name with the process id in it would change the model's bytes, and DVC's hash)
    with atomic_output(path, tmp_name=path.name + ".tmp") as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CaptError(f"{path}: missing checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler raises anything (KeyError, UnpicklingError, ...) on junk
        if not zipfile.is_zipfile(path):
            # torch.save writes a zip archive; a file cut short, zeroed or overwritten is none, and torch's
            # own errors then blame a legacy format or pickled code and suggest weights_only=False
            raise CaptError(f"{path}: unreadable checkpoint (truncated or corrupt: not the zip archive torch.save "
                            "writes); rerun the stage that writes it") from None
        if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
            # torch's message goes on to suggest weights_only=False: that would run the file's code
            raise CaptError(f"{path}: refused: it holds more than tensors and plain values (pickled code), and capt "
                            "checkpoints hold only those; it was not written by capt, and loading it unsafely "
                            "would run whatever it holds") from None
        first = (str(e).splitlines() or [""])[0]
        raise CaptError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from None
