"""The public datasets this project reads, as data: which files, where, and what they hold.

Each dataset is a few archives plus a ``manifest.json`` naming which archive holds the
images, the Karpathy split JSON, the captions and the instances (see ``capt.data.manifest``).

Sizes and md5 sums are filled in only where a public source confirms them; the comment next
to each says where it came from. A wrong checksum would reject every good download, so an
unconfirmed value stays None (the download is then checked for size/zip sanity only).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from capt.data.download import RemoteFile, download_file
from capt.errors import CaptError


@dataclass(frozen=True)
class RemoteDataset:
    """The files of one dataset and the manifest that says what each holds."""

    files: tuple[RemoteFile, ...]
    manifest: dict[str, Any]  # written as manifest.json beside the files


# Karpathy's split files (dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json).
# Only one public source gives an md5 for it (mlverse/torchvision R/dataset-flickr.R:
# 4fa8c08369d22fe16e41dc124bd1adc2), not confirmed by a second, and a wrong checksum would
# refuse every real download; so size and md5 stay None and the zip-member check still runs.
KARPATHY_SPLITS = RemoteFile(
    name="caption_datasets.zip",
    url="http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
)

COCO_FILES = (
    # md5: salesforce/LAVIS COCO builders (and pystiche-papers' download script); size: the
    # Content-Length that wget/keras print in public notebooks (e.g. the keras.io image
    # captioning example's output "13510574080/13510573713").
    RemoteFile(
        name="train2014.zip",
        url="http://images.cocodataset.org/zips/train2014.zip",
        size=13_510_573_713,
        md5="0da8c0bd3d6becc4dcb32757491aca88",
    ),
    # md5: salesforce/LAVIS COCO builders; size: wget "Length: 6645013297" in public notebooks.
    RemoteFile(
        name="val2014.zip",
        url="http://images.cocodataset.org/zips/val2014.zip",
        size=6_645_013_297,
        md5="a3d79f5ed8d289b7a7554ce06a5782b3",
    ),
    # md5: PaddleNLP COCOCaptions (MD5_ANNO) and mlverse/torchvision coco dataset (it is also
    # the S3 ETag of the object); size: wget "Length: 252872794" / keras progress output.
    RemoteFile(
        name="annotations_trainval2014.zip",
        url="http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        size=252_872_794,
        md5="0a379cfc70b0e71301e0f377548639bd",
    ),
    KARPATHY_SPLITS,
)

FLICKR8K_FILES = (
    # md5s: mlverse/torchvision R/dataset-flickr.R and an independent CMake fetch script
    # (EXPECTED_MD5) agree; sizes not confirmed by any public source, so None.
    RemoteFile(
        name="Flickr8k_Dataset.zip",
        url="https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
        md5="f18a1e2920de5bd84dae7cf08ec78978",
    ),
    RemoteFile(
        name="Flickr8k_text.zip",
        url="https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
        md5="bf6c1abcb8e4a833b7f922104de18627",
    ),
    KARPATHY_SPLITS,
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
    ),
}


def rebase_url(url: str, base_url: str) -> str:
    """``url`` with its scheme, host and directory replaced by ``base_url`` (a mirror)."""
    basename = posixpath.basename(urlsplit(url).path)
    return f"{base_url.rstrip('/')}/{basename}"


def download_dataset(
    name: str, dest_dir: Path, *, base_url: str | None = None, **download_kwargs: Any
) -> Path:
    """Download every file of REMOTE_DATASETS[name] into dest_dir, then write
    dest_dir/manifest.json (json, indent=2, sort_keys=True). Returns the manifest path.

    base_url, when given, replaces the scheme+host+directory of every URL, keeping the file's
    basename (tests point it at a local server; a researcher may point it at a mirror).
    ``download_kwargs`` go to ``download_file`` (retries, timeout_s, progress, ...).
    Unknown name -> CaptError listing the known names.
    """
    dataset = REMOTE_DATASETS.get(name)
    if dataset is None:
        known = ", ".join(sorted(REMOTE_DATASETS))
        raise CaptError(f"unknown dataset {name!r}: known datasets are {known}")
    dest_dir = Path(dest_dir)
    for remote in dataset.files:
        if base_url is not None:
            remote = replace(remote, url=rebase_url(remote.url, base_url))
        download_file(remote, dest_dir, **download_kwargs)
    return _write_manifest(dataset.manifest, dest_dir / "manifest.json")


def _write_manifest(manifest: dict[str, Any], path: Path) -> Path:
    # Written last and atomically: a manifest present means every file it names is in place.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
