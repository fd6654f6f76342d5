"""``capt caption IMAGE... --model PATH``: caption your own photos with a trained model.

A Show-Attend-Tell checkpoint (``models/teacher.pt``, ``models/student_*.pt``) decodes with a
beam search of ``--beam``; a BLIP folder (``models/blip``) with the generation settings saved in
it. ``--attention out.png`` draws what the model looked at for each word: soft attention for the
LSTMs, Grad-CAM for BLIP. User mistakes (a missing or unreadable image, a file that is no
captioner) end with one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from capt.errors import CaptError
from capt.eval.maps import TECHNIQUES

DISPLAY_SIZE = 256     # the figure shows the photo at this size, whatever the model's input size


def read_image(path: Path, size: int) -> np.ndarray:
    """A photo on disk -> uint8 (3, size, size) RGB, as prepare makes them (grayscale, CMYK and
    transparent images converted)."""
    from PIL import UnidentifiedImageError

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
        return decode_image(data, size)
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as e:
        raise CaptError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def attention_path(out: Path, image: Path, n_images: int) -> Path:
    """``out`` itself for one image; ``<out stem>-<image stem><suffix>`` for several."""
    return out if n_images == 1 else out.with_name(f"{out.stem}-{image.stem}{out.suffix or '.png'}")


def caption_with_lstm(model_path: Path, images: list[Path], beam: int, max_len: int,
                      image_size: int | None) -> list[tuple[str, list[str], np.ndarray, int]]:
    """(caption, words, maps (T, P), input size) per image, from a Show-Attend-Tell checkpoint."""
    from capt.models.saved import load_captioner

    captioner = load_captioner(model_path)
    size = image_size or captioner.image_size
    if size is None:
        raise CaptError(f"{model_path}: the checkpoint does not say its image size; pass --image-size")
    batch = torch.from_numpy(np.stack([read_image(p, size) for p in images]))
    decoded = captioner.caption(batch, beam_size=beam, max_len=max_len)
    return [(captioner.words(d), [captioner.vocab.words[t] for t in d.tokens], d.alphas.numpy(), size)
            for d in decoded]


def caption_with_blip(folder: Path, images: list[Path], image_size: int | None):
    """(caption, tokens, Grad-CAM maps (T, P), input size) per image, from a BLIP folder."""
    from capt.blip.model import caption_with_gradcam, load_blip, read_generation

    model, processor = load_blip(folder)
    size = image_size or int(processor.image_processor.size["height"])
    batch = torch.from_numpy(np.stack([read_image(p, size) for p in images]))
    out = caption_with_gradcam(model, processor, batch, read_generation(folder))
    return [(c, tokens, maps.reshape(len(tokens), -1), size) for c, tokens, maps in out]


def caption_command(args: argparse.Namespace) -> None:
    model = Path(args.model)
    if not model.exists():
        raise CaptError(f"{model}: no such model (a models/<name>.pt checkpoint or a BLIP folder)")
    for p in args.images:      # every image checked before a model is loaded
        read_image(p, 8)
    if model.is_dir():
        results = caption_with_blip(model, args.images, args.image_size)
        technique = TECHNIQUES["gradcam_crossattn"]
    else:
        if args.beam < 1:
            raise CaptError(f"--beam must be >= 1, got {args.beam}")
        results = caption_with_lstm(model, args.images, args.beam, args.max_len, args.image_size)
        technique = TECHNIQUES["attention"]
    for path, (caption, words, maps, _) in zip(args.images, results):
        print(f"{path}\t{caption}")
        if args.attention is not None:
            from capt.viz.attention import plot_attention

            out = attention_path(args.attention, path, len(args.images))
            plot_attention(read_image(path, DISPLAY_SIZE), words, maps, out, f"{model.name}: {technique}")
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
                     help="resize to this side (default: what the model was trained on)")
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
