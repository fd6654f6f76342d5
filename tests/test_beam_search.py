"""Batched beam search: agrees with greedy, with one-image decoding, with teacher forcing and with
an exhaustive search; never crashes when no beam ends; leaves the decoder's mode as it was."""

from __future__ import annotations

import math

import pytest
import torch

from capt.errors import CaptError
from capt.models.beam_search import Decoded, beam_search, greedy_decode
from capt.models.decoder import AttentionDecoder, DecoderConfig

PAD, START, END, UNK = 0, 1, 2, 3          # as in capt.data.vocab
B, P, D = 5, 9, 8


def make_decoder(vocab_size: int = 20, seed: int = 0, sharp: bool = False,
                 end_bias: float = -1.0) -> AttentionDecoder:
    """A small random decoder (left in train mode, dropout 0.5). ``sharp`` scales the output and
    embedding weights so its word distributions are peaked and depend on the words so far:
    captions then end at different lengths and greedy is not optimal."""
    torch.manual_seed(seed)
    dec = AttentionDecoder(DecoderConfig(embed_dim=16, attention_dim=16, decoder_dim=32, dropout=0.5),
                           vocab_size=vocab_size, feature_dim=D)
    if sharp:
        with torch.no_grad():
            dec.fc.weight.mul_(30.0)
            dec.embedding.weight.mul_(50.0)
            dec.fc.bias[END] = end_bias
    return dec


def make_features(n: int = B, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, P, D, generator=g)


def teacher_forced(dec: AttentionDecoder, feats: torch.Tensor, d: Decoded, max_len: int):
    """Score and attention of ``d`` for one image (1, P, D) re-computed by decoder.forward.
    A caption shorter than max_len words ended with <end>; one of max_len words was cut."""
    ended = len(d.tokens) < max_len
    ids = [START, *d.tokens] + ([END] if ended else [])
    caps = torch.tensor([ids])
    was = dec.training
    dec.eval()
    with torch.no_grad():
        logits, alphas = dec(feats, caps, torch.tensor([len(ids)]))
    dec.train(was)
    logp = logits[0].log_softmax(dim=1)
    score = float(sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1)))
    return score, alphas[0, :len(d.tokens)]


def check_well_formed(out: list[Decoded], n: int, vocab_size: int, max_len: int) -> None:
    assert len(out) == n
    for d in out:
        assert all(isinstance(w, int) and 0 <= w < vocab_size for w in d.tokens)
        assert END not in d.tokens and len(d.tokens) <= max_len
        assert d.alphas.shape == (len(d.tokens), P)
        assert torch.allclose(d.alphas.sum(dim=1), torch.ones(len(d.tokens)), atol=1e-5)
        assert isinstance(d.score, float) and math.isfinite(d.score) and d.score <= 0


@pytest.mark.parametrize("sharp", [False, True])
def test_beam_one_is_greedy(sharp):
    dec, feats, max_len = make_decoder(sharp=sharp, end_bias=0.0), make_features(), 12
    greedy = greedy_decode(dec, feats, start=START, end=END, max_len=max_len)
    beam = beam_search(dec, feats, start=START, end=END, beam_size=1, max_len=max_len)
    check_well_formed(greedy, B, 20, max_len)
    check_well_formed(beam, B, 20, max_len)
    for g, b in zip(greedy, beam):
        assert b.tokens == g.tokens
        assert torch.allclose(b.alphas, g.alphas, atol=1e-6)
        assert b.score == pytest.approx(g.score, abs=1e-5)
    if sharp:   # the case is not trivial: some captions end before max_len, with words in them
        assert any(0 < len(g.tokens) < max_len for g in greedy)
        assert any(len(g.tokens) == max_len for g in greedy)


def test_batched_equals_one_image_at_a_time():
    dec, feats, max_len = make_decoder(sharp=True, end_bias=0.0), make_features(), 10
    batched = beam_search(dec, feats, start=START, end=END, beam_size=3, max_len=max_len)
    check_well_formed(batched, B, 20, max_len)
    assert {len(d.tokens) < max_len for d in batched} == {True, False}     # some ended, some cut
    for i, d in enumerate(batched):
        alone = beam_search(dec, feats[i:i + 1], start=START, end=END, beam_size=3, max_len=max_len)[0]
        assert d.tokens == alone.tokens
        assert d.score == pytest.approx(alone.score, abs=1e-4)
        assert torch.allclose(d.alphas, alone.alphas, atol=1e-5)


