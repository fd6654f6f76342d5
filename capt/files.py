"""Outputs written whole or not at all: into a temporary file in the same folder, then renamed over
the target. A full disk, a file-size limit or a kill mid-write leaves the previous file as it was
and no temporary file behind (metrics are not in DVC's cache, so a half-written one could not be
restored), and the failure is one line naming the file and the reason the OS gave."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from capt.errors import CaptError


def _reason(e: BaseException) -> str:
    """What went wrong, as the OS says it where it said it (``no space left on device``, ``file too
    large``); a library's own message otherwise (torch's zip writer: ``unexpected pos 64 vs 0``,
    with what usually causes it)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    first = (str(e).splitlines() or [type(e).__name__])[0]
    if "unexpected pos" in first or "write failed" in first.lower():
        return f"the write failed ({first}): is the disk full, or the file over a size limit?"
    return f"{type(e).__name__}: {first}"


@contextmanager
def atomic_output(path: Path, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s content to (same folder, same suffix, so a
    writer that goes by the suffix, savefig, writes the same format); when the block ends, rename it
    over ``path``. If the block or the rename fails, the temporary file goes, ``path`` keeps its
    previous content, and an OSError (or torch's RuntimeError of a failed write) becomes
    ``CaptError("<path>: <reason>")``; any other error passes as it is. ``tmp_name``: the
    temporary file's name where a writer records it in the file (torch.save names its archive's
    folder after it): a fixed name keeps the bytes the same from run to run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # this process's and thread's own name (two writers of one file never share it), the suffix kept
    tmp = path.with_name(tmp_name or f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except CaptError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as e:     # the OS's (ENOSPC, EFBIG, ...), or torch's zip writer's
        tmp.unlink(missing_ok=True)
        raise CaptError(f"{path}: {_reason(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """``data`` (text is written as UTF-8) at ``path``, whole or not at all."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: Path, data, sort_keys: bool = True, indent: int | None = 2) -> None:
    """``data`` as JSON at ``path``, whole or not at all."""
    write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
