"""Caption metrics: BLEU equals nltk by hand and coco-caption's Bleu, the one normaliser or the
PTB tokenizer is applied, CIDEr/ROUGE/METEOR behave, METEOR's Java process never hangs or leaks,
the leave-one-out human ceiling and the model on its folds, COCO results files.

Only one real METEOR run (about 15 s of JVM start-up) happens in this file; the other METEOR
checks use a fake `java` on PATH or a patched `shutil.which`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu

from capt.errors import CaptError
from capt.eval import metrics as M
from capt.eval.metrics import ceiling_bleu4, score_captions, write_coco_results
from capt.text import normalize_caption

# nltk warns when a hand-computed sentence has no matching 4-gram; the values are still checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")

W = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25, 0.25, 0.25, 0.25)}

# Raw captions with case and punctuation, in a scrambled id order.
REFS = {
    30: ["A big yellow star in the corner.", "a yellow star sits in the corner"],
    10: ["A small red circle above a blue square.", "A red circle is above the blue square"],
    20: ["Two green triangles, side by side!", "two green triangles next to each other",
         "The man's two green triangles"],
}
HYPS = {
    10: "a red circle above a blue square",
    20: "Two green triangles, side-by-side.",
    30: "a yellow star in a corner",
}

# The same, tokenised by hand (lowercase, clitics split, punctuation dropped, hyphenated words kept).
REF_TOKENS = [
    [["a", "small", "red", "circle", "above", "a", "blue", "square"],
     ["a", "red", "circle", "is", "above", "the", "blue", "square"]],
    [["two", "green", "triangles", "side", "by", "side"],
     ["two", "green", "triangles", "next", "to", "each", "other"],
     ["the", "man", "'s", "two", "green", "triangles"]],
    [["a", "big", "yellow", "star", "in", "the", "corner"],
     ["a", "yellow", "star", "sits", "in", "the", "corner"]],
]
HYP_TOKENS = [
    ["a", "red", "circle", "above", "a", "blue", "square"],
    ["two", "green", "triangles", "side-by-side"],
    ["a", "yellow", "star", "in", "a", "corner"],
]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- BLEU / normaliser


def test_bleu_equals_nltk_corpus_bleu_on_hand_tokens():
    got = score_captions(REFS, HYPS, meteor=False)
    for n in (1, 2, 3, 4):
        want = corpus_bleu(REF_TOKENS, HYP_TOKENS, weights=W[n])
        assert got[f"bleu{n}"] == pytest.approx(want, abs=1e-12, rel=0)
    # A corpus score, not a mean of sentence scores (they differ on this example).
    mean_sentence = np.mean([corpus_bleu([r], [h], weights=W[4]) for r, h in zip(REF_TOKENS, HYP_TOKENS)])
    assert abs(got["bleu4"] - mean_sentence) > 1e-6
    assert 0.3 < got["bleu4"] < 1.0
    assert set(got) >= {"bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l"}
    assert "meteor" not in got
    assert all(isinstance(v, float) for v in got.values())


def test_hypothesis_equal_to_its_references_scores_one():
    refs = {1: ["a red circle above a blue square"] * 3,
            2: ["two green triangles next to each other"] * 2}
    hyps = {i: r[0] for i, r in refs.items()}
    got = score_captions(refs, hyps, meteor=False)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"):
        assert got[key] == pytest.approx(1.0, abs=1e-12), key


def test_normaliser_applied_to_references_and_hypotheses():
    refs_raw = {1: ["A Red circle."], 2: ["The man's BIG, blue square!"]}
    refs_clean = {1: ["a red circle"], 2: ["the man 's big blue square"]}
    hyps_raw = {1: "A Red circle.", 2: "the MAN\u2019S big; blue square"}
    hyps_clean = {1: "a red circle", 2: "the man 's big blue square"}
    clean = score_captions(refs_clean, hyps_clean, meteor=False)
    assert score_captions(refs_raw, hyps_raw, meteor=False) == clean
    assert score_captions(refs_clean, hyps_raw, meteor=False) == clean
    assert score_captions(refs_raw, hyps_clean, meteor=False) == clean
    assert clean["bleu1"] == pytest.approx(1.0) and clean["rouge_l"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- input errors


def test_id_mismatch_names_counts_on_each_side():
    refs = {1: ["a red circle"], 2: ["a blue square"], 3: ["a green cross"]}
    hyps = {2: "a blue square", 3: "a green cross", 4: "x", 5: "y"}
    with pytest.raises(CaptError) as e:
        score_captions(refs, hyps, meteor=False)
    msg = _one_line(e)
    assert "1 of 3" in msg and "2 of 4" in msg
    assert "[1]" in msg and "[4, 5]" in msg


def test_image_without_references_is_an_error():
    with pytest.raises(CaptError) as e:
        score_captions({1: ["a red circle"], 7: []}, {1: "a red circle", 7: "a cat"}, meteor=False)
    assert "7" in _one_line(e)
    with pytest.raises(CaptError):
        score_captions({1: ["", "  ."]}, {1: "a cat"}, meteor=False)  # only blank references
    with pytest.raises(CaptError):
        score_captions({}, {}, meteor=False)
    with pytest.raises(CaptError):  # a string, not a list of strings
        score_captions({1: "a red circle"}, {1: "a red circle"}, meteor=False)
    with pytest.raises(CaptError):  # a token list, not one caption string
        score_captions({1: ["a red circle"]}, {1: ["a", "red", "circle"]}, meteor=False)


# --------------------------------------------------------------------------- CIDEr


def test_cider_positive_and_rewards_a_matching_caption():
    got = score_captions(REFS, HYPS, meteor=False)["cider"]
    assert got > 0.0
    good = {**HYPS, 10: REFS[10][1]}
    bad = {**HYPS, 10: "a dog eating pizza on a sofa"}
    s_good = score_captions(REFS, good, meteor=False)["cider"]
    s_bad = score_captions(REFS, bad, meteor=False)["cider"]
    assert s_good > s_bad
    # One image: every n-gram is in every "document", so the idf and CIDEr are 0.
    one = score_captions({10: REFS[10]}, {10: REFS[10][0]}, meteor=False)
    assert one["cider"] == 0.0 and one["bleu4"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- METEOR


def _java_children() -> list:
    """This process's live Java children (not other children, such as the resource tracker that an
    earlier test's multiprocessing pool leaves)."""
    psutil = pytest.importorskip("psutil")
    alive = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    return [p for p in alive if "java" in p.name().lower()]


