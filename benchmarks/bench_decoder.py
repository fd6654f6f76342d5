"""One teacher-forced training step of the attention decoder (capt.models.decoder.AttentionDecoder:
forward, caption_loss, backward) against the version it replaced, same weights, same batch, same
process.

The replaced forward wrote each step's logits and attention into preallocated (B, T, V) and
(B, T, P) tensors; the backward of each such write copies the whole gradient tensor once per step.
capt's pads each step's output to B rows and stacks the steps once. Prints the median
milliseconds of each over --repeats, their ratio, and whether the loss and every gradient
(the decoder's weights and the input features') are bit for bit the same.

    python benchmarks/bench_decoder.py                  # the embedded profile's student and teacher
    python benchmarks/bench_decoder.py --coco           # and the COCO profile's teacher (~10k words)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.models.decoder import AttentionDecoder, DecoderConfig, caption_loss  # noqa: E402


def naive_forward(decoder: AttentionDecoder, features, captions, lengths):
    """The replaced forward: step outputs written into preallocated tensors."""
    B, P, _ = features.shape
    T = int(lengths.max()) - 1
    order = lengths.argsort(descending=True, stable=True)
    features, captions, steps = features[order], captions[order], lengths[order] - 1
    projected = decoder.attention.feature_proj(features)
    h, c = decoder.init_state(features)
    logits = features.new_zeros(B, T, decoder.vocab_size)
    alphas = features.new_zeros(B, T, P)
    live = (torch.arange(T)[None, :] < steps[:, None]).sum(0).tolist()
    for t, n in enumerate(live):
        step_logits, alpha, (h, c) = decoder.step(features[:n], projected[:n], captions[:n, t], (h[:n], c[:n]))
        logits[:n, t], alphas[:n, t] = step_logits, alpha
    unsort = order.argsort()
    return logits[unsort], alphas[unsort]


def train_step(forward, decoder, features, captions, lengths):
    """Loss, the decoder's gradients and the features' gradient of one step."""
    decoder.zero_grad(set_to_none=True)
    features = features.detach().requires_grad_(True)
    logits, alphas = forward(decoder, features, captions, lengths)
    loss = caption_loss(logits, captions, lengths, alphas, alpha_c=1.0)
    loss.backward()
    return loss.detach(), [p.grad for p in decoder.parameters()], features.grad


def timed(forward, decoder, batch, repeats: int) -> float:
    train_step(forward, decoder, *batch)                        # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_step(forward, decoder, *batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--coco", action="store_true", help="also the COCO profile's teacher (slow on a CPU)")
    args = ap.parse_args()
    # name, decoder (embed, attention, LSTM), feature width D, cells P, captions a batch, vocabulary
    cases = [("embedded student", DecoderConfig(64, 64, 128, 0.0), 128, 64, 16 * 5, 45),
             ("embedded teacher", DecoderConfig(128, 128, 256, 0.0), 128, 64, 32 * 5, 45)]
    if args.coco:
        cases.append(("COCO teacher", DecoderConfig(512, 512, 512, 0.0), 2048, 196, 64 * 5, 9490))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| decoder | captions | V | replaced (ms) | capt (ms) | speed-up | bit for bit |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg, D, P, B, V in cases:
        torch.manual_seed(0)
        decoder = AttentionDecoder(cfg, V, D)
        lengths = torch.randint(6, 23, (B,))                    # <start> + 4..20 words + <end>
        captions = torch.randint(3, V, (B, 22)) * (torch.arange(22)[None, :] < lengths[:, None])
        batch = (torch.randn(B, P, D), captions, lengths)
        old, new = train_step(naive_forward, decoder, *batch), train_step(AttentionDecoder.forward, decoder, *batch)
        same = (torch.equal(old[0], new[0]) and all(torch.equal(a, b) for a, b in zip(old[1], new[1]))
                and torch.equal(old[2], new[2]))
        t_old = timed(naive_forward, decoder, batch, args.repeats)
        t_new = timed(AttentionDecoder.forward, decoder, batch, args.repeats)
        print(f"| {name} | {B} | {V} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
