"""Outputs written whole or not at all: into a temporary file in the same folder, then renamed over
the target. A full disk, a file-size limit or a kill mid-write leaves the previous file as it was
and no temporary file behind (metrics are not in DVC's cache, so a half-written one could not be
restored), and the failure is one line naming the file and the reason the OS gave."""

from __future__ import annotations

import json
import os
import resource
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from capt.errors import CaptError


def _reason(e: BaseException, path: Path) -> str:
    """What went wrong, as the OS says it where it said it (``no space left on device``, ``file too
    large``). torch's zip writer says only ``unexpected pos 64 vs 0``: the reason is then looked
    for where the OS would have found it, this process's file-size limit and the disk's free space."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    first = (str(e).splitlines() or [type(e).__name__])[0]
    if "unexpected pos" in first or "write failed" in first.lower():
        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY:
            return f"file too large (this process's file-size limit is {_mb(limit)}, ulimit -f)"
        if shutil.disk_usage(path.parent).free < (1 << 20):
            return "no space left on device"
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
        raise CaptError(f"{path}: {_reason(e, path)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """:func:`atomic_output` for a folder written by a library that writes folders (transformers'
    ``save_pretrained``): yield a temporary folder beside ``path``; when the block ends, it takes
    ``path``'s place. On failure the temporary folder goes, ``path`` keeps its previous content, and
    an OSError becomes ``CaptError("<path>: <reason>")``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    old = tmp.with_name(tmp.name + ".old")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        moved = False
        if path.exists() or path.is_symlink():
            os.replace(path, old)      # renames within one folder: the previous one goes only once the new is there
            moved = True
        try:
            os.replace(tmp, path)
        except OSError:
            if moved:
                os.replace(old, path)
            raise
        _remove(old)
    except CaptError:
        _remove(tmp)
        raise
    except OSError as e:
        _remove(tmp)
        raise CaptError(f"{path}: {_reason(e, path)}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    """A folder with what it holds, or a file or a link itself; nothing if there is none."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_room(path: Path, nbytes: int) -> None:
    """CaptError naming ``path`` when a file of about ``nbytes`` will not fit: over this process's
    file-size limit (``ulimit -f``), or more than the free space of its disk. For the large HDF5
    writers (the prepared splits, the feature cache): HDF5 crashes the process (SIGSEGV) when a
    write fails, before any error could be named, so they ask before they start."""
    path = Path(path)
    need = int(nbytes * 1.1) + (1 << 20)         # HDF5's chunk indexes and metadata on top of the data
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and need > limit:
        raise CaptError(f"{path}: file too large: about {_mb(need)} to write, over this process's file-size limit "
                        f"of {_mb(limit)} (ulimit -f)")
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise CaptError(f"{path}: no space left on device: about {_mb(need)} to write, {_mb(free)} free")


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e6 else f"{nbytes:,} bytes"


def write_atomic(path: Path, data: bytes | str) -> None:
    """``data`` (text is written as UTF-8) at ``path``, whole or not at all."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: Path, data, sort_keys: bool = True, indent: int | None = 2) -> None:
    """``data`` as JSON at ``path``, whole or not at all."""
    write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
