"""The LSTM captioners' per-word Grad-CAM (capt.models.gradcam.lstm_word_gradcam) against the naive
batched version it replaced, same model, same process.

Both repeat each caption once per word and backpropagate every row's own word's logit in one
forward/backward. The naive version teacher-forces every row through its whole caption; capt's
decodes row t only through step t (the logit of step t reads no later token), so the decoder's
length-sorted batch runs about half the row-steps. Prints the median seconds of each over
--repeats, their ratio, and the largest difference between the maps.

    python benchmarks/bench_lstm_gradcam.py        # the embedded teacher's size: ResNet-34 to layer2, LSTM 256, 64 px
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.models.decoder import AttentionDecoder, DecoderConfig  # noqa: E402
from capt.models.encoder import Encoder, EncoderConfig  # noqa: E402
from capt.models.gradcam import last_block_activations, lstm_word_gradcam  # noqa: E402

START, END = 1, 2


def naive_word_gradcam(encoder, decoder, images, captions):
    """Every row decoded through its whole caption (the baseline)."""
    acts = last_block_activations(encoder, images)
    rows = [(i, t) for i, words in enumerate(captions) for t in range(len(words))]
    image_of_row = torch.tensor([i for i, _ in rows])
    step_of_row = torch.tensor([t for _, t in rows])
    L = max(len(w) for w in captions) + 2
    tokens = torch.zeros(len(captions), L, dtype=torch.long)
    for i, words in enumerate(captions):
        tokens[i, :len(words) + 2] = torch.tensor([START, *words, END])
    lengths = torch.tensor([len(w) + 2 for w in captions])
    a = acts[image_of_row].clone().requires_grad_(True)
    features = encoder.pool(a).flatten(2).transpose(1, 2)
    with torch.enable_grad():
        logits, _ = decoder(features, tokens[image_of_row], lengths[image_of_row])
        picked = logits[torch.arange(len(rows)), step_of_row, tokens[image_of_row, step_of_row + 1]]
        (grad,) = torch.autograd.grad(picked.sum(), a)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(dim=1, keepdim=True))
    cam = F.adaptive_avg_pool2d(cam, encoder.cfg.encoded_size)[:, 0].numpy()
    out = [np.zeros((len(w), encoder.cfg.encoded_size, encoder.cfg.encoded_size), np.float32) for w in captions]
    for r, (i, t) in enumerate(rows):
        out[i][t] = cam[r]
    return out


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(name="resnet34", stages=2, encoded_size=8))
    vocab = 40
    decoder = AttentionDecoder(DecoderConfig(embed_dim=128, attention_dim=128, decoder_dim=256, dropout=0.3), vocab,
                               encoder.feature_dim).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (args.images, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    # caption lengths as the embedded teacher's test captions have them: 6 to 14 words
    captions = [torch.randint(3, vocab, (int(n),), generator=g).tolist()
                for n in torch.randint(6, 15, (args.images,), generator=g)]
    capt = lstm_word_gradcam(encoder, decoder, images, captions, START, END)
    naive = naive_word_gradcam(encoder, decoder, images, captions)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(capt, naive))
    largest = max(float(np.abs(b).max()) for b in naive)
    t_capt = median_seconds(lambda: lstm_word_gradcam(encoder, decoder, images, captions, START, END), args.repeats)
    t_naive = median_seconds(lambda: naive_word_gradcam(encoder, decoder, images, captions), args.repeats)
    rows = sum(len(c) for c in captions)
    print(f"{args.images} images, {rows} words, {torch.get_num_threads()} threads: naive (every row through its "
          f"whole caption) {t_naive:.3f} s, capt (row t through step t) {t_capt:.3f} s, x{t_naive / t_capt:.2f}; "
          f"largest difference of the maps {diff:.2g} (largest value {largest:.2g})")


if __name__ == "__main__":
    main()
