"""Downloads against a local HTTP server that serves tiny archives in the real formats.

The server honours ``Range`` and can misbehave on purpose: drop the connection half way,
stall, serve wrong bytes, ignore ranges, fail with a status. Every test asserts on the bytes
on disk and on the requests the server saw, so resume and "no network" claims are checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from capt.data import sources
from capt.data.download import RemoteFile, check_zip_members, download_file, is_safe_member
from capt.data.sources import REMOTE_DATASETS, DatasetFile, RemoteDataset, download_dataset
from capt.errors import CaptError

FAST = {"progress": False, "backoff_s": 0.001, "timeout_s": 5.0}


# --------------------------------------------------------------------------- the fake server


@dataclass
class FakeServer:
    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # "/name" -> body
    wrong: dict[str, bytes] = field(default_factory=dict)  # served instead of files[path]
    drop_once: set[str] = field(default_factory=set)  # first request: half the body, close
    stall_once: set[str] = field(default_factory=set)  # first request: half, then stall
    status: dict[str, int] = field(default_factory=dict)  # always answer with this status
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, body: bytes) -> str:
        self.files[f"/{name}"] = body
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def seen(self, name: str) -> list[str | None]:
        """The Range headers of every request for ``name``, in order."""
        with self.lock:
            return [rng for path, rng in self.requests if path == f"/{name}"]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        rng = self.headers.get("Range")
        with fake.lock:
            fake.requests.append((path, rng))
        if path in fake.status:
            self.send_error(fake.status[path])
            return
        body = fake.wrong.get(path, fake.files.get(path))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and not fake.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(payload)))  # always the full length
        self.end_headers()
        with fake.lock:
            drop = path in fake.drop_once
            stall = path in fake.stall_once
            fake.drop_once.discard(path)
            fake.stall_once.discard(path)
        if drop or stall:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if stall:
                time.sleep(1.0)
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    # A proxy from the environment would swallow requests meant for 127.0.0.1.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.fake = fake  # type: ignore[attr-defined]
    # A short poll interval keeps shutdown (and so every test) fast.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- tiny real archives


def _jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    # Noise compresses badly, so the archive is big enough to cut in half meaningfully.
    raw = hashlib.sha256(str(seed).encode()).digest() * (size[0] * size[1] * 3 // 32 + 1)
    image = Image.frombytes("RGB", size, raw[: size[0] * size[1] * 3])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    # The COCO image zips store JPEGs uncompressed; do the same.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


COCO_IDS = {"train2014": [9, 25, 30], "val2014": [42, 73]}


def _coco_images_zip(split: str) -> bytes:
    return _zip({
        f"{split}/COCO_{split}_{image_id:012d}.jpg": _jpeg(image_id)
        for image_id in COCO_IDS[split]
    })


def _coco_annotations_zip() -> bytes:
    members = {}
    for split, ids in COCO_IDS.items():
        images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg", "width": 48, "height": 32}
                  for i in ids]
        captions = [{"id": 100 + i, "image_id": i, "caption": "a small red square"} for i in ids]
        instances = [{"id": 200 + i, "image_id": i, "category_id": 1, "bbox": [1, 2, 10, 8],
                      "area": 80.0, "iscrowd": 0, "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]]}
                     for i in ids]
        categories = [{"id": 1, "name": "square", "supercategory": "shape"}]
        members[f"annotations/captions_{split}.json"] = json.dumps(
            {"images": images, "annotations": captions}).encode()
        members[f"annotations/instances_{split}.json"] = json.dumps(
            {"images": images, "annotations": instances, "categories": categories}).encode()
    return _zip(members)


def _karpathy_split(dataset: str, entries: list[tuple[str, str, str]]) -> bytes:
    images = []
    for imgid, (filepath, filename, split) in enumerate(entries):
        sentence = {"tokens": ["a", "small", "red", "square"], "raw": "A small red square.",
                    "imgid": imgid, "sentid": imgid}
        image = {"filepath": filepath, "filename": filename, "imgid": imgid, "split": split,
                 "sentences": [sentence], "sentids": [imgid]}
        if dataset == "coco":
            image["cocoid"] = int(filename.rsplit("_", 1)[1].split(".")[0])
        images.append(image)
    return json.dumps({"images": images, "dataset": dataset}).encode()


FLICKR_NAMES = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]


def _caption_datasets_zip() -> bytes:
    coco = [(split, f"COCO_{split}_{i:012d}.jpg", "train" if split == "train2014" else "test")
            for split, ids in COCO_IDS.items() for i in ids]
    flickr = [("", name, "train") for name in FLICKR_NAMES]
    return _zip({
        "dataset_coco.json": _karpathy_split("coco", coco),
        "dataset_flickr8k.json": _karpathy_split("flickr8k", flickr),
    })


def _flickr_images_zip() -> bytes:
    return _zip({f"Flicker8k_Dataset/{name}": _jpeg(k) for k, name in enumerate(FLICKR_NAMES)})


def _flickr_text_zip() -> bytes:
    token = "".join(f"{name}#{k}\tA small red square .\n"
                    for name in FLICKR_NAMES for k in range(5))
    return _zip({"Flickr8k.token.txt": token.encode(),
                 "Flickr_8k.trainImages.txt": "\n".join(FLICKR_NAMES).encode()})


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    return {
        "train2014.zip": _coco_images_zip("train2014"),
        "val2014.zip": _coco_images_zip("val2014"),
        "annotations_trainval2014.zip": _coco_annotations_zip(),
        "caption_datasets.zip": _caption_datasets_zip(),
        "Flickr8k_Dataset.zip": _flickr_images_zip(),
        "Flickr8k_text.zip": _flickr_text_zip(),
    }


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _served(server: FakeServer, archives: dict[str, bytes], name: str, **known) -> RemoteFile:
    """Serve archive ``name`` and describe it; ``known`` may set size/md5 (True = real value)."""
    body = archives[name]
    url = server.add(name, body)
    size = len(body) if known.get("size") is True else known.get("size")
    md5 = _md5(body) if known.get("md5") is True else known.get("md5")
    return RemoteFile(name=name, url=url, size=size, md5=md5)


def _leftovers(dest_dir: Path, name: str) -> list[Path]:
    return [p for p in (dest_dir / name, dest_dir / f"{name}.part") if p.exists()]


# --------------------------------------------------------------------------- plain and resumed


def test_plain_download_verifies_and_second_call_does_no_request(server, archives, tmp_path):
    remote = _served(server, archives, "train2014.zip", size=True, md5=True)

    path = download_file(remote, tmp_path / "raw", **FAST)

    assert path == tmp_path / "raw" / "train2014.zip"
    assert path.read_bytes() == archives["train2014.zip"]
    assert not (tmp_path / "raw" / "train2014.zip.part").exists()
    with zipfile.ZipFile(path) as archive, archive.open(
            "train2014/COCO_train2014_000000000009.jpg") as member:
        assert Image.open(member).size == (48, 32)
    assert server.seen("train2014.zip") == [None]

    again = download_file(remote, tmp_path / "raw", **FAST)

    assert again == path
    assert server.seen("train2014.zip") == [None]  # verified on disk, no second request


def test_progress_bar_path_works(server, archives, tmp_path):
    remote = _served(server, archives, "val2014.zip")  # no size: total from Content-Length
    server.drop_once.add("/val2014.zip")

    path = download_file(remote, tmp_path, progress=True, backoff_s=0.001, chunk_bytes=512)

    assert path.read_bytes() == archives["val2014.zip"]


def test_dropped_connection_resumes_from_the_dropped_offset(server, archives, tmp_path):
    remote = _served(server, archives, "train2014.zip", size=True, md5=True)
    server.drop_once.add("/train2014.zip")
    half = len(archives["train2014.zip"]) // 2

    path = download_file(remote, tmp_path, retries=5, **FAST)

    assert path.read_bytes() == archives["train2014.zip"]
    assert server.seen("train2014.zip") == [None, f"bytes={half}-"]


def test_read_timeout_resumes(server, archives, tmp_path):
    remote = _served(server, archives, "annotations_trainval2014.zip", md5=True)
    server.stall_once.add("/annotations_trainval2014.zip")
    half = len(archives["annotations_trainval2014.zip"]) // 2

    path = download_file(remote, tmp_path, retries=3, progress=False, backoff_s=0.001,
                         timeout_s=0.3)

    assert path.read_bytes() == archives["annotations_trainval2014.zip"]
    assert server.seen("annotations_trainval2014.zip") == [None, f"bytes={half}-"]


def test_resumes_from_a_part_file_left_by_an_earlier_run(server, archives, tmp_path):
    remote = _served(server, archives, "caption_datasets.zip", md5=True)
    body = archives["caption_datasets.zip"]
    (tmp_path / "caption_datasets.zip.part").write_bytes(body[:1000])

    path = download_file(remote, tmp_path, **FAST)

    assert path.read_bytes() == body
    assert server.seen("caption_datasets.zip") == ["bytes=1000-"]
    assert not (tmp_path / "caption_datasets.zip.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, archives, tmp_path):
    remote = _served(server, archives, "caption_datasets.zip", md5=True)
    body = archives["caption_datasets.zip"]
    (tmp_path / "caption_datasets.zip.part").write_bytes(body[:1000])
    server.ignore_range = True

    path = download_file(remote, tmp_path, **FAST)

    assert path.read_bytes() == body  # not the first 1000 bytes twice
    assert server.seen("caption_datasets.zip") == ["bytes=1000-"]


def test_416_with_a_complete_part_needs_no_body(server, archives, tmp_path):
    remote = _served(server, archives, "Flickr8k_text.zip", md5=True)  # size unknown
    body = archives["Flickr8k_text.zip"]
    (tmp_path / "Flickr8k_text.zip.part").write_bytes(body)

    path = download_file(remote, tmp_path, **FAST)

    assert path.read_bytes() == body
    assert server.seen("Flickr8k_text.zip") == [f"bytes={len(body)}-"]


def test_416_with_an_overlong_part_starts_over(server, archives, tmp_path):
    remote = _served(server, archives, "Flickr8k_text.zip", md5=True)
    body = archives["Flickr8k_text.zip"]
    (tmp_path / "Flickr8k_text.zip.part").write_bytes(body + b"junk" * 100)

    path = download_file(remote, tmp_path, **FAST)

    assert path.read_bytes() == body
    assert server.seen("Flickr8k_text.zip") == [f"bytes={len(body) + 400}-", None]


def test_a_bad_file_at_the_destination_is_reported_not_deleted(server, archives, tmp_path):
    remote = _served(server, archives, "val2014.zip", size=True, md5=True)
    (tmp_path / "val2014.zip").write_bytes(b"not the archive")

    with pytest.raises(CaptError, match=r"val2014.zip: .*delete it to download"):
        download_file(remote, tmp_path, **FAST)

    assert (tmp_path / "val2014.zip").read_bytes() == b"not the archive"   # a user's file stays
    assert server.seen("val2014.zip") == []                                 # and nothing was fetched


# --------------------------------------------------------------------------- verification


def test_wrong_bytes_fail_md5_and_leave_nothing(server, archives, tmp_path):
    remote = _served(server, archives, "train2014.zip", size=True, md5=True)
    good = archives["train2014.zip"]
    server.wrong["/train2014.zip"] = bytes(b ^ 0xFF for b in good[:50]) + good[50:]

    with pytest.raises(CaptError, match="md5") as info:
        download_file(remote, tmp_path, **FAST)

    message = str(info.value)
    assert "train2014.zip" in message
    assert _md5(good) in message
    assert "removed the partial download" in message
    assert "\n" not in message
    assert _leftovers(tmp_path, "train2014.zip") == []


def test_size_mismatch_fails_and_leaves_nothing(server, archives, tmp_path):
    remote = _served(server, archives, "val2014.zip", size=True)
    good = archives["val2014.zip"]
    server.wrong["/val2014.zip"] = good[:-100]

    with pytest.raises(CaptError, match="size") as info:
        download_file(remote, tmp_path, **FAST)

    assert "val2014.zip" in str(info.value)
    assert f"expected {len(good)} bytes, got {len(good) - 100}" in str(info.value)
    assert _leftovers(tmp_path, "val2014.zip") == []


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs.txt", "a/../../evil.txt"])
def test_unsafe_zip_members_are_refused(server, tmp_path, evil):
    body = _zip({"train2014/ok.txt": b"fine", evil: b"gotcha"})
    assert evil in zipfile.ZipFile(io.BytesIO(body)).namelist()  # the name really is in there
    remote = RemoteFile(name="train2014.zip", url=server.add("train2014.zip", body))

    with pytest.raises(CaptError) as info:
        download_file(remote, tmp_path / "raw", **FAST)

    assert evil in str(info.value)
    assert "train2014.zip" in str(info.value)
    assert _leftovers(tmp_path / "raw", "train2014.zip") == []
    assert not (tmp_path / "evil.txt").exists()


def test_check_zip_members(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(_zip({"annotations/captions_train2014.json": b"{}"}))
    check_zip_members(good)  # no error

    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip({"..\\evil.txt": b"x"}))
    with pytest.raises(CaptError, match=r"bad\.zip.*evil\.txt"):
        check_zip_members(bad)

    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"<html>mirror error page</html>")
    with pytest.raises(CaptError, match=r"not\.zip.*not a valid zip"):
        check_zip_members(not_zip)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("train2014/COCO_train2014_000000000009.jpg", True),
        ("annotations/captions_train2014.json", True),
        ("dataset_coco.json", True),
        ("a..b/c..d.txt", True),  # dots inside a component are fine
        ("dir/", True),
        ("../evil.txt", False),
        ("a/../../evil.txt", False),
        ("a/..", False),
        ("..", False),
        ("..\\evil.txt", False),
        ("a\\..\\evil.txt", False),
        ("/abs.txt", False),
        ("\\abs.txt", False),
        ("C:\\x", False),
        ("C:/x", False),
        ("c:x", False),
        ("", False),
    ],
)
def test_is_safe_member(name, safe):
    assert is_safe_member(name) is safe


# --------------------------------------------------------------------------- failing at once


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host_fails_at_once_saying_what_to_fetch(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/zips/train2014.zip"
    remote = RemoteFile(name="train2014.zip", url=url)

    started = time.monotonic()
    with pytest.raises(CaptError) as info:
        # Real backoff: a retry loop would sleep 1 + 2 + 4 + 8 s.
        download_file(remote, tmp_path, retries=5, backoff_s=1.0, progress=False)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    message = str(info.value)
    assert "cannot reach 127.0.0.1" in message
    assert url in message
    assert str(tmp_path / "train2014.zip") in message
    assert _leftovers(tmp_path, "train2014.zip") == []


@pytest.mark.parametrize("status", [404, 403])
def test_not_found_and_forbidden_fail_at_once(server, tmp_path, status):
    server.status["/missing.zip"] = status
    remote = RemoteFile(name="missing.zip", url=server.url("missing.zip"))

    started = time.monotonic()
    with pytest.raises(CaptError, match=str(status)) as info:
        download_file(remote, tmp_path, retries=5, backoff_s=1.0, progress=False)

    assert time.monotonic() - started < 2.0
    assert remote.url in str(info.value)
    assert server.seen("missing.zip") == [None]


def test_server_errors_are_retried_then_reported(server, tmp_path):
    server.status["/busy.zip"] = 503
    remote = RemoteFile(name="busy.zip", url=server.url("busy.zip"))

    with pytest.raises(CaptError, match="503") as info:
        download_file(remote, tmp_path, retries=3, **FAST)

    assert remote.url in str(info.value)
    assert "after 3 attempts" in str(info.value)
    assert len(server.seen("busy.zip")) == 3


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", ".", ""])
def test_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    remote = RemoteFile(name=name, url="http://127.0.0.1:9/x")

    with pytest.raises(CaptError, match="plain file name"):
        download_file(remote, tmp_path / "raw", **FAST)

    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "raw").exists()  # refused before anything was created


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("name", ["coco", "flickr8k"])
def test_download_dataset_from_a_mirror(server, archives, tmp_path, monkeypatch, name):
    real = REMOTE_DATASETS[name]
    # Same names, URLs and manifest as the real registry; tiny bodies with their own md5s.
    tiny_files = tuple(
        DatasetFile(name=f.name, urls=f.urls, size=len(archives[f.name]), md5=_md5(archives[f.name]))
        for f in real.files
    )
    monkeypatch.setattr(sources, "REMOTE_DATASETS",
                        {name: RemoteDataset(files=tiny_files, manifest=real.manifest)})
    for f in real.files:
        server.add(f"mirror/{f.name}", archives[f.name])

    manifest_path = download_dataset(name, tmp_path / name, base_url=f"{server.base_url}/mirror/",
                                      **FAST)

    assert manifest_path == tmp_path / name / "manifest.json"
    for f in real.files:
        assert (tmp_path / name / f.name).read_bytes() == archives[f.name]
        assert server.seen(f"mirror/{f.name}") == [None]
    text = manifest_path.read_text()
    assert json.loads(text) == real.manifest
    assert text.strip() == json.dumps(real.manifest, indent=2, sort_keys=True)
    # Every member the manifest names is really in the archive it names.
    manifest = real.manifest
    refs = [manifest["splits"], *manifest["captions"]["files"], *manifest["instances"]]
    for ref in refs:
        with zipfile.ZipFile(tmp_path / name / ref["file"]) as archive:
            archive.getinfo(ref["member"])


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(CaptError, match="coco, flickr8k") as info:
        download_dataset("imagenet", tmp_path)
    assert "imagenet" in str(info.value)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("name", sorted(REMOTE_DATASETS))
def test_real_registry_is_consistent(name):
    dataset = REMOTE_DATASETS[name]
    names = {f.name for f in dataset.files}
    for f in dataset.files:
        assert f.urls and len(set(f.urls)) == len(f.urls)
        for url in f.urls:
            assert urlsplit(url).scheme in ("http", "https")
            assert urlsplit(url).path.rsplit("/", 1)[-1] == f.name
        assert f.md5 is None or re.fullmatch(r"[0-9a-f]{32}", f.md5)
        assert f.size is None or f.size > 0
    manifest = dataset.manifest
    assert manifest["name"] == name
    refs = [manifest["splits"], *manifest["captions"]["files"], *manifest["instances"]]
    assert set(manifest["images"]) <= names
    assert {ref["file"] for ref in refs} <= names
    for zip_name, loose in dataset.loose.items():     # a stand-in is the one member read of its zip
        assert zip_name in names and [loose.name] == [r["member"] for r in refs if r["file"] == zip_name]
        assert loose.urls and all(urlsplit(u).path.rsplit("/", 1)[-1] == loose.name for u in loose.urls)


def test_karpathy_splits_are_shared_and_the_dead_stanford_url_is_not_first():
    splits = {name: next(f for f in d.files if f.name == "caption_datasets.zip")
              for name, d in REMOTE_DATASETS.items()}
    assert splits["coco"] == splits["flickr8k"]  # one entry: same sources for both datasets
    stanford = "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
    assert stanford in splits["coco"].urls  # kept: it may come back
    assert splits["coco"].urls[0] != stanford  # but answers 404 since 2023
    assert splits["coco"].md5 is None and splits["coco"].size is None  # unconfirmed


# --------------------------------------------------------------------------- sources in turn


def _fake_registry(monkeypatch, server, archives, folders=None, images_first=False):
    """The real datasets' file names and manifests, with tiny bodies and local URLs.

    Each file's URLs are ``folders[name]`` (a folder on the local server, or a whole URL), by
    default the single folder "main", which serves every archive. An md5 is set where the real
    registry has one, so each file is checked the way the real one is.
    """
    folders = folders or {}
    registry = {}
    for name, real in REMOTE_DATASETS.items():
        files = [
            DatasetFile(
                name=f.name,
                urls=tuple(d if "://" in d else server.url(f"{d}/{f.name}")
                           for d in folders.get(f.name, ["main"])),
                md5=_md5(archives[f.name]) if f.md5 is not None else None,
            )
            for f in real.files
        ]
        if images_first:  # the order a careless registry could have
            files.sort(key=lambda f: f.name not in real.manifest["images"])
        loose = {zip_name: DatasetFile(name=f.name, urls=(server.url(f"main/{f.name}"),))
                 for zip_name, f in real.loose.items()}             # served only where a test adds it
        registry[name] = RemoteDataset(files=tuple(files), manifest=real.manifest, loose=loose)
    monkeypatch.setattr(sources, "REMOTE_DATASETS", registry)
    for name, body in archives.items():
        server.add(f"main/{name}", body)


def _paths(server: FakeServer) -> list[str]:
    with server.lock:
        return [path for path, _ in server.requests]


def _dead_first_source(server, how):
    """Make "dead/caption_datasets.zip" fail in the way ``how`` says; returns its URL."""
    if how in (404, 403):
        server.status["/dead/caption_datasets.zip"] = how
    elif how == "not a zip":
        server.add("dead/caption_datasets.zip", b"<html>this page has moved</html>")
    elif how == "another zip":  # a sound zip, but without the split the manifest reads
        server.add("dead/caption_datasets.zip", _zip({"dataset_flickr30k.json": b"{}"}))
    elif how == "unreachable":
        return f"http://127.0.0.1:{_closed_port()}/caption_datasets.zip"
    return server.url("dead/caption_datasets.zip")


@pytest.mark.parametrize("how", [404, 403, "not a zip", "another zip", "unreachable"])
def test_a_failing_first_source_falls_through_to_the_next(server, archives, tmp_path,
                                                          monkeypatch, how):
    dead = _dead_first_source(server, how)
    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": [dead, "copy"]})
    server.add("copy/caption_datasets.zip", archives["caption_datasets.zip"])
    dest = tmp_path / "raw" / "coco"

    manifest = download_dataset("coco", dest, **FAST)

    assert (dest / "caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"]
    assert server.seen("copy/caption_datasets.zip") == [None]
    assert manifest.exists()
    assert not (dest / "caption_datasets.zip.part").exists()


def test_a_partial_from_a_failed_source_is_not_resumed_from_another(server, archives, tmp_path,
                                                                    monkeypatch):
    # caption_datasets.zip has no md5: bytes of two different copies spliced together could pass
    # the zip check, so the next source starts from zero.
    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": ["dead", "copy"]})
    server.add("dead/caption_datasets.zip", _zip({"dataset_coco.json": b"x" * 5000}))
    server.drop_once.add("/dead/caption_datasets.zip")
    server.add("copy/caption_datasets.zip", archives["caption_datasets.zip"])

    download_dataset("coco", tmp_path / "coco", retries=1, progress=False, backoff_s=0.001)

    assert server.seen("copy/caption_datasets.zip") == [None]  # no Range: not resumed
    assert (tmp_path / "coco" / "caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"]


def test_every_source_failing_is_one_line_naming_each_url_and_where_to_put_it(
        server, archives, tmp_path, monkeypatch):
    unreachable = f"http://127.0.0.1:{_closed_port()}/caption_datasets.zip"
    _fake_registry(monkeypatch, server, archives,
                   {"caption_datasets.zip": ["dead", unreachable, "gone"]})
    server.status["/dead/caption_datasets.zip"] = 404
    server.add("gone/caption_datasets.zip", b"<html>moved</html>")
    raw = tmp_path / "raw"

    with pytest.raises(CaptError) as info:
        download_dataset("coco", raw / "coco", **FAST)

    message = str(info.value)
    assert "\n" not in message
    assert f"{server.url('dead/caption_datasets.zip')} (HTTP 404" in message
    assert f"{unreachable} (cannot reach 127.0.0.1" in message
    assert f"{server.url('gone/caption_datasets.zip')} (not a valid zip" in message
    # Both datasets that need the file: a copy in either folder is used.
    assert str(raw / "coco" / "caption_datasets.zip") in message
    assert str(raw / "flickr8k" / "caption_datasets.zip") in message
    # It failed before any image zip was fetched, and left nothing that looks complete.
    assert not {p.rsplit("/", 1)[-1] for p in _paths(server)} & {"train2014.zip", "val2014.zip"}
    assert not (raw / "coco" / "manifest.json").exists()
    assert _leftovers(raw / "coco", "caption_datasets.zip") == []


@pytest.mark.parametrize("name", ["coco", "flickr8k"])
def test_small_files_are_fetched_before_the_image_zips(server, archives, tmp_path, monkeypatch,
                                                       name):
    _fake_registry(monkeypatch, server, archives, images_first=True)
    images = set(REMOTE_DATASETS[name].manifest["images"])

    download_dataset(name, tmp_path / name, **FAST)

    fetched = [p.rsplit("/", 1)[-1] for p in _paths(server)]
    assert sorted(fetched) == sorted(f.name for f in REMOTE_DATASETS[name].files)
    first_image = min(i for i, f in enumerate(fetched) if f in images)
    assert all(f not in images for f in fetched[:first_image])
    assert set(fetched[first_image:]) == images


def test_param_urls_are_tried_before_the_built_in_ones(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    server.add("mine/caption_datasets.zip", archives["caption_datasets.zip"])
    server.add("mine/annotations_trainval2014.zip", archives["annotations_trainval2014.zip"])
    urls = {
        # a list, tried in order: the first is dead (404), the second serves
        "caption_datasets.zip": [server.url("gone/caption_datasets.zip"),
                                 server.url("mine/caption_datasets.zip")],
        "annotations_trainval2014.zip": server.url("mine/annotations_trainval2014.zip"),
    }

    download_dataset("coco", tmp_path / "coco", urls=urls, **FAST)

    splits = [p for p in _paths(server) if p.endswith("caption_datasets.zip")]
    assert splits == ["/gone/caption_datasets.zip", "/mine/caption_datasets.zip"]
    assert server.seen("mine/annotations_trainval2014.zip") == [None]
    assert server.seen("main/annotations_trainval2014.zip") == []
    assert server.seen("main/train2014.zip") == [None]  # files without urls: the built-in


def test_urls_then_base_url_then_the_built_in_sources(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    for name, body in archives.items():
        if name != "caption_datasets.zip":  # a mirror that lacks one file
            server.add(f"mirror/{name}", body)
    server.add("mine/train2014.zip", archives["train2014.zip"])

    download_dataset("coco", tmp_path / "coco", base_url=server.url("mirror/"),
                     urls={"train2014.zip": server.url("mine/train2014.zip")}, **FAST)

    assert server.seen("mine/train2014.zip") == [None]
    assert server.seen("mirror/train2014.zip") == []
    assert server.seen("mirror/val2014.zip") == [None]
    assert server.seen("main/val2014.zip") == []
    assert server.seen("mirror/caption_datasets.zip") == [None]  # 404 there ...
    assert server.seen("main/caption_datasets.zip") == [None]  # ... so the built-in source
    assert (tmp_path / "coco" / "caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"]


@pytest.mark.parametrize("urls", [
    {"dataset_flickr8k.json": "http://127.0.0.1:9/dataset_flickr8k.json"},  # another dataset's split
    {"Flickr8k_text.zip": "http://127.0.0.1:9/Flickr8k_text.zip"},  # another dataset's file
])
def test_a_file_name_in_urls_the_dataset_lacks_is_refused(server, archives, tmp_path,
                                                          monkeypatch, urls):
    _fake_registry(monkeypatch, server, archives)

    with pytest.raises(CaptError) as info:
        download_dataset("coco", tmp_path / "coco", urls=urls, **FAST)

    message = str(info.value)
    assert repr(next(iter(urls))) in message
    for known in ("annotations_trainval2014.zip", "caption_datasets.zip", "train2014.zip",
                  "val2014.zip"):
        assert known in message
    assert _paths(server) == []
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("value", [5, [None], {"url": "x"}])
def test_a_urls_value_that_is_not_urls_is_refused(server, archives, tmp_path, monkeypatch, value):
    _fake_registry(monkeypatch, server, archives)

    with pytest.raises(CaptError, match="must be a URL or a list of URLs"):
        download_dataset("coco", tmp_path / "coco", urls={"caption_datasets.zip": value}, **FAST)

    assert _paths(server) == []


def test_the_second_dataset_reuses_the_siblings_verified_splits(server, archives, tmp_path,
                                                                monkeypatch, caplog):
    _fake_registry(monkeypatch, server, archives)
    raw = tmp_path / "raw"
    download_dataset("coco", raw / "coco", **FAST)
    assert server.seen("main/caption_datasets.zip") == [None]

    with caplog.at_level("INFO", logger="capt.data.sources"):
        download_dataset("flickr8k", raw / "flickr8k", **FAST)

    assert server.seen("main/caption_datasets.zip") == [None]  # still the one request
    reused = raw / "flickr8k" / "caption_datasets.zip"
    assert reused.read_bytes() == archives["caption_datasets.zip"]
    assert any("reused" in r.message and str(raw / "coco" / "caption_datasets.zip") in r.message
               for r in caplog.records)
    assert server.seen("main/Flickr8k_text.zip") == [None]  # the dataset's own files: fetched


def test_a_sibling_copy_that_does_not_verify_is_not_reused(server, archives, tmp_path,
                                                           monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    raw = tmp_path / "raw"
    (raw / "coco").mkdir(parents=True)
    coco_only = _zip({"dataset_coco.json": b"{}"})  # lacks dataset_flickr8k.json
    (raw / "coco" / "caption_datasets.zip").write_bytes(coco_only)

    download_dataset("flickr8k", raw / "flickr8k", **FAST)

    assert server.seen("main/caption_datasets.zip") == [None]
    assert (raw / "flickr8k" / "caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"]
    assert (raw / "coco" / "caption_datasets.zip").read_bytes() == coco_only  # left alone


def test_a_verified_file_at_the_destination_needs_no_source(server, archives, tmp_path,
                                                            monkeypatch):
    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": ["dead"]})
    server.status["/dead/caption_datasets.zip"] = 404
    dest = tmp_path / "coco"
    dest.mkdir()
    (dest / "caption_datasets.zip").write_bytes(archives["caption_datasets.zip"])  # put by hand

    download_dataset("coco", dest, **FAST)

    assert server.seen("dead/caption_datasets.zip") == []
    assert (dest / "manifest.json").exists()


def test_a_file_at_the_destination_without_the_needed_member_is_reported(server, archives,
                                                                         tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    dest = tmp_path / "coco"
    dest.mkdir()
    flickr_only = _zip({"dataset_flickr8k.json": b"{}"})
    (dest / "caption_datasets.zip").write_bytes(flickr_only)

    with pytest.raises(CaptError, match=r"caption_datasets\.zip: lacks dataset_coco\.json"):
        download_dataset("coco", dest, **FAST)

    assert (dest / "caption_datasets.zip").read_bytes() == flickr_only  # a user's file stays
    assert server.seen("main/caption_datasets.zip") == []


def test_the_stage_passes_urls_from_params(server, archives, tmp_path, monkeypatch, capsys):
    from stages import download as stage

    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": ["dead"]})
    server.status["/dead/caption_datasets.zip"] = 404
    server.add("mine/caption_datasets.zip", archives["caption_datasets.zip"])
    monkeypatch.chdir(tmp_path)
    mine = server.url("mine/caption_datasets.zip")
    Path("params.yaml").write_text(
        "download:\n"
        f"  flickr8k: {{source: flickr8k, urls: {{caption_datasets.zip: [{mine}]}}}}\n"
        f"  typo: {{source: flickr8k, urls: {{caption_dataset.zip: {mine}}}}}\n")

    stage.main("flickr8k", out_root=Path("data/raw"))

    assert Path("data/raw/flickr8k/caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"]
    assert server.seen("dead/caption_datasets.zip") == []

    with pytest.raises(SystemExit):
        stage.main("typo", out_root=Path("data/raw"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'caption_dataset.zip'" in err and "caption_datasets.zip" in err


def test_checksums_replace_the_built_in_values_and_still_verify(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    repacked = _zip({"annotations/captions_train2014.json": b"{}", "annotations/captions_val2014.json": b"{}",
                     "annotations/instances_train2014.json": b"{}", "annotations/instances_val2014.json": b"{}",
                     "annotations/README": b"re-packed"})
    server.add("copy/annotations_trainval2014.zip", repacked)
    urls = {"annotations_trainval2014.zip": server.url("copy/annotations_trainval2014.zip")}

    # other bytes than the registry's md5: the copy is refused, and the built-in source serves
    download_dataset("coco", tmp_path / "refused", urls=urls, **FAST)
    assert (tmp_path / "refused/annotations_trainval2014.zip").read_bytes() == archives["annotations_trainval2014.zip"]

    # with its own checksums the copy is the file; a wrong one is refused as before
    good = {"annotations_trainval2014.zip": {"md5": _md5(repacked), "size": len(repacked)}}
    download_dataset("coco", tmp_path / "given", urls=urls, checksums=good, **FAST)
    assert (tmp_path / "given/annotations_trainval2014.zip").read_bytes() == repacked
    wrong = {"annotations_trainval2014.zip": {"md5": "0" * 32}}
    monkeypatch.setattr(sources, "REMOTE_DATASETS", {
        k: RemoteDataset(tuple(f for f in v.files if f.name == "annotations_trainval2014.zip"), v.manifest)
        for k, v in sources.REMOTE_DATASETS.items()})
    with pytest.raises(CaptError, match="md5 mismatch"):
        download_dataset("coco", tmp_path / "wrong", urls=urls, checksums=wrong, **FAST)


@pytest.mark.parametrize("checksums", [{"nope.zip": {"md5": "0"}}, {"train2014.zip": {"sha1": "0"}},
                                       {"train2014.zip": {"size": "big"}}, {"train2014.zip": "abc"}])
def test_malformed_checksums_are_refused_before_any_request(server, archives, tmp_path, monkeypatch, checksums):
    _fake_registry(monkeypatch, server, archives)
    with pytest.raises(CaptError, match="checksums"):
        download_dataset("coco", tmp_path / "coco", checksums=checksums, **FAST)
    assert _paths(server) == []


# --------------------------------------------------------------------------- Karpathy's JSON on its own


def _loose_splits(archives: dict[str, bytes], name: str = "dataset_coco.json") -> bytes:
    with zipfile.ZipFile(io.BytesIO(archives["caption_datasets.zip"])) as zf:
        return zf.read(name)


def _read_manifest(dest: Path) -> dict:
    return json.loads((dest / "manifest.json").read_text())


def test_a_loose_split_json_put_by_hand_stands_in_for_the_zip(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    dest = tmp_path / "coco"
    dest.mkdir()
    (dest / "dataset_coco.json").write_bytes(_loose_splits(archives))

    download_dataset("coco", dest, **FAST)

    assert server.seen("main/caption_datasets.zip") == [] and not (dest / "caption_datasets.zip").exists()
    assert _read_manifest(dest)["splits"] == {"file": "dataset_coco.json", "member": None}
    # prepare's reader reads the loose file through the manifest as it reads the zip's member
    from capt.data.manifest import load_manifest
    manifest = load_manifest(dest)
    with manifest.open(manifest.splits) as f:
        assert json.load(f)["dataset"] == "coco"


def test_when_no_source_gives_the_zip_the_loose_split_json_is_fetched(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": ["dead"]})
    server.status["/dead/caption_datasets.zip"] = 404
    server.add("json/dataset_coco.json", _loose_splits(archives))
    dest = tmp_path / "coco"

    download_dataset("coco", dest, urls={"dataset_coco.json": server.url("json/dataset_coco.json")}, **FAST)

    assert server.seen("json/dataset_coco.json") == [None]
    assert (dest / "dataset_coco.json").read_bytes() == _loose_splits(archives)
    manifest = _read_manifest(dest)
    assert manifest["splits"] == {"file": "dataset_coco.json", "member": None}
    assert manifest["captions"] == REMOTE_DATASETS["coco"].manifest["captions"]    # the rest unchanged


def test_an_error_page_is_no_split_json_and_failing_both_names_both(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives, {"caption_datasets.zip": ["dead"]})
    server.status["/dead/caption_datasets.zip"] = 404
    server.add("json/dataset_coco.json", b"<html>moved</html>")     # served with status 200
    raw = tmp_path / "raw"

    with pytest.raises(CaptError) as info:
        download_dataset("coco", raw / "coco", urls={"dataset_coco.json": server.url("json/dataset_coco.json")},
                         **FAST)

    message = str(info.value)
    assert "\n" not in message and message.startswith("caption_datasets.zip (or dataset_coco.json on its own)")
    assert f"{server.url('dead/caption_datasets.zip')} (HTTP 404" in message
    assert f"{server.url('json/dataset_coco.json')} (not a JSON object" in message
    assert str(raw / "coco" / "caption_datasets.zip") in message and str(raw / "coco" / "dataset_coco.json") in message
    assert _leftovers(raw / "coco", "dataset_coco.json") == [] and not (raw / "coco" / "manifest.json").exists()


def test_a_zip_already_there_is_preferred_to_the_loose_json(server, archives, tmp_path, monkeypatch):
    _fake_registry(monkeypatch, server, archives)
    dest = tmp_path / "coco"
    dest.mkdir()
    (dest / "caption_datasets.zip").write_bytes(archives["caption_datasets.zip"])
    (dest / "dataset_coco.json").write_bytes(b"<html>not read</html>")

    download_dataset("coco", dest, **FAST)

    assert _read_manifest(dest)["splits"] == {"file": "caption_datasets.zip", "member": "dataset_coco.json"}
