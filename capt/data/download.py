"""Download one file over HTTP: resume, retry, verify, never write outside the target folder.

The COCO zips are 13 GB and 6 GB, so a download must survive a dropped connection (resume
with an HTTP ``Range`` request from the bytes already on disk), must not mistake a truncated
or corrupt file for a good one (size, md5 and zip-member checks before the final rename), and
must say at once, in one line, what to fetch by hand when the machine is offline.

Layout while downloading: ``dest_dir/<name>.part`` grows; only a verified file is renamed
(atomically) to ``dest_dir/<name>``. So a file at ``dest_dir/<name>`` is always complete.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from capt.errors import CaptError

log = logging.getLogger(__name__)

_USER_AGENT = "capt-downloader/1.0"
# Socket errors that mean "this host cannot be reached from here" rather than "the transfer
# broke": retrying them only makes an offline user wait.
_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})
# HTTP statuses worth retrying: server-side trouble and explicit "try again later".
_RETRYABLE_4XX = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it lives and, when known, what it must look like."""

    name: str  # plain file name written inside dest_dir, e.g. "train2014.zip"
    url: str
    size: int | None = None  # expected bytes, when known
    md5: str | None = None  # expected md5 hex digest, when known


class DownloadFailed(CaptError):
    """This URL could not give the file (refused, unreachable, broken, or wrong bytes).

    ``reason`` says why in a few words, so a caller trying several sources can name each one's
    failure in a single line; the message itself still says everything on its own.
    """

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


# --------------------------------------------------------------------------- zip safety


def is_safe_member(name: str) -> bool:
    """True when a zip member name stays inside the folder it would be extracted to.

    Refuses absolute paths (``/x``, ``\\x``, ``C:\\x``, ``C:x``) and any ``..`` component,
    splitting on both separators because zips made on Windows use backslashes.
    """
    if not name or name.startswith(("/", "\\")):
        return False
    if re.match(r"^[A-Za-z]:", name):  # a drive letter, with or without a separator
        return False
    return ".." not in re.split(r"[/\\]", name)


def _zip_problem(path: Path) -> str | None:
    """What is wrong with the zip at ``path`` (None when nothing is)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a valid zip archive ({exc})"
    for member in names:
        if not is_safe_member(member):
            return f"unsafe member {member!r} (absolute path or '..' component)"
    return None


def _json_object_problem(path: Path) -> str | None:
    """What is wrong with a JSON file that should hold one object (None when it starts like one).

    Only the first bytes are read: an error page served with status 200 ("<html>...") is caught
    here; a truncated or malformed object is left to the reader, which parses it and names it.
    """
    with open(path, "rb") as f:
        head = f.read(256).removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"{"):
        return f"not a JSON object (it starts with {head[:16]!r})"
    return None


def check_zip_members(path: Path) -> None:
    """Raise CaptError when ``path`` is not a zip or holds a member that would escape its folder.

    Only the central directory is read, so this is cheap even for the 13 GB COCO zip.
    """
    problem = _zip_problem(Path(path))
    if problem is not None:
        raise CaptError(f"{path}: {problem}")


# --------------------------------------------------------------------------- verification


def _md5_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verification_problem(path: Path, remote: RemoteFile) -> str | None:
    """Why the bytes at ``path`` are not ``remote`` (None when they verify).

    Cheapest checks first: a wrong size makes hashing gigabytes pointless.
    """
    found = path.stat().st_size
    if remote.size is not None and found != remote.size:
        return f"size mismatch: expected {remote.size} bytes, got {found}"
    if remote.md5 is not None:
        digest = _md5_of(path)
        if digest != remote.md5.lower():
            return f"md5 mismatch: expected {remote.md5.lower()}, got {digest}"
    if remote.name.lower().endswith(".zip"):
        return _zip_problem(path)
    if remote.name.lower().endswith(".json"):
        return _json_object_problem(path)
    return None


def _check_plain_name(name: str) -> None:
    # The name comes from data (a registry, a mirror); a path in it could write anywhere.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise CaptError(
            f"download target name {name!r} is not a plain file name; "
            "a download never writes outside its folder"
        )


# --------------------------------------------------------------------------- one HTTP transfer


class _TransientError(Exception):
    """The transfer broke in a way a retry (resuming from disk) can fix."""


class _Unreachable(Exception):
    """The host could not be reached at all (DNS failure, connection refused)."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