@pytest.mark.parametrize("beam_size", [2, 3, 5])
def test_score_and_alphas_match_teacher_forcing(beam_size):
    """The reported score is the log-probability of the chosen words (+ <end>), and each alpha row
    is the attention that produced its word: catches parents/state reordered wrongly."""
    dec, feats, max_len = make_decoder(sharp=True, seed=1, end_bias=0.0), make_features(7, seed=4), 8
    out = beam_search(dec, feats, start=START, end=END, beam_size=beam_size, max_len=max_len)
    check_well_formed(out, 7, 20, max_len)
    assert any(0 < len(d.tokens) < max_len for d in out)
    for i, d in enumerate(out):
        score, alphas = teacher_forced(dec, feats[i:i + 1], d, max_len)
        assert d.score == pytest.approx(score, abs=1e-4)
        assert torch.allclose(d.alphas, alphas, atol=1e-5)


def exhaustive_best(dec: AttentionDecoder, feats: torch.Tensor, max_len: int, lp: float):
    """Every caption of at most max_len words: those that end with <end> before max_len words and
    those cut at max_len words. Returns per image (tokens, raw score, ended) of the one with the
    best score / length**lp (length = scored tokens, <end> included)."""
    dec.eval()
    V, best = dec.vocab_size, []
    with torch.no_grad():
        for i in range(feats.shape[0]):
            f = feats[i:i + 1]
            proj, state = dec.attention.feature_proj(f), dec.init_state(f)
            frontier = [([], 0.0, state, START)]          # (words, raw score, state, last word)
            top = (-math.inf, None, None, None)
            for t in range(max_len):
                nxt = []
                for words, s, st, w in frontier:
                    logits, _, st2 = dec.step(f, proj, torch.tensor([w]), st)
                    logp = logits.log_softmax(dim=1)[0].tolist()
                    for v in range(V):
                        score = s + logp[v]
                        if v == END:
                            cand = (score / (t + 1) ** lp, words, score, True)
                        elif t + 1 == max_len:
                            cand = (score / max_len ** lp, [*words, v], score, False)
                        else:
                            nxt.append(([*words, v], score, st2, v))
                            continue
                        if cand[0] > top[0]:
                            top = cand
                frontier = nxt
            best.append(top[1:])
    return best


@pytest.mark.parametrize(("lp", "end_bias"), [(0.0, -1.0), (0.7, -1.0), (1.5, 1.0)])
def test_wide_beam_is_exact(lp, end_bias):
    """With V = 6 words and max_len = 4, a beam of k = V * (V-1)**(max_len-1) = 750 is exact: at
    step t there are at most (V-1)**t live prefixes and V times as many extensions, all within the
    top k, so every <end> candidate is recorded and no prefix is pruned. (beam = V is not enough in
    general: prefixes are pruned from step 2 on.) Exact search must then find the brute-force
    optimum, also through the early stop, whose bound must be sound with a length penalty."""
    V, max_len = 6, 4
    dec, feats = make_decoder(vocab_size=V, sharp=True, end_bias=end_bias), make_features(10, seed=2)
    best = exhaustive_best(dec, feats, max_len, lp)
    wide = beam_search(dec, feats, start=START, end=END, beam_size=V * (V - 1) ** (max_len - 1),
                       max_len=max_len, length_penalty=lp)
    greedy = greedy_decode(dec, feats, start=START, end=END, max_len=max_len)
    check_well_formed(wide, 10, V, max_len)
    def penalised(d_tokens, d_score):       # length = words + <end> if it ended before max_len
        return d_score / (len(d_tokens) + (len(d_tokens) < max_len)) ** lp

    for d, g, (tokens, score, _) in zip(wide, greedy, best):
        assert d.tokens == tokens
        assert d.score == pytest.approx(score, abs=1e-4)
        assert penalised(d.tokens, d.score) >= penalised(g.tokens, g.score) - 1e-5
    for k in (1, 2, 3, V):   # narrower beams can only do as well as the optimum, or worse
        narrow = beam_search(dec, feats, start=START, end=END, beam_size=k, max_len=max_len, length_penalty=lp)
        for d, (tokens, score, _) in zip(narrow, best):
            assert penalised(d.tokens, d.score) <= penalised(tokens, score) + 1e-5
    # the fixture is not trivial: optima of several lengths, some with words and an <end>, and
    # greedy strictly worse somewhere
    assert any(ended and tokens for tokens, _, ended in best)
    assert len({len(tokens) for tokens, _, _ in best}) >= 2
    if lp == 0:
        assert any(g.score < score - 1e-3 for g, (_, score, _) in zip(greedy, best))


