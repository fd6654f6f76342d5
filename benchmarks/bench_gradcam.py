"""Batched per-word Grad-CAM of a BLIP caption vs one word at a time, same model, one process.

The batched version repeats the caption once per word and backpropagates each copy's own word
in one forward/backward (capt.blip.gradcam.word_gradcam); the baseline runs one forward/backward
per word (word_gradcam_one_at_a_time). Prints the time ratio and the largest difference between
the maps.

    python benchmarks/bench_gradcam.py                       # a 15-word caption, the embedded profile's BLIP size
    python benchmarks/bench_gradcam.py --hidden 256 --layers 4 --image-size 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capt.blip.gradcam import word_gradcam, word_gradcam_one_at_a_time  # noqa: E402
from capt.blip.model import SmallBlipConfig, pixel_values, prompt_ids, small_blip  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--words", type=int, default=15)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    vocab = "a picture of red blue green circle square triangle small large above below left right".split()
    cfg = SmallBlipConfig(image_size=args.image_size, vision_hidden=args.hidden, text_hidden=args.hidden,
                          vision_layers=args.layers, text_layers=args.layers, heads=4)
    model, processor = small_blip(cfg, vocab)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, args.image_size, args.image_size), generator=g, dtype=torch.uint8)
    prompt = prompt_ids(processor, "a picture of", 1)[0, :-1]               # [CLS] a picture of
    prompt[0] = processor.tokenizer.bos_token_id
    words = torch.randint(6, len(processor.tokenizer), (args.words,), generator=g)
    ids = torch.cat([prompt, words, torch.tensor([processor.tokenizer.sep_token_id])])
    pixels = pixel_values(processor, image)
    n_prompt = len(prompt)

    def timed(fn):
        fn()                                                                 # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            out = fn()
        return (time.perf_counter() - start) / args.repeats, out

    t_batched, (_, batched) = timed(lambda: word_gradcam(model, pixels, ids, n_prompt))
    t_loop, loop = timed(lambda: word_gradcam_one_at_a_time(model, pixels, ids, n_prompt))
    print(f"BLIP hidden {args.hidden}, {args.layers}+{args.layers} layers, {args.image_size} px, "
          f"{args.words}-word caption ({len(batched)} maps), torch threads {torch.get_num_threads()}")
    print(f"one word at a time: {1000 * t_loop:.1f} ms   batched: {1000 * t_batched:.1f} ms   "
          f"speed-up x{t_loop / t_batched:.1f}")
    print(f"max |batched - loop| = {(batched - loop).abs().max().item():.3g} (largest map value "
          f"{loop.abs().max().item():.3g})")


if __name__ == "__main__":
    main()
