"""Checkpoints: plain dicts of state dicts and tensors, written atomically, read with
``weights_only=True`` (never a pickled module)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from capt.errors import CaptError


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary name, then rename: a kill mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)       # a full disk or a kill leaves no half-written file behind
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CaptError(f"{path}: missing checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler raises anything (KeyError, UnpicklingError, ...) on junk
        first = (str(e).splitlines() or [""])[0]
        raise CaptError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from None