@pytest.fixture(scope="module")
def meteor_scores():
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: METEOR cannot run here")
    return score_captions(REFS, HYPS, meteor=None)  # auto mode; the only real JVM run


def test_meteor_present_with_java(meteor_scores):
    assert "meteor" in meteor_scores
    assert 0.0 < meteor_scores["meteor"] <= 1.0
    # The other metrics do not depend on METEOR being on.
    off = score_captions(REFS, HYPS, meteor=False)
    assert {k: v for k, v in meteor_scores.items() if k != "meteor"} == off
    assert _java_children() == []  # the JVM was killed and reaped


def test_meteor_false_omits_key_and_logs(caplog):
    with caplog.at_level(logging.INFO, logger="capt.eval.metrics"):
        got = score_captions(REFS, HYPS, meteor=False)
    assert "meteor" not in got
    assert any("METEOR skipped" in r.getMessage() for r in caplog.records)


def test_without_java_auto_skips_and_required_raises(monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with caplog.at_level(logging.INFO, logger="capt.eval.metrics"):
        got = score_captions(REFS, HYPS)
    assert "meteor" not in got
    assert any("METEOR skipped" in r.getMessage() and "Java" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=True)
    assert "Java" in _one_line(e)


def _fake_java(tmp_path, monkeypatch, body: str):
    d = tmp_path / "bin"
    d.mkdir()
    java = d / "java"
    java.write_text("#!/bin/sh\n" + body + "\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("java") == str(java)


def test_meteor_failing_java_is_one_line_error(tmp_path, monkeypatch):
    _fake_java(tmp_path, monkeypatch, "echo 'Error: Unable to access jarfile' >&2\nexit 1")
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS)
    assert "Unable to access jarfile" in _one_line(e)
    assert _java_children() == []


def test_meteor_stalled_java_is_killed_not_hung(tmp_path, monkeypatch):
    # A wrapper that never answers and has a child of its own: both must die.
    _fake_java(tmp_path, monkeypatch, "sleep 300\necho never")
    monkeypatch.setattr(M, "METEOR_STARTUP_TIMEOUT_S", 1.0)
    monkeypatch.setattr(M, "METEOR_PER_IMAGE_TIMEOUT_S", 0.0)
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=True)
    assert "killed" in _one_line(e)
    assert _java_children() == []


