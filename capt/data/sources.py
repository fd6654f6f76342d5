"""The public datasets this project reads, as data: which files, where, and what they hold.

Each dataset is a few archives plus a ``manifest.json`` naming which archive holds the
images, the Karpathy split JSON, the captions and the instances (see ``capt.data.manifest``).

Every file has an ordered list of URLs: a dead one (Karpathy's Stanford page answers 404 since
2023) only sends the download on to the next. Whichever URL a file comes from, it is checked
against the same size and md5. Sizes and md5 sums are filled in only where a public source
confirms them; the comment next to each says where it came from. A wrong checksum would reject
every good download, so an unconfirmed value stays None (the download is then checked for
size/zip sanity and for the members the manifest needs only).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from capt.data.download import DownloadFailed, RemoteFile, download_file, verification_problem
from capt.errors import CaptError
from capt.files import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetFile:
    """One file a dataset needs: the URLs that serve it, best first, and when known what it
    must look like (checked on every copy, whichever URL gave it)."""

    name: str  # plain file name written inside the dataset's folder
    urls: tuple[str, ...]  # tried in this order until one gives a file that verifies
    size: int | None = None  # expected bytes, when known
    md5: str | None = None  # expected md5 hex digest, when known

    def at(self, url: str) -> RemoteFile:
        """This file as served by ``url`` (what ``download_file`` fetches and checks)."""
        return RemoteFile(name=self.name, url=url, size=self.size, md5=self.md5)


@dataclass(frozen=True)
class RemoteDataset:
    """The files of one dataset and the manifest that says what each holds.

    ``loose``: for a zip of ``files`` whose one member the manifest reads, that member as a file
    of its own (e.g. dataset_coco.json for caption_datasets.zip), with its own sources: found in
    the folder it stands in for the zip, and it is fetched when no source gives the zip.
    """

    files: tuple[DatasetFile, ...]
    manifest: dict[str, Any]  # written as manifest.json beside the files
    loose: dict[str, DatasetFile] = field(default_factory=dict)  # zip name -> its member, loose


# Karpathy's split files (dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json).
# Only one public source gives an md5 for it (mlverse/torchvision R/dataset-flickr.R:
# 4fa8c08369d22fe16e41dc124bd1adc2), not confirmed by a second, and a wrong checksum would
# refuse every real download; so size and md5 stay None, and what is checked is that the zip is
# sound and holds the member the manifest reads (dataset_coco.json / dataset_flickr8k.json).
#
# Candidates the public record offers that are left out:
# - kaggle.com/datasets/shtvkumar/karpathy-splits (named in yxuansu/MAGIC's data README): the
#   three JSONs, but Kaggle serves files only to a logged-in user or its API with a token.
# - github.com/Delphboy/karpathy-splits: the JSONs one by one, not this zip.
# - LAVIS/BLIP's coco_karpathy_{train,val,test}.json (storage.googleapis.com): another format
#   (one list per split, captions only), not Karpathy's dataset_coco.json.
# - a cloudstor.aarnet.edu.au share link in one public download script: a personal share,
#   named by a token rather than the file, with nothing in the record saying it still serves.
KARPATHY_SPLITS = DatasetFile(
    name="caption_datasets.zip",
    urls=(
        # A copy of the same zip on the Hugging Face hub (dataset gpantaz/karpathy_split),
        # downloaded by the public vl_mamba code (its COCOLoader and VisualGenomeLoader), which
        # reads dataset_coco.json straight out of it.
        "https://huggingface.co/datasets/gpantaz/karpathy_split/resolve/main/caption_datasets.zip",
        # The original (Karpathy's deepimagesent page): 404 since 2023 (issues
        # ruotianluo/ImageCaptioning.pytorch#184 and #186, yahoo/object_relation_transformer#21),
        # kept last in case it comes back.
        "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    ),
)



def _karpathy_json(name: str) -> DatasetFile:
    """One of Karpathy's split JSONs on its own, as most public copies serve them.

    The one public repository that holds them, Delphboy/karpathy-splits, keeps each in Git LFS
    (its pointer files give dataset_coco.json as 408,860,810 bytes and dataset_flickr8k.json as
    26,366,489); public download scripts fetch them from its raw/main URLs. Size and md5 stay
    None all the same: a user's own copy of the same JSON, written with other whitespace, must
    pass too. prepare reads the file and names it when it is not a Karpathy split.
    """
    return DatasetFile(name=name, urls=(f"https://github.com/Delphboy/karpathy-splits/raw/main/{name}",))


COCO_FILES = (
    # md5: PaddleNLP COCOCaptions (MD5_ANNO) and mlverse/torchvision coco dataset (it is also
    # the S3 ETag of the object); size: wget "Length: 252872794" / keras progress output.
    DatasetFile(
        name="annotations_trainval2014.zip",
        urls=("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",),
        size=252_872_794,
        md5="0a379cfc70b0e71301e0f377548639bd",
    ),
    KARPATHY_SPLITS,
    # md5: salesforce/LAVIS COCO builders (and pystiche-papers' download script); size: the
    # Content-Length that wget/keras print in public notebooks (e.g. the keras.io image
    # captioning example's output "13510574080/13510573713").
    DatasetFile(
        name="train2014.zip",
        urls=("http://images.cocodataset.org/zips/train2014.zip",),
        size=13_510_573_713,
        md5="0da8c0bd3d6becc4dcb32757491aca88",
    ),
    # md5: salesforce/LAVIS COCO builders; size: wget "Length: 6645013297" in public notebooks.
    DatasetFile(
        name="val2014.zip",
        urls=("http://images.cocodataset.org/zips/val2014.zip",),
        size=6_645_013_297,
        md5="a3d79f5ed8d289b7a7554ce06a5782b3",
    ),
)

FLICKR8K_FILES = (
    # md5s: mlverse/torchvision R/dataset-flickr.R and an independent CMake fetch script
    # (EXPECTED_MD5) agree; sizes not confirmed by any public source, so None.
    DatasetFile(
        name="Flickr8k_text.zip",
        urls=("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",),
        md5="bf6c1abcb8e4a833b7f922104de18627",
    ),
    KARPATHY_SPLITS,
    DatasetFile(
        name="Flickr8k_Dataset.zip",
        urls=("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",),
        md5="f18a1e2920de5bd84dae7cf08ec78978",
    ),
)


def _ref(file: str, member: str | None) -> dict[str, str | None]:
    return {"file": file, "member": member}


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "coco": RemoteDataset(
        files=COCO_FILES,
        manifest={
            "name": "coco",
            "images": ["train2014.zip", "val2014.zip"],
            "splits": _ref("caption_datasets.zip", "dataset_coco.json"),
            "captions": {
                "format": "coco",
                "files": [
                    _ref("annotations_trainval2014.zip", "annotations/captions_train2014.json"),
                    _ref("annotations_trainval2014.zip", "annotations/captions_val2014.json"),
                ],
            },
            "instances": [
                _ref("annotations_trainval2014.zip", "annotations/instances_train2014.json"),
                _ref("annotations_trainval2014.zip", "annotations/instances_val2014.json"),
            ],
        },
        loose={"caption_datasets.zip": _karpathy_json("dataset_coco.json")},
    ),
    "flickr8k": RemoteDataset(
        files=FLICKR8K_FILES,
        manifest={
            "name": "flickr8k",
            "images": ["Flickr8k_Dataset.zip"],
            "splits": _ref("caption_datasets.zip", "dataset_flickr8k.json"),
            "captions": {
                "format": "flickr8k",
                "files": [_ref("Flickr8k_text.zip", "Flickr8k.token.txt")],
            },
            "instances": [],
        },
        loose={"caption_datasets.zip": _karpathy_json("dataset_flickr8k.json")},
    ),
}


def download_dataset(
    name: str,
    dest_dir: Path,
    *,
    base_url: str | None = None,
    urls: Mapping[str, str | list[str]] | None = None,
    checksums: Mapping[str, Mapping[str, Any]] | None = None,
    **download_kwargs: Any,
) -> Path:
    """Download every file of REMOTE_DATASETS[name] into dest_dir, then write
    dest_dir/manifest.json (json, indent=2, sort_keys=True). Returns the manifest path.

    Each file's URLs are tried in turn until one gives bytes that verify: ``urls[file name]``
    (a URL or a list), then ``base_url`` (a mirror holding the same file names: its directory
    plus the file name), then the built-in sources. The small files come before the image
    zips. A file already in dest_dir that verifies is kept; a verified copy in a sibling
    folder (another dataset's, e.g. caption_datasets.zip in data/raw/flickr8k/ for
    data/raw/coco/) is linked or copied instead of downloaded. A zip with a loose stand-in
    (``RemoteDataset.loose``: Karpathy's dataset_coco.json for caption_datasets.zip) may be
    replaced by it: one in dest_dir is used when the zip is not there, and its sources are
    tried when no source gives the zip; the manifest then reads the loose file. When no source
    gives a file: one-line CaptError naming every URL tried, why each failed, and where to put
    it by hand (the zip or its loose stand-in).
    ``checksums[file name]`` (``{size: ..., md5: ...}``) replaces what the built-in entry says a
    file must be, for copies that are not the public bytes (a re-packed zip, the rehearsal's
    miniature mirror): every copy is still verified, against these values.
    ``download_kwargs`` go to ``download_file`` (retries, timeout_s, progress, ...).
    Unknown dataset name, or a file name in ``urls`` or ``checksums`` the dataset does not have
    (loose stand-ins count) -> CaptError listing the known ones.
    """
    dataset = REMOTE_DATASETS.get(name)
    if dataset is None:
        known = ", ".join(sorted(REMOTE_DATASETS))
        raise CaptError(f"unknown dataset {name!r}: known datasets are {known}")
    given = _given_urls(name, dataset, urls)
    expected = _given_checksums(name, dataset, checksums)
    dest_dir = Path(dest_dir)
    manifest = dataset.manifest

    def prepared(file: DatasetFile) -> tuple[DatasetFile, list[str]]:
        file = replace(file, **expected.get(file.name, {}))
        return file, _sources(file, given.get(file.name, ()), base_url)

    for file in _fetch_order(dataset):
        file, sources = prepared(file)
        members = _members_needed(dataset.manifest, file.name)
        if file.name not in dataset.loose:
            _fetch(file, sources, members, dest_dir, download_kwargs)
        elif _fetch_zip_or_loose(file, sources, members, *prepared(dataset.loose[file.name]), dest_dir,
                                 download_kwargs):
            manifest = _reading_loose(manifest, file.name, dataset.loose[file.name].name)
    return _write_manifest(manifest, dest_dir / "manifest.json")


def _file_names(dataset: RemoteDataset) -> list[str]:
    """The names a dataset's files may have: its files, then their loose stand-ins."""
    return [f.name for f in dataset.files] + [f.name for f in dataset.loose.values()]


def _given_urls(
    name: str, dataset: RemoteDataset, urls: Mapping[str, Any] | None
) -> dict[str, tuple[str, ...]]:
    """The ``urls`` param as {file name: (url, ...)}, refusing names the dataset lacks: a typo
    there would otherwise be ignored and the dead default fetched."""
    if not urls:
        return {}
    known = ", ".join(_file_names(dataset))
    if not isinstance(urls, Mapping):
        raise CaptError(f"urls for {name} must map file names ({known}) to URLs, got {urls!r}")
    given = {}
    for file_name, value in urls.items():
        if file_name not in _file_names(dataset):
            raise CaptError(f"urls names {file_name!r}, which is not a file of {name}; "
                            f"its files are {known}")
        listed = [value] if isinstance(value, str) else value
        if not isinstance(listed, (list, tuple)) or not all(isinstance(u, str) and u for u in listed):
            raise CaptError(f"urls: {file_name} of {name} must be a URL or a list of URLs, "
                            f"got {value!r}")
        given[file_name] = tuple(listed)
    return given


def _given_checksums(
    name: str, dataset: RemoteDataset, checksums: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The ``checksums`` param as {file name: {"size": int, "md5": str}}, checked key by key."""
    known = set(_file_names(dataset))
    given = {}
    for file_name, value in (checksums or {}).items():
        if file_name not in known:
            raise CaptError(f"checksums names {file_name!r}, which is not a file of {name}; "
                            f"its files are {', '.join(sorted(known))}")
        if not isinstance(value, Mapping) or not set(value) <= {"size", "md5"} or not value:
            raise CaptError(f"checksums: {file_name} of {name} must be {{size: <bytes>, md5: <hex>}}, got {value!r}")
        if not isinstance(value.get("size", 0), int) or not isinstance(value.get("md5", ""), str):
            raise CaptError(f"checksums: {file_name} of {name}: size must be an integer and md5 a hex string, "
                            f"got {value!r}")
        given[file_name] = dict(value)
    return given


def _sources(file: DatasetFile, given: tuple[str, ...], base_url: str | None) -> list[str]:
    """Every URL to try for ``file``, in order, each once: the user's before the built-in."""
    mirror = [f"{base_url.rstrip('/')}/{file.name}"] if base_url is not None else []
    return list(dict.fromkeys([*given, *mirror, *file.urls]))


def _fetch_order(dataset: RemoteDataset) -> list[DatasetFile]:
    # The image zips are the big ones (19 GB for COCO). Everything else first: a file no source
    # can give then stops the stage in seconds, not after hours of images.
    images = set(dataset.manifest["images"])
    return sorted(dataset.files, key=lambda f: f.name in images)


def _members_needed(manifest: dict[str, Any], file_name: str) -> tuple[str, ...]:
    """The members of ``file_name`` the manifest reads (e.g. dataset_coco.json)."""
    refs = [manifest["splits"], *manifest["captions"]["files"], *manifest["instances"]]
    return tuple(sorted({r["member"] for r in refs if r["file"] == file_name and r["member"]}))


class _NoSource(CaptError):
    """No source gave a file; ``failures``: each URL tried and why it failed."""

    def __init__(self, message: str, failures: list[str]):
        super().__init__(message)
        self.failures = failures


def _fetch_zip_or_loose(
    file: DatasetFile, sources: list[str], members: tuple[str, ...], loose: DatasetFile,
    loose_sources: list[str], dest_dir: Path, download_kwargs: dict[str, Any],
) -> bool:
    """Put ``file`` (a zip) or ``loose`` (the one member of it the manifest reads, on its own) in
    dest_dir; True when it is the loose file. The zip where it is already there; else a loose
    copy put there by hand; else the zip's sources, then the loose file's."""
    if not (dest_dir / file.name).exists() and (dest_dir / loose.name).exists():
        _fetch(loose, [], (), dest_dir, download_kwargs)        # verified as any file put by hand
        return True
    try:
        _fetch(file, sources, members, dest_dir, download_kwargs)
        return False
    except _NoSource as zip_failed:
        log.warning("%s: no source gave it; trying %s on its own", file.name, loose.name)
        try:
            _fetch(loose, loose_sources, (), dest_dir, download_kwargs)
            return True
        except _NoSource as loose_failed:
            tried = "; ".join(" ".join(f.split()) for f in zip_failed.failures + loose_failed.failures)
            places = " or ".join(str(p) for name in (file.name, loose.name) for p in _hand_placements(name, dest_dir))
            raise CaptError(f"{file.name} (or {loose.name} on its own): no source could give it: {tried}; "
                            f"download either by hand and put it at {places}, then rerun") from None


def _reading_loose(manifest: dict[str, Any], zip_name: str, loose_name: str) -> dict[str, Any]:
    """``manifest`` with every reference to a member of ``zip_name`` reading ``loose_name``."""
    def ref(r: dict[str, Any]) -> dict[str, Any]:
        return _ref(loose_name, None) if r["file"] == zip_name else r
    return {**manifest, "splits": ref(manifest["splits"]),
            "captions": {**manifest["captions"], "files": [ref(r) for r in manifest["captions"]["files"]]},
            "instances": [ref(r) for r in manifest["instances"]]}


def _fetch(
    file: DatasetFile, sources: list[str], members: tuple[str, ...], dest_dir: Path,
    download_kwargs: dict[str, Any],
) -> Path:
    """Put a verified ``file`` at dest_dir/file.name: keep it, reuse a sibling's, or download."""
    dest = dest_dir / file.name
    if dest.exists():
        _check_present(dest, file, members)
        log.info("%s: already present", dest)
        return dest
    if _reuse_sibling_copy(dest, file, members):
        return dest
    failures = []
    for url in sources:
        try:
            path = download_file(file.at(url), dest_dir, **download_kwargs)
        except DownloadFailed as exc:
            failures.append(f"{url} ({exc.reason})")
            _forget_partial_unless_checkable(dest, file)
            log.warning("%s: %s failed (%s)", file.name, url, exc.reason)
            continue
        missing = _missing_members(path, members)
        if not missing:
            return path
        # Verified as a zip, but not the zip the manifest reads: another source may have it.
        path.unlink()
        failures.append(f"{url} (lacks {', '.join(missing)})")
        log.warning("%s: %s served a zip without %s", file.name, url, ", ".join(missing))
    raise _NoSource(_no_source_message(file.name, failures, dest_dir), failures)


def _problem(path: Path, file: DatasetFile, members: tuple[str, ...]) -> str | None:
    """Why the file at ``path`` is not ``file`` (None when it verifies)."""
    problem = verification_problem(path, file.at(file.urls[0]))
    if problem is None and (missing := _missing_members(path, members)):
        problem = f"lacks {', '.join(missing)}"
    return problem


def _missing_members(path: Path, members: tuple[str, ...]) -> list[str]:
    if not members:
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return list(members)
    return [m for m in members if m not in names]


def _check_present(dest: Path, file: DatasetFile, members: tuple[str, ...]) -> None:
    problem = _problem(dest, file, members)
    if problem is not None:
        # Only a verified file is ever put at dest, so a bad one was placed by hand (or damaged
        # on disk): never delete what a user placed; say what is wrong and stop.
        raise CaptError(f"{dest}: {problem}; this file was not written by a verified download: "
                        "delete it to download it again, or replace it with a good copy")


def _reuse_sibling_copy(dest: Path, file: DatasetFile, members: tuple[str, ...]) -> bool:
    """Link (or copy) a verified copy of ``file`` from another dataset's folder to ``dest``.

    caption_datasets.zip serves both coco and flickr8k: the second dataset takes the first's.
    """
    for sibling in _sibling_copies(dest):
        problem = _problem(sibling, file, members)
        if problem is not None:
            log.info("%s: not reusing %s (%s)", dest, sibling, problem)
            continue
        _link_or_copy(sibling, dest)
        # A partial download of our own is superseded by the whole file.
        dest.with_name(f"{dest.name}.part").unlink(missing_ok=True)
        log.info("%s: reused the verified copy %s; nothing downloaded", dest, sibling)
        return True
    return False


def _sibling_copies(dest: Path) -> list[Path]:
    """Files named like ``dest`` in the folders beside dest's folder (data/raw/*/<name>)."""
    folder = dest.parent
    if not folder.parent.is_dir():
        return []
    here = folder.resolve()
    return [d / dest.name for d in sorted(folder.parent.iterdir())
            if d.is_dir() and d.resolve() != here and (d / dest.name).is_file()]


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.reuse")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # same disk: the bytes are stored once
    except OSError:
        shutil.copyfile(src, tmp)  # another disk, or no hard links there
    os.replace(tmp, dest)  # dest appears whole or not at all


def _forget_partial_unless_checkable(dest: Path, file: DatasetFile) -> None:
    # A failed source may leave a partial download, kept for resuming. The next source resumes
    # from it only where an md5 would catch bytes spliced from two different copies of the file.
    part = dest.with_name(f"{dest.name}.part")
    if file.md5 is None and part.exists():
        part.unlink()
        log.info("%s: dropped the partial download of the failed source", part)


def _no_source_message(file_name: str, failures: list[str], dest_dir: Path) -> str:
    tried = "; ".join(" ".join(f.split()) for f in failures)  # one line, whatever a reason held
    places = " or ".join(str(p) for p in _hand_placements(file_name, dest_dir))
    return (f"{file_name}: no source could give it: {tried}; download it by hand and put it at "
            f"{places}, then rerun")


def _hand_placements(file_name: str, dest_dir: Path) -> list[Path]:
    """Where a user may put ``file_name`` by hand: this dataset's folder, then the folder of each
    other dataset that needs it (a copy there is reused). Those are named as the registry names
    them (data/raw/coco, data/raw/flickr8k), the folder names the params give them."""
    places = [dest_dir / file_name]
    for other, dataset in sorted(REMOTE_DATASETS.items()):
        place = dest_dir.parent / other / file_name
        if any(f.name == file_name for f in dataset.files) and place not in places:
            places.append(place)
    return places


def _write_manifest(manifest: dict[str, Any], path: Path) -> Path:
    # Written last and atomically: a manifest present means every file it names is in place.
    write_json(path, manifest)
    return path
