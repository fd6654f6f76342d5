"""Outputs written whole or not at all: a temporary file in the same folder, flushed to disk, then
renamed over the target. A full disk or a kill mid-write leaves the previous file as it was and
no temporary file behind (metrics are not in DVC's cache, so a half-written one could not be
restored)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """``data`` (text is written as UTF-8) at ``path``, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data, sort_keys: bool = True) -> None:
    """``data`` as indented JSON at ``path``, whole or not at all."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