@pytest.mark.parametrize("beam_size", [1, 3, 25])
def test_end_impossible_gives_max_len_captions(beam_size):
    dec, feats, max_len = make_decoder(), make_features(), 7
    with torch.no_grad():
        dec.fc.bias[END] = -1e9
    out = beam_search(dec, feats, start=START, end=END, beam_size=beam_size, max_len=max_len)
    check_well_formed(out, B, 20, max_len)
    assert all(len(d.tokens) == max_len for d in out)
    assert all(d.score > -1e3 for d in out)      # the cut beam, not a finished one with <end>


@pytest.mark.parametrize("beam_size", [1, 3, 25])
def test_end_first_gives_empty_captions(beam_size):
    dec, feats = make_decoder(), make_features()
    with torch.no_grad():
        dec.fc.bias[END] = 1e9
    for lp in (0.0, 1.0):
        out = beam_search(dec, feats, start=START, end=END, beam_size=beam_size, max_len=6, length_penalty=lp)
        check_well_formed(out, B, 20, 6)
        assert all(d.tokens == [] and d.alphas.shape == (0, P) and d.score == pytest.approx(0.0) for d in out)


def test_ties_break_deterministically_to_lowest_ids():
    """Words 0 and 4 always tie for the best: every caption of them has the same score; greedy and
    every beam pick the lowest ids, on every call."""
    dec, feats = make_decoder(), make_features()
    with torch.no_grad():
        dec.fc.weight.zero_()
        dec.fc.bias.zero_()
        dec.fc.bias[[0, 4]] = 5.0
        dec.fc.bias[END] = -10.0
    expected = [0] * 5
    assert all(g.tokens == expected for g in greedy_decode(dec, feats, start=START, end=END, max_len=5))
    for k in (1, 2, 3, 7):
        for _ in range(2):
            out = beam_search(dec, feats, start=START, end=END, beam_size=k, max_len=5)
            assert all(d.tokens == expected for d in out)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_decoder_mode_restored_and_dropout_off(mode):
    dec, feats = make_decoder(sharp=True), make_features()
    dec.eval()
    ref = beam_search(dec, feats, start=START, end=END, beam_size=3, max_len=10)
    greedy_ref = greedy_decode(dec, feats, start=START, end=END, max_len=10)
    dec.train(mode == "train")
    for _ in range(2):      # dropout 0.5 would change these if it stayed on
        out = beam_search(dec, feats, start=START, end=END, beam_size=3, max_len=10)
        assert dec.training == (mode == "train") and dec.dropout.training == (mode == "train")
        assert [d.tokens for d in out] == [d.tokens for d in ref]
        assert [d.score for d in out] == pytest.approx([d.score for d in ref])
        greedy = greedy_decode(dec, feats, start=START, end=END, max_len=10)
        assert dec.training == (mode == "train")
        assert [d.tokens for d in greedy] == [d.tokens for d in greedy_ref]


def test_mode_restored_after_error():
    dec = make_decoder()
    dec.train()
    with pytest.raises(Exception):
        beam_search(dec, torch.randn(2, P, D + 1), start=START, end=END)
    with pytest.raises(Exception):
        beam_search(dec, torch.randn(2, P, D).to(torch.float64), start=START, end=END)
    assert dec.training


def test_beam_larger_than_vocab_and_odd_batch():
    V = 6
    dec = make_decoder(vocab_size=V, sharp=True, seed=5)
    feats = make_features(7, seed=6)
    for k in (4, V, V + 1, 4 * V):     # batch of 7, beam 4: flat indices must be divided with //
        out = beam_search(dec, feats, start=START, end=END, beam_size=k, max_len=6)
        check_well_formed(out, 7, V, 6)
        for i, d in enumerate(out):
            score, alphas = teacher_forced(dec, feats[i:i + 1], d, 6)
            assert d.score == pytest.approx(score, abs=1e-4)
            assert torch.allclose(d.alphas, alphas, atol=1e-5)


def test_empty_batch_and_bad_arguments():
    dec = make_decoder()
    assert beam_search(dec, torch.zeros(0, P, D), start=START, end=END) == []
    feats = make_features(2)
    for kwargs in ({"beam_size": 0}, {"max_len": 0}, {"end": 20}, {"start": -1}):
        args = {"start": START, "end": END, **kwargs}
        with pytest.raises(CaptError):
            beam_search(dec, feats, **args)
    with pytest.raises(CaptError):
        greedy_decode(dec, feats, start=START, end=END, max_len=0)
    with pytest.raises(CaptError):
        beam_search(dec, torch.zeros(2, P), start=START, end=END)
