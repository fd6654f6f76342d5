"""Deletion and insertion curves (capt.eval.faithfulness) batched against one perturbed image at a
time, same model, same process.

For every word of every caption, three rankings of the cells (the word's soft-attention map, a
random one, the centre one), two curves (deletion, insertion) and steps + 1 points each. The
naive loop builds each point's perturbed image alone and runs the encoder and the whole caption's
teacher-forced decode on it; capt's ``deletion_insertion_curves`` scores each distinct
(word, blurred cells) image once (the intact and the fully blurred image are shared by every
ranking), ``--batch-size`` rows a forward, each row decoded only through its word. Prints the
median seconds of each over --repeats (1 by default: the naive loop takes minutes), their
ratio, the forwards each needs and the largest difference of the log-probs.

    python benchmarks/bench_faithfulness.py     # the embedded teacher's size: ResNet-34 to layer2, LSTM 256, 64 px
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.data.vocab import SPECIALS, Vocabulary  # noqa: E402
from capt.eval.faithfulness import (  # noqa: E402
    blurred,
    cells_at_steps,
    cell_pixels,
    centre_ranking,
    deletion_insertion_curves,
    lstm_attention_maps,
    lstm_word_scorer,
    map_ranking,
    random_ranking,
)
from capt.models.decoder import AttentionDecoder, DecoderConfig  # noqa: E402
from capt.models.encoder import Encoder, EncoderConfig  # noqa: E402
from capt.models.saved import Captioner  # noqa: E402


@torch.no_grad()
def naive_curves(captioner, images, captions, rankings, steps):
    """One perturbed image, one encoder forward and one whole-caption decode per curve point."""
    grid = captioner.encoder.cfg.encoded_size
    cells = cells_at_steps(grid * grid, steps)
    vocab = captioner.vocab
    out = {name: {} for name in rankings}
    for image_id, words in captions.items():
        image, blur = images[image_id], blurred(images[image_id])
        tokens = torch.tensor([[vocab.start, *words, vocab.end]])
        for name, ranking in rankings.items():
            curves = np.zeros((2, len(words), steps + 1))
            for t, order in enumerate(ranking[image_id]):
                for c in range(2):
                    for k, n in enumerate(cells):
                        hidden = torch.zeros(1, grid * grid, dtype=torch.bool)
                        hidden[0, torch.from_numpy(order[:n] if c == 0 else order[n:])] = True
                        pixels = cell_pixels(hidden, grid, *image.shape[-2:])[0]
                        perturbed = torch.where(pixels, blur, image)
                        logits, _ = captioner.decoder(captioner.encoder(perturbed[None]), tokens,
                                                      torch.tensor([len(words) + 2]))
                        curves[c, t, k] = float(logits[0, t].log_softmax(-1)[words[t]])
            out[name][image_id] = curves
    return out


def timed(run, repeats: int):
    """(median seconds over ``repeats`` runs, the last run's result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--words", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)    # the naive loop takes minutes
    args = ap.parse_args()
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(name="resnet34", stages=2, encoded_size=8))
    vocab = Vocabulary([*SPECIALS, *(f"w{k}" for k in range(26))])
    decoder = AttentionDecoder(DecoderConfig(embed_dim=128, attention_dim=128, decoder_dim=256, dropout=0.3),
                               len(vocab), encoder.feature_dim)
    captioner = Captioner(encoder, decoder, vocab).eval()
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 255, (args.images, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    images = dict(enumerate(batch))
    captions = {i: torch.randint(4, len(vocab), (args.words,), generator=g).tolist() for i in images}
    P = encoder.cfg.encoded_size ** 2
    attention = lstm_attention_maps(captioner, batch, list(captions.values()))
    rankings = {"attention": {i: map_ranking(m) for i, m in zip(captions, attention)},
                "random": {i: random_ranking(i, len(w), P, seed=0) for i, w in captions.items()},
                "centre": {i: np.tile(centre_ranking(encoder.cfg.encoded_size), (len(w), 1)) for i, w in captions.items()}}
    scorer = lstm_word_scorer(captioner)

    def batched():
        return deletion_insertion_curves(scorer, images, captions, rankings, steps=args.steps,
                                         batch_size=args.batch_size)

    t_capt, capt = timed(batched, args.repeats)
    t_naive, naive = timed(lambda: naive_curves(captioner, images, captions, rankings, args.steps), args.repeats)
    diff = max(float(np.abs(capt[n][i] - naive[n][i]).max()) for n in rankings for i in captions)
    words = sum(len(w) for w in captions.values())
    naive_rows = words * len(rankings) * 2 * (args.steps + 1)
    capt_rows = words * (2 + 2 * len(rankings) * (args.steps - 1))      # at most: coinciding masks are scored once
    print(f"{args.images} images, {words} words, {len(rankings)} rankings, {args.steps} steps, "
          f"{torch.get_num_threads()} threads: naive (one image a forward, {naive_rows} forwards) {t_naive:.2f} s, "
          f"capt (batches of {args.batch_size}, <= {capt_rows} rows) {t_capt:.2f} s, x{t_naive / t_capt:.1f}; "
          f"largest difference of the log-probs {diff:.2g}")


if __name__ == "__main__":
    main()