# --------------------------------------------------------------------------- ceiling


def _fold_bleu4(toks: dict, k: int, hyp_of=None) -> float:
    """nltk corpus BLEU-4 of fold k by hand: reference k (or ``hyp_of(image)``) against the others."""
    refs = [t[:k] + t[k + 1:] for t in toks.values()]
    hyps = [t[k] if hyp_of is None else hyp_of[i] for i, t in toks.items()]
    return corpus_bleu(refs, hyps, weights=W[4])


# Image 5 has three references, 9 has two (so K = 2 and 5 keeps its third in every fold), 11 one
# (left out), 13 a blank one besides its two (dropped before the folds are counted).
CEILING_REFS = {
    5: ["A red circle above a blue square.", "a red circle above the blue square",
        "one red circle above a blue square"],
    9: ["Two green triangles, side by side", "two green triangles side by side on the left"],
    11: ["a lonely cross"],
    13: ["  .", "a big yellow star in the corner", "a yellow star in the top corner"],
}
CEILING_TOKENS = {
    5: [["a", "red", "circle", "above", "a", "blue", "square"],
        ["a", "red", "circle", "above", "the", "blue", "square"],
        ["one", "red", "circle", "above", "a", "blue", "square"]],
    9: [["two", "green", "triangles", "side", "by", "side"],
        ["two", "green", "triangles", "side", "by", "side", "on", "the", "left"]],
    13: [["a", "big", "yellow", "star", "in", "the", "corner"],
         ["a", "yellow", "star", "in", "the", "top", "corner"]],
}


def test_ceiling_is_the_mean_over_folds_of_nltk_corpus_bleu():
    by_fold = [_fold_bleu4(CEILING_TOKENS, k) for k in (0, 1)]
    assert all(v > 0.1 for v in by_fold) and abs(by_fold[0] - by_fold[1]) > 1e-3
    loo = M.leave_one_out_bleu4(CEILING_REFS)
    assert (loo.folds, loo.images, loo.skipped) == (2, 3, 1)
    assert loo.ceiling_by_fold == pytest.approx(by_fold, abs=1e-12, rel=0)
    assert ceiling_bleu4(CEILING_REFS) == pytest.approx(np.mean(by_fold), abs=1e-12, rel=0)
    assert loo.bleu4_loo is None and loo.model_by_fold == ()
    # No random draw: nothing to seed, and the order of the images does not matter.
    assert ceiling_bleu4(dict(reversed(list(CEILING_REFS.items())))) == ceiling_bleu4(CEILING_REFS)
    with pytest.raises(TypeError):
        ceiling_bleu4(CEILING_REFS, seed=0)
    # The one-reference image does not change the value.
    assert ceiling_bleu4(CEILING_REFS) == ceiling_bleu4({k: CEILING_REFS[k] for k in (5, 9, 13)})


