"""``capt caption IMAGE... --model PATH``: caption your own photos with a trained model.

A Show-Attend-Tell checkpoint (``models/teacher.pt``, ``models/student_*.pt``) decodes with a
beam search of ``--beam``; a BLIP folder (``models/blip``) with the generation settings saved in
it. ``--attention out.png`` draws what the model looked at for each word: soft attention for the
LSTMs, Grad-CAM for BLIP. An image of more than ``--max-pixels`` pixels is refused before it is
decoded (a decompression bomb: a small file that decodes to gigabytes). User mistakes (a missing
or unreadable image, a file that is no captioner, an option out of range) end with one line,
``error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge
from PIL import Image, UnidentifiedImageError

from capt.config import CHECKED, Count, Int, build_config, with_config
from capt.errors import CaptError
from capt.eval.maps import TECHNIQUES

DISPLAY_SIZE = 256     # the figure shows the photo at this size, whatever the model's input size
MIN_IMAGE_SIZE = 16    # prepare's smallest image_size (capt.data.prepare.PrepareConfig)


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's decompression-bomb limit set to ``max_pixels`` (None: no limit) for the block, and its
    warning an error: PIL only warns between 1x and 2x its limit, and raises above. PIL's global
    limit is restored afterwards."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_image(path: Path, size: int, max_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> np.ndarray:
    """A photo on disk -> uint8 (3, size, size) RGB, as prepare makes them (grayscale, CMYK and
    transparent images converted); one of more than ``max_pixels`` pixels is refused."""
    from capt.data.readers import decode_image

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CaptError(f"{path}: no such image") from None
    except IsADirectoryError:
        raise CaptError(f"{path}: a folder, not an image") from None
    except OSError as e:
        raise CaptError(f"{path}: cannot read ({e.strerror})") from None
    try:
        with pixel_limit(max_pixels):
            return decode_image(data, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        with pixel_limit(None), Image.open(io.BytesIO(data)) as im:     # its header only, to say how large
            w, h = im.size
        raise CaptError(f"{path}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels} (--max-pixels); "
                        "pass a larger --max-pixels if you trust the image") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as e:
        raise CaptError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def attention_path(out: Path, image: Path, n_images: int) -> Path:
    """``out`` itself for one image; ``<out stem>-<image stem><suffix>`` for several."""
    return out if n_images == 1 else out.with_name(f"{out.stem}-{image.stem}{out.suffix or '.png'}")


def caption_with_lstm(model_path: Path, images: list[Path], beam: int, max_len: int, image_size: int | None,
                      max_pixels: int) -> list[tuple[str, list[str], np.ndarray, int]]:
    """(caption, words, maps (T, P), input size) per image, from a Show-Attend-Tell checkpoint."""
    from capt.models.saved import load_captioner

    captioner = load_captioner(model_path)
    size = image_size or captioner.image_size
    if size is None:
        raise CaptError(f"{model_path}: the checkpoint does not say its image size; pass --image-size")
    batch = torch.from_numpy(np.stack([read_image(p, size, max_pixels) for p in images]))
    decoded = captioner.caption(batch, beam_size=beam, max_len=max_len)
    return [(captioner.words(d), [captioner.vocab.words[t] for t in d.tokens], d.alphas.numpy(), size)
            for d in decoded]


def caption_with_blip(folder: Path, images: list[Path], image_size: int | None, max_pixels: int):
    """(caption, tokens, Grad-CAM maps (T, P), input size) per image, from a BLIP folder."""
    from capt.blip.model import caption_with_gradcam, load_blip, read_generation

    model, processor = load_blip(folder)
    size = image_size or int(processor.image_processor.size["height"])
    batch = torch.from_numpy(np.stack([read_image(p, size, max_pixels) for p in images]))
    out = caption_with_gradcam(model, processor, batch, read_generation(folder))
    return [(c, tokens, maps.reshape(len(tokens), -1), size) for c, tokens, maps in out]


@with_config(CHECKED)
@dataclass(frozen=True)
class CaptionOptions:
    """The numbers among ``capt caption``'s options (argparse makes them integers)."""

    beam: Count
    max_len: Count
    max_pixels: Count
    image_size: Annotated[Int, Ge(MIN_IMAGE_SIZE)] | None = None


def check_options(args: argparse.Namespace) -> CaptionOptions:
    """Every number in range, before a model or an image is read: a bad option is the option's
    fault, not the image's (``--image-size: must be >= 16, got 0``)."""
    values = {f.name: getattr(args, f.name) for f in fields(CaptionOptions)}
    return build_config(CaptionOptions, values, "", source=None, spell=lambda name: "--" + name.replace("_", "-"))


def caption_command(args: argparse.Namespace) -> None:
    check_options(args)
    model = Path(args.model)
    if not model.exists():
        raise CaptError(f"{model}: no such model (a models/<name>.pt checkpoint or a BLIP folder)")
    for p in args.images:      # every image checked before a model is loaded
        read_image(p, 8, args.max_pixels)
    if model.is_dir():
        results = caption_with_blip(model, args.images, args.image_size, args.max_pixels)
        technique = TECHNIQUES["gradcam_crossattn"]
    else:
        results = caption_with_lstm(model, args.images, args.beam, args.max_len, args.image_size, args.max_pixels)
        technique = TECHNIQUES["attention"]
    for path, (caption, words, maps, _) in zip(args.images, results):
        print(f"{path}\t{caption}")
        if args.attention is not None:
            from capt.viz.attention import plot_attention

            out = attention_path(args.attention, path, len(args.images))
            plot_attention(read_image(path, DISPLAY_SIZE, args.max_pixels), words, maps, out,
                           f"{model.name}: {technique}")
            logging.getLogger("capt").info("%s: %s", path, out)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="capt", description="Caption images with a trained capt model.")
    sub = ap.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("caption", help="caption images and, optionally, draw each word's map",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cap.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    cap.add_argument("--model", required=True, type=Path, help="models/<name>.pt or a BLIP folder (models/blip)")
    cap.add_argument("--beam", type=int, default=3, help="beam size of the LSTM models (1 = greedy)")
    cap.add_argument("--max-len", type=int, default=20, help="longest caption, in words (LSTM models)")
    cap.add_argument("--image-size", type=int, default=None,
                     help=f"resize to this side, >= {MIN_IMAGE_SIZE} (default: what the model was trained on)")
    cap.add_argument("--max-pixels", type=int, default=Image.MAX_IMAGE_PIXELS, metavar="N",
                     help="refuse an image of more pixels than this, before decoding it (default: PIL's "
                          "limit, %(default)s)")
    cap.add_argument("--attention", type=Path, default=None, metavar="OUT.png",
                     help="draw each word's map; several images get OUT-<image>.png each")
    cap.set_defaults(run=caption_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args.run(args)
    except CaptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
