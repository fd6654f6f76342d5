"""What a dataset folder holds and where: ``manifest.json``, written by the download stage.

Every dataset (COCO, Flickr8k, the generated shapes worlds) lands as a few archives plus a
manifest naming which archive holds the images, the Karpathy split JSON, the captions and the
instances. Everything downstream reads the manifest, so nothing downstream knows which
dataset it reads.

Example (COCO)::

    {"name": "coco",
     "images": ["train2014.zip", "val2014.zip"],
     "splits": {"file": "caption_datasets.zip", "member": "dataset_coco.json"},
     "captions": {"format": "coco", "files": [{"file": "annotations_trainval2014.zip",
                                               "member": "annotations/captions_train2014.json"}]},
     "instances": [{"file": "annotations_trainval2014.zip",
                    "member": "annotations/instances_train2014.json"}]}

``member: null`` means the file itself rather than a member of a zip.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from capt.errors import CaptError

CAPTION_FORMATS = ("coco", "flickr8k", "karpathy")


@dataclass(frozen=True)
class FileRef:
    """A file in the dataset folder, or one member of a zip in it."""

    file: str
    member: str | None = None

    def __str__(self) -> str:
        return self.file if self.member is None else f"{self.file}:{self.member}"


@dataclass(frozen=True)
class Manifest:
    root: Path
    name: str
    images: tuple[str, ...]
    splits: FileRef
    captions_format: str
    captions: tuple[FileRef, ...]
    instances: tuple[FileRef, ...]

    def path(self, file: str) -> Path:
        return self.root / file

    def where(self, ref: FileRef) -> str:
        """``root/file`` or ``root/file:member``, for error messages."""
        return str(self.root / str(ref))

    @contextlib.contextmanager
    def open(self, ref: FileRef) -> Iterator[IO[bytes]]:
        """A binary stream of the file or zip member: big annotation files are parsed as they
        stream, never read whole into memory."""
        path = self.path(ref.file)
        if not path.is_file():
            raise CaptError(f"{path}: missing (named in {self.root / 'manifest.json'})")
        if ref.member is None:
            with open(path, "rb") as f:
                yield f
            return
        try:
            with zipfile.ZipFile(path) as zf, zf.open(ref.member) as f:
                yield f
        except KeyError:
            raise CaptError(f"{path}: has no member {ref.member!r}") from None
        except zipfile.BadZipFile as e:
            raise CaptError(f"{path}: not a readable zip ({e})") from None


def _file_ref(value: Any, where: str, source: Path) -> FileRef:
    if not isinstance(value, dict) or not isinstance(value.get("file"), str):
        raise CaptError(f"{source}: {where} must be {{\"file\": ..., \"member\": ...}}, got {value!r}")
    member = value.get("member")
    if member is not None and not isinstance(member, str):
        raise CaptError(f"{source}: {where}.member must be a string or null, got {member!r}")
    return FileRef(value["file"], member)


def load_manifest(root: Path) -> Manifest:
    """Read and check ``root/manifest.json``; a wrong key is named in the error."""
    root = Path(root)
    source = root / "manifest.json"
    try:
        data = json.loads(source.read_text())
    except FileNotFoundError:
        raise CaptError(f"{source}: missing; run the download stage for this dataset first") from None
    except json.JSONDecodeError as e:
        raise CaptError(f"{source}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise CaptError(f"{source}: must hold a JSON object")
    for key in ("name", "images", "splits", "captions"):
        if key not in data:
            raise CaptError(f"{source}: missing key {key!r}")
    images = data["images"]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise CaptError(f"{source}: 'images' must be a non-empty list of zip file names")
    captions = data["captions"]
    if not isinstance(captions, dict) or captions.get("format") not in CAPTION_FORMATS:
        raise CaptError(f"{source}: captions.format must be one of {', '.join(CAPTION_FORMATS)}, "
                        f"got {captions.get('format') if isinstance(captions, dict) else captions!r}")
    files = captions.get("files", [])
    if not isinstance(files, list):
        raise CaptError(f"{source}: captions.files must be a list")
    instances = data.get("instances", [])
    if not isinstance(instances, list):
        raise CaptError(f"{source}: 'instances' must be a list")
    return Manifest(
        root=root,
        name=str(data["name"]),
        images=tuple(images),
        splits=_file_ref(data["splits"], "splits", source),
        captions_format=captions["format"],
        captions=tuple(_file_ref(f, f"captions.files[{i}]", source) for i, f in enumerate(files)),
        instances=tuple(_file_ref(f, f"instances[{i}]", source) for i, f in enumerate(instances)),
    )