def test_bleu4_loo_scores_the_model_on_the_ceilings_own_folds():
    hyps = {5: "a red circle over a blue square", 9: "two green triangles side by side",
            11: "a cross", 13: "a yellow star in the corner"}
    hyp_toks = {i: h.split() for i, h in hyps.items()}
    loo = M.leave_one_out_bleu4(CEILING_REFS, hyps)
    assert loo.model_by_fold == pytest.approx([_fold_bleu4(CEILING_TOKENS, k, hyp_toks) for k in (0, 1)],
                                              abs=1e-12, rel=0)
    assert loo.bleu4_loo == pytest.approx(np.mean(loo.model_by_fold), abs=1e-15)
    # A model that says what human k said scores, on fold k, exactly what that human scores: the
    # two are judged on the same references. Against all n references it would score 1.
    refs = {i: [r for r in CEILING_REFS[i] if r.strip(" .")] for i in (5, 9, 13)}
    for k in (0, 1):
        as_human_k = {i: r[k] for i, r in refs.items()}
        fold = M.leave_one_out_bleu4(refs, as_human_k)
        assert fold.ceiling_by_fold[k] == pytest.approx(_fold_bleu4(CEILING_TOKENS, k), abs=1e-12, rel=0)
        assert fold.model_by_fold[k] == pytest.approx(fold.ceiling_by_fold[k], abs=1e-12, rel=0)
        assert score_captions(refs, as_human_k, meteor=False)["bleu4"] == pytest.approx(1.0)


def test_a_human_in_the_models_place_scores_the_ceiling_on_average():
    """Unbiased: with n + 1 human captions per image, let each in turn play the model (the other
    n are the references). On average over who plays it, the model's bleu4_loo is the ceiling,
    exactly (both sum BLEU-4 over the same ordered pairs of captions); its bleu4 on all n
    references, the comparison the old ceiling invited, is well above it."""
    captions = {
        1: ["a red circle above a blue square", "a red circle above the blue square",
            "one red circle is above a blue square", "a small red circle above a big blue square"],
        2: ["two green triangles side by side", "two green triangles next to each other side by side",
            "two green triangles side by side on the left", "green triangles side by side"],
        3: ["a big yellow star in the corner", "a yellow star in the top corner",
            "a big yellow star sits in the corner", "a yellow star in the corner of the image"],
    }
    loo, ceiling, full = [], [], []
    for m in range(4):
        refs = {i: c[:m] + c[m + 1:] for i, c in captions.items()}
        hyps = {i: c[m] for i, c in captions.items()}
        s = score_captions(refs, hyps, meteor=False, human_ceiling=True)
        assert s["ceiling_folds"] == 3
        loo.append(s["bleu4_loo"])
        ceiling.append(s["ceiling_bleu4"])
        full.append(s["bleu4"])
    assert len(set(loo)) == 4 and len(set(ceiling)) == 4       # each split on its own differs
    assert np.mean(loo) == pytest.approx(np.mean(ceiling), abs=1e-12, rel=0)
    assert np.mean(full) > np.mean(ceiling) + 0.05


def test_score_captions_human_ceiling_keys():
    hyps = {5: "a red circle over a blue square", 9: "two green triangles", 11: "a cross",
            13: "a yellow star in the corner"}
    got = score_captions(CEILING_REFS, hyps, meteor=False, human_ceiling=True)
    loo = M.leave_one_out_bleu4(CEILING_REFS, hyps)
    assert (got["ceiling_bleu4"], got["bleu4_loo"], got["ceiling_folds"]) == (loo.ceiling_bleu4, loo.bleu4_loo, 2)
    assert not {"ceiling_bleu4", "bleu4_loo", "ceiling_folds"} & set(score_captions(CEILING_REFS, hyps, meteor=False))


def test_ceiling_identical_references_is_one_and_needs_two():
    refs = {1: ["a red circle above a blue square"] * 5, 2: ["Two green triangles side by side."] * 2}
    assert ceiling_bleu4(refs) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(CaptError) as e:
        ceiling_bleu4({1: ["a red circle"], 2: [], 3: ["a blue square", ""]})
    _one_line(e)
    with pytest.raises(CaptError):
        score_captions({1: ["a red circle"]}, {1: "a red circle"}, meteor=False, human_ceiling=True)


# --------------------------------------------------------------------------- coco-caption BLEU


