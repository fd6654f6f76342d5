"""Two claims of the teacher, each against a naive baseline run in the same process.

1. Training the decoder from the feature cache vs re-encoding the image for every caption
   (the tutorial's way: each (image, caption) pair is an item, so each image goes through the
   frozen encoder C times per epoch). Same data, model and batch size; one epoch each.
2. Batched beam search (beam 3, the whole batch x beam at once) vs one image at a time, with
   the captions checked identical.

    python benchmarks/bench_teacher.py                    # uses data/prepared/shapes + models/teacher.pt when present
    python benchmarks/bench_teacher.py --encoder resnet101 --stages 4 --encoded-size 4   # the seed's trunk
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capt.data.dataset import CaptionDataset  # noqa: E402
from capt.models.beam_search import beam_search  # noqa: E402
from capt.models.decoder import AttentionDecoder, DecoderConfig, caption_loss  # noqa: E402
from capt.models.encoder import Encoder, EncoderConfig  # noqa: E402
from capt.train.captioner import flatten_captions  # noqa: E402


def train_epoch(decoder, optimizer, batches, features_of) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        feats, caps, lens = flatten_captions(features_of(batch), batch["captions"], batch["lengths"])
        logits, alphas = decoder(feats, caps, lens)
        loss = caption_loss(logits, caps, lens, alphas, 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path, default=ROOT / "data/prepared/shapes")
    ap.add_argument("--model", type=Path, default=ROOT / "models/teacher.pt")
    ap.add_argument("--images", type=int, default=256, help="training images in the timed epoch")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--stages", type=int, default=2, help="ResNet stages in the trunk (the embedded teacher: 2)")
    ap.add_argument("--encoded-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--beam-size", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)

    train = CaptionDataset(args.prepared / "train.h5")
    n = min(args.images, len(train))
    items = [train[i] for i in range(n)]
    batches = [{k: torch.stack([it[k] for it in items[i:i + args.batch_size]]) for k in items[0]}
               for i in range(0, n, args.batch_size)]
    S, C = train.image_size, train.captions_per_image
    encoder = Encoder(EncoderConfig(name=args.encoder, encoded_size=args.encoded_size, stages=args.stages))
    encoder.calibrate_batchnorm([b["image"] for b in batches[:4]])

    t0 = time.perf_counter()
    with torch.no_grad():
        cache = [encoder(b["image"]) for b in batches]          # what the features stage does, once
    encode_once = time.perf_counter() - t0
    for b, f in zip(batches, cache):
        b["features"] = f

    def fresh():
        torch.manual_seed(0)
        dec = AttentionDecoder(DecoderConfig(128, 128, 256, 0.3), 64, encoder.feature_dim)   # the embedded teacher's
        return dec, torch.optim.Adam(dec.parameters(), lr=1e-3)

    dec, opt = fresh()
    cached = train_epoch(dec, opt, batches, lambda b: b["features"])

    def reencode(b):
        # The tutorial's item is one (image, caption) pair: the image is encoded once per caption.
        with torch.no_grad():
            per_caption = encoder(b["image"].repeat_interleave(C, dim=0))       # (B*C, P, D)
        return per_caption.view(len(b["image"]), C, *per_caption.shape[1:])[:, 0]
    dec, opt = fresh()
    naive = train_epoch(dec, opt, batches, reencode)

    print(f"1. one training epoch over {n} images x {C} captions, {args.encoder} (stages {args.stages}, "
          f"{args.encoded_size}x{args.encoded_size} cells) at {S} px, batch {args.batch_size}")
    print(f"   re-encoding every caption's image: {naive:8.2f} s")
    print(f"   from the feature cache:            {cached:8.2f} s   -> {naive / cached:.1f}x faster per epoch")
    print(f"   (the cache itself: {encode_once:.2f} s once, for all epochs)")

    # 2. beam search on the test split's features, with the trained teacher when there is one.
    if args.model.exists():
        from capt.models.saved import load_captioner
        cap = load_captioner(args.model)
        decoder, vocab, enc = cap.decoder, cap.vocab, cap.encoder
        source = str(args.model)
    else:
        decoder, _ = fresh()
        from capt.data.vocab import Vocabulary
        vocab, enc, source = Vocabulary.load(args.prepared / "word_map.json"), encoder, "an untrained decoder"
    test = CaptionDataset(args.prepared / "test.h5")
    with torch.no_grad():
        feats = torch.cat([enc(torch.stack([test[i]["image"] for i in range(j, min(j + 64, len(test)))]))
                           for j in range(0, len(test), 64)])
    kw = dict(start=vocab.start, end=vocab.end, beam_size=args.beam_size, max_len=20)
    t0 = time.perf_counter()
    batched = []
    for j in range(0, len(feats), args.batch_size):
        batched += beam_search(decoder, feats[j:j + args.batch_size], **kw)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [beam_search(decoder, feats[j:j + 1], **kw)[0] for j in range(len(feats))]
    t_single = time.perf_counter() - t0
    same = all(a.tokens == b.tokens for a, b in zip(batched, single))
    print(f"2. beam search (beam {args.beam_size}) over {len(feats)} test images, {source}")
    print(f"   one image at a time: {t_single:8.2f} s")
    print(f"   batched ({args.batch_size} images): {t_batched:8.2f} s   -> {t_single / t_batched:.1f}x faster; "
          f"captions identical: {same}")


if __name__ == "__main__":
    main()