@dataclass
class _Attempt:
    """What one HTTP request learned, carried into the next retry."""

    total: int | None  # full file size, when known
    received_any: bool = False  # whether any response ever arrived in this download


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200)."""
    match = _CONTENT_RANGE.search(value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _open(
    opener: urllib.request.OpenerDirector, url: str, offset: int, timeout_s: float
) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout_s)


def _classify_http_error(exc: urllib.error.HTTPError, url: str, dest: Path) -> Exception:
    """Turn an HTTP error status into a retryable error or a final CaptError."""
    if exc.code >= 500 or exc.code in _RETRYABLE_4XX:
        return _TransientError(f"HTTP {exc.code} {exc.reason}")
    return DownloadFailed(
        f"{url}: HTTP {exc.code} {exc.reason}; check the URL, or download it yourself "
        f"and put it at {dest}, then rerun",
        url=url, reason=f"HTTP {exc.code} {exc.reason}",
    )


def _fetch_once(
    opener: urllib.request.OpenerDirector,
    remote: RemoteFile,
    part: Path,
    dest: Path,
    state: _Attempt,
    bar: tqdm,
    *,
    timeout_s: float,
    chunk_bytes: int,
) -> None:
    """One request: append to (or restart) ``part`` until the body ends.

    Raises _TransientError / _Unreachable for the retry loop, CaptError for final failures.
    Returns normally when the body was received in full (or the part was already complete).
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(opener, remote.url, offset, timeout_s)
    except urllib.error.HTTPError as exc:
        state.received_any = True
        if exc.code == 416 and offset:
            _, total = _parse_content_range(exc.headers.get("Content-Range"))
            expected = state.total if state.total is not None else total
            if expected is not None and offset == expected:
                log.info("%s: the partial download is already complete", part)
                return
            # The part is longer than the file or the server cannot say: start over. Not a
            # failure, and no loop: without a part the next request carries no Range.
            log.warning("%s: server refused to resume at byte %d; starting over", part, offset)
            part.unlink()
            return _fetch_once(opener, remote, part, dest, state, bar,
                               timeout_s=timeout_s, chunk_bytes=chunk_bytes)
        raise _classify_http_error(exc, remote.url, dest) from exc
    except urllib.error.URLError as exc:
        if _is_unreachable(exc.reason):
            raise _Unreachable(exc.reason) from exc
        raise _TransientError(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc

    state.received_any = True
    with response:
        offset = _start_position(response, part, offset, state)
        length = _int_header(response.headers.get("Content-Length"))
        bar.total = state.total
        bar.n = offset
        bar.refresh()
        received = _copy_body(response, part, offset, bar, chunk_bytes=chunk_bytes)
    if length is not None and received < length:
        raise _TransientError(f"connection closed after {received} of {length} bytes")


def _is_unreachable(reason: object) -> bool:
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _start_position(
    response: http.client.HTTPResponse, part: Path, offset: int, state: _Attempt
) -> int:
    """Where the response body starts in the file; truncates the part when it restarts."""
    if response.status == 206:
        start, total = _parse_content_range(response.headers.get("Content-Range"))
        if state.total is None:
            state.total = total
        if start == offset:
            if offset:
                log.info("%s: resuming at byte %d", part, offset)
            return offset
        # A range we did not ask for: appending it would corrupt the file.
        part.unlink(missing_ok=True)
        raise _TransientError(f"server sent bytes from {start}, asked for {offset}")
    # 200: the whole file (a server that ignores Range restarts us from zero).
    if offset:
        log.info("%s: server ignored the resume request; starting over", part)
    if state.total is None:
        state.total = _int_header(response.headers.get("Content-Length"))
    return 0


def _copy_body(
    response: http.client.HTTPResponse, part: Path, offset: int, bar: tqdm, *, chunk_bytes: int
) -> int:
    """Stream the body into ``part`` (append at ``offset``); return the bytes received."""
    received = 0
    with open(part, "ab" if offset else "wb") as out:
        while True:
            try:
                # read1: returns what has arrived instead of waiting for a whole chunk, so
                # every byte before a dropped connection reaches the disk.
                chunk = response.read1(chunk_bytes)
            except (OSError, http.client.HTTPException) as exc:
                raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
            if not chunk:
                return received
            try:
                out.write(chunk)
            except OSError as exc:
                # A full disk is not a network hiccup: retrying would not help.
                raise CaptError(f"{part}: cannot write the download ({exc})") from exc
            received += len(chunk)
            bar.update(len(chunk))


# --------------------------------------------------------------------------- the public entry


def download_file(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Fetch ``remote`` to ``dest_dir/remote.name`` and return that path.

    A file already there that verifies is returned without touching the network. Otherwise the
    transfer goes to ``<name>.part``, resuming from whatever is on disk, retrying broken
    transfers up to ``retries`` failed attempts in all (waiting ``backoff_s * 2**k``), and is
    renamed into place only after its size, md5 and (for zips) member names verify.

    Raises DownloadFailed (a CaptError) at once when the host cannot be reached or answers
    403/404, after the last retry otherwise, and when the bytes do not verify (the partial
    download is then removed). A bad file already at the destination is a plain CaptError: it
    is the user's to fix, and no other URL would help.
    """
    _check_plain_name(remote.name)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.name
    part = dest_dir / f"{remote.name}.part"

    if dest.exists() and _existing_is_good(dest, remote):
        return dest

    _transfer(remote, part, dest, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
              chunk_bytes=chunk_bytes, progress=progress)

    problem = verification_problem(part, remote)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadFailed(f"{dest} (from {remote.url}): {problem}; removed the partial download",
                             url=remote.url, reason=problem)
    os.replace(part, dest)
    log.info("%s: downloaded and verified", dest)
    return dest


def _existing_is_good(dest: Path, remote: RemoteFile) -> bool:
    problem = verification_problem(dest, remote)
    if problem is None:
        log.info("%s: already present", dest)
        return True
    # Only a verified file is ever renamed to dest, so a bad one was put there by hand (or
    # damaged on disk). Never delete what a user placed: say what is wrong and stop.
    raise CaptError(f"{dest}: {problem}; this file was not written by a verified download: "
                    f"delete it to download {remote.url} again, or replace it with a good copy")


def _transfer(
    remote: RemoteFile,
    part: Path,
    dest: Path,
    *,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    chunk_bytes: int,
    progress: bool,
) -> None:
    """Run requests until ``part`` holds the whole body, or raise CaptError."""
    max_failures = max(1, retries)
    failures = 0
    state = _Attempt(total=remote.size)
    opener = urllib.request.build_opener()  # reads proxy settings now, not at import
    resumed = part.stat().st_size if part.exists() else 0
    log.info("downloading %s -> %s", remote.url, dest)
    with tqdm(total=remote.size, initial=resumed, unit="B", unit_scale=True,
              desc=remote.name, disable=not progress) as bar:
        while True:
            if _part_is_complete(part, state.total):
                return
            try:
                _fetch_once(opener, remote, part, dest, state, bar,
                            timeout_s=timeout_s, chunk_bytes=chunk_bytes)
                return
            except _Unreachable as exc:
                if not state.received_any:
                    raise DownloadFailed(
                        _offline_message(remote.url, dest, exc.reason), url=remote.url,
                        reason=f"cannot reach {urlsplit(remote.url).hostname} ({exc.reason})",
                    ) from None
                last_error = f"cannot reach the host ({exc.reason})"
            except _TransientError as exc:
                last_error = str(exc)
            failures += 1
            if failures >= max_failures:
                raise DownloadFailed(
                    f"{remote.url}: download failed after {failures} attempts; "
                    f"last error: {last_error}; the partial file {part} is kept for resuming",
                    url=remote.url, reason=f"failed after {failures} attempts ({last_error})",
                )
            wait_s = backoff_s * 2 ** (failures - 1)
            log.warning("%s: transfer broke (%s); retry %d/%d in %.1f s",
                        remote.url, last_error, failures, max_failures - 1, wait_s)
            time.sleep(wait_s)


def _part_is_complete(part: Path, total: int | None) -> bool:
    """True when the part already holds ``total`` bytes; drops a part longer than that."""
    if total is None or not part.exists():
        return False
    size = part.stat().st_size
    if size > total:
        log.warning("%s: longer than the expected %d bytes; starting over", part, total)
        part.unlink()
        return False
    return size == total


def _offline_message(url: str, dest: Path, reason: object) -> str:
    host = urlsplit(url).hostname or url
    return (
        f"cannot reach {host} ({reason}): download {url} yourself "
        f"and put it at {dest}, then rerun"
    )