def test_coco_bleu_is_pycocoevalcaps_and_differs_from_nltk_under_four_tokens():
    from pycocoevalcap.bleu.bleu import Bleu

    refs = {**REFS, 40: ["A cat on a mat.", "a small cat sits on the mat"]}
    hyps = {**HYPS, 40: "a cat"}                   # 2 tokens: no 3- or 4-gram
    got = score_captions(refs, hyps, meteor=False)
    toks = {10: REF_TOKENS[0], 20: REF_TOKENS[1], 30: REF_TOKENS[2],
            40: [["a", "cat", "on", "a", "mat"], ["a", "small", "cat", "sits", "on", "the", "mat"]]}
    hyp_toks = {10: HYP_TOKENS[0], 20: HYP_TOKENS[1], 30: HYP_TOKENS[2], 40: ["a", "cat"]}
    want, _ = Bleu(4).compute_score({i: [" ".join(t) for t in r] for i, r in toks.items()},
                                    {i: [" ".join(h)] for i, h in hyp_toks.items()}, verbose=0)
    for n in (1, 2, 3, 4):
        assert got[f"bleu{n}_coco"] == pytest.approx(want[n - 1], abs=1e-12, rel=0)
        nltk_n = corpus_bleu(list(toks.values()), list(hyp_toks.values()), weights=W[n])
        assert got[f"bleu{n}"] == pytest.approx(nltk_n, abs=1e-12, rel=0)
    # nltk counts the short hypothesis as one unmatched 3- and 4-gram; coco-caption as none.
    assert got["bleu4_coco"] - got["bleu4"] > 0.02 and got["bleu3_coco"] > got["bleu3"]
    # Every hypothesis 4 tokens or more, several images: the two agree (up to coco's 1e-9 smoothing).
    both = score_captions(REFS, HYPS, meteor=False)
    for n in (1, 2, 3, 4):
        assert both[f"bleu{n}_coco"] == pytest.approx(both[f"bleu{n}"], abs=1e-8)


# --------------------------------------------------------------------------- tokenizers

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed: no PTB tokenizer")


@needs_java
def test_ptb_tokenizer_tokens_are_coco_captions():
    assert M.tokenize_captions(["A man's dog, running."], "ptb") == [["a", "man", "'s", "dog", "running"]]
    assert M.tokenize_captions(["A man's dog, running."], "simple") == [["a", "man", "'s", "dog", "running"]]
    captions = ["Two dogs; one cat: ok? yes! (left) -- \"quoted\" can't stop...",
                "The U.S. flag, 3.5 e-mail's", "...", "Café on\na line\u2028break"]
    got = M.tokenize_captions(captions, "ptb")
    assert got[2] == [] and got[3] == ["café", "on", "a", "line", "break"]   # one caption stays one line
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    try:                                             # coco-caption's own: writes a file beside its jar
        theirs = PTBTokenizer().tokenize({1: [{"caption": c} for c in captions[:3]]})[1]
    except OSError as e:
        pytest.skip(f"pycocoevalcap's PTBTokenizer cannot write beside its jar here ({e})")
    assert [" ".join(t) for t in got[:3]] == theirs


@needs_java
def test_tokenizer_applies_to_every_metric():
    # PTB keeps an underscore inside a word, the simple tokenizer splits there: the one difference
    # left between them on captions (see the next test), enough to tell which tokenizer scored.
    refs = {1: ["A cat_dog, running.", "the cat_dog runs"], 2: ["a cat on a mat", "the cat sits on a mat"]}
    hyps = {1: "a cat dog running", 2: "a cat sits on a mat"}
    simple = score_captions(refs, hyps, meteor=False)
    ptb = score_captions(refs, hyps, meteor=False, tokenizer="ptb")
    for key in ("bleu1", "bleu4", "bleu4_coco", "cider", "rouge_l"):
        assert ptb[key] < simple[key] - 1e-3, key                     # "cat dog" against "cat_dog"
    exact = score_captions({1: ["A man's dog, running."]}, {1: "a man 's dog running"}, meteor=False,
                           tokenizer="ptb", human_ceiling=False)
    assert exact["bleu4"] == pytest.approx(1.0)
    assert ceiling_bleu4(refs, tokenizer="ptb") != ceiling_bleu4(refs)


# Captions as COCO's annotators write them: clitics, plural possessives, hyphens, numbers, quotes.
COCO_LIKE = ["A man's dog, running.", "They're at the cars' lot; I'm sure they'll go.",
             "It's 5 o'clock and we can't, won't or shouldn't", "A 'quoted' word -- dogs--cats",
             "The man\u2019s hat", "a t-shirt-wearing 12-year-old's bike", "A 3.5 inch e-mail to 1,000 people.",
             "ten x-ray's of a bus's double-decker, side-by-side", "she'd and we've and you'll; ain't it"]


@needs_java
def test_the_models_tokens_are_the_ptb_scorers():
    """The vocabulary, the models' captions and the references all go through normalize_caption;
    coco-caption scores with PTB tokens. They agree ("man 's", "do n't", "t-shirt", "3.5"), so a
    model that writes a reference word for word scores 1 under either tokenizer."""
    assert M.tokenize_captions(COCO_LIKE, "simple") == M.tokenize_captions(COCO_LIKE, "ptb")
    refs = {i: [c] for i, c in enumerate(COCO_LIKE)}
    hyps = {i: " ".join(normalize_caption(c)) for i, c in enumerate(COCO_LIKE)}     # what a model writes
    for tokenizer in ("simple", "ptb"):
        got = score_captions(refs, hyps, meteor=False, tokenizer=tokenizer, human_ceiling=False)
        assert got["bleu4"] == pytest.approx(1.0) and got["rouge_l"] == pytest.approx(1.0), tokenizer


def test_unknown_tokenizer_and_ptb_without_java_are_one_line_errors(monkeypatch):
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=False, tokenizer="nltk")
    assert "nltk" in _one_line(e)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(CaptError) as e:
        score_captions(REFS, HYPS, meteor=False, tokenizer="ptb")
    assert "Java" in _one_line(e) and "ptb" in _one_line(e)
    with pytest.raises(CaptError):
        ceiling_bleu4(REFS, tokenizer="ptb")
    assert score_captions(REFS, HYPS, meteor=False)["bleu4"] > 0           # simple needs no Java


def test_evaluate_config_tokenizer_and_the_profiles(tmp_path):
    from dvc.utils.hydra import compose_and_dump
    import yaml

    from stages._common import make_config
    from capt.eval.evaluation import EvaluateConfig

    assert EvaluateConfig().tokenizer == "simple"
    with pytest.raises(CaptError) as e:
        make_config(EvaluateConfig, {"tokenizer": "PTB"}, "evaluate")
    assert _one_line(e) == "params.yaml: evaluate.tokenizer: must be one of 'simple' or 'ptb', got \"PTB\""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for profile, want in (("coco", "ptb"), ("shapes", "simple")):
        out = tmp_path / f"{profile}.yaml"
        compose_and_dump(out, os.path.join(root, "conf"), None, "config", str(tmp_path), [f"profile={profile}"])
        assert make_config(EvaluateConfig, yaml.safe_load(out.read_text())["evaluate"], "evaluate").tokenizer == want


# --------------------------------------------------------------------------- COCO results


def test_write_coco_results_round_trip(tmp_path):
    hyps = {42: "a red circle", 3: "Two green triangles, side by side.", np.int64(17): "a man's hat"}
    path = tmp_path / "out" / "results.json"
    write_coco_results(hyps, path)
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text)
    assert rows == [
        {"image_id": 3, "caption": "Two green triangles, side by side."},
        {"image_id": 17, "caption": "a man's hat"},
        {"image_id": 42, "caption": "a red circle"},
    ]
    assert all(type(r["image_id"]) is int for r in rows)
    assert '\n  {\n    "image_id": 3,' in text  # indent=2
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp left
    write_coco_results({1: "x"}, path)  # overwrite in place
    assert json.loads(path.read_text()) == [{"image_id": 1, "caption": "x"}]


def test_sentence_bleu4_for_figure_labels():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from capt.eval.metrics import sentence_bleu4

    refs = ["A red circle above a blue square.", "a red circle"]
    assert sentence_bleu4(refs, "a red circle above a blue square") == pytest.approx(1.0)
    partial = sentence_bleu4(refs, "A red square!")          # no 4-gram matches: smoothed, not 0
    by_hand = sentence_bleu([r.lower().rstrip(".").split() for r in refs], ["a", "red", "square"],
                            smoothing_function=SmoothingFunction().method1)
    assert 0 < partial < 1 and partial == pytest.approx(by_hand)
